"""`cerebras-gpt serve`: the OpenAI-compatible HTTP server with continuous batching and a playground page."""

from __future__ import annotations

import dataclasses
from typing import Annotated

import tyro

from cerebras_gpt.commands import run_command
from cerebras_gpt.serve.engine import EngineConfig


@dataclasses.dataclass
class ServeArgs:
    """Serve a model over OpenAI's HTTP API with continuous batching, and a playground page at /.

    Routes: POST /v1/completions and /v1/chat/completions (stream: true for server-sent events),
    GET /v1/models, /health, /metrics (Prometheus). Example:
    cerebras-gpt serve --model cerebras/Cerebras-GPT-111M --port 8000
    vLLM's flag names work too: --served-model-name (--model-name), --max-num-seqs (--max-slots),
    --max-model-len (--max-seq-len), --max-num-batched-tokens (--max-prefill-tokens).
    """

    model: str
    """Model directory, training checkpoint directory, or hub id (e.g. cerebras/Cerebras-GPT-111M)."""
    host: str = "127.0.0.1"
    """Address to bind. The default answers this machine only; 0.0.0.0 opens it to the network (set --api-key)."""
    port: int = 8000
    """TCP port."""
    api_key: str | None = None
    """When set, /v1 routes need the header 'Authorization: Bearer <key>' (401 otherwise)."""
    model_name: str | None = None
    """Name clients pass as "model" (default: the --model value)."""
    device: str = "auto"
    """cpu, cuda, cuda:N, or auto (cuda when available)."""
    dtype: str = "auto"
    """float32, bfloat16, float16, or auto (bfloat16 on CUDA, float32 on CPU)."""
    log_level: str = "info"
    """uvicorn's log level: critical, error, warning, info, debug."""
    quantize: str = "none"
    """Weight precision for inference: none (as loaded), bf16 or int8 (8-bit weights, per-channel scales;
    fastest on CPU). int4 is refused (no kernel that pays). A directory saved quantized loads as it was saved."""
    engine: Annotated[EngineConfig, tyro.conf.OmitArgPrefixes] = dataclasses.field(default_factory=EngineConfig)


# vLLM's `vllm serve` flag -> ours, so a vLLM command line (or script) runs here unchanged.
VLLM_FLAGS = {
    "--served-model-name": "--model-name",
    "--max-num-seqs": "--max-slots",
    "--max-model-len": "--max-seq-len",
    "--max-num-batched-tokens": "--max-prefill-tokens",
}


def translate_vllm_flags(argv: list[str]) -> list[str]:
    """``argv`` with vLLM's flag names (also as ``--flag=value``) replaced by ours."""
    out = []
    for arg in argv:
        flag, eq, value = arg.partition("=")
        out.append(VLLM_FLAGS[flag] + eq + value if flag in VLLM_FLAGS else arg)
    return out


def run(args: ServeArgs) -> int:
    from cerebras_gpt.quantization import check_precision
    from cerebras_gpt.serve.app import run_server

    check_precision(args.quantize)  # a bad value fails before the model loads
    if not 0 < args.port < 65536:
        raise ValueError(f"--port {args.port} is not a TCP port (1-65535)")
    run_server(
        args.model,
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        model_name=args.model_name,
        engine_config=args.engine,
        device=args.device,
        dtype=args.dtype,
        log_level=args.log_level,
        quantize=args.quantize,
    )
    return 0


def main(argv: list[str]) -> int:
    return run_command(ServeArgs, translate_vllm_flags(argv), "cerebras-gpt serve", run)
