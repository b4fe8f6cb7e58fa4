"""`cerebras-gpt generate`: text from a model directory or hub id."""

from __future__ import annotations

import dataclasses
import re
import sys
from typing import Annotated

import tyro

from cerebras_gpt.commands import run_command
from cerebras_gpt.generation import SamplingParams
from cerebras_gpt.runtime import resolve_device_dtype


@dataclasses.dataclass
class GenerateArgs:
    """Generate text from a model directory, training checkpoint or Hugging Face hub id.

    Prompts come from --prompt, --prompt-file (one per line) or standard input (one per line).
    """

    model: str
    """Model directory, training checkpoint directory, or hub id (e.g. cerebras/Cerebras-GPT-111M)."""
    prompt: str | None = None
    """The prompt. Without it, prompts are read from --prompt-file or standard input."""
    prompt_file: str | None = None
    """A file with one prompt per line (generated as one batch)."""
    stream: bool = False
    """Print tokens as they are generated (one prompt at a time)."""
    device: str = "auto"
    """cpu, cuda, cuda:N, or auto (cuda when available)."""
    dtype: str = "auto"
    """float32, bfloat16, float16, or auto (bfloat16 on CUDA, float32 on CPU)."""
    sparse_kernels: str = "off"
    """For weight-sparse models: auto (sparse kernels only where measured faster), always, or off."""
    quantize: str = "none"
    """Weight precision for inference: none (as loaded), bf16 or int8 (8-bit weights, per-channel scales;
    fastest on CPU). int4 is refused (no kernel that pays). A directory saved quantized loads as it was saved."""
    compile: bool = False
    """Decode through a compiled step (torch.compile with Inductor's C++ GEMMs): the fastest CPU decoding
    (BENCHMARKS.md); the first run compiles for tens of seconds, later runs reuse Inductor's on-disk cache."""
    sampling: Annotated[SamplingParams, tyro.conf.OmitArgPrefixes] = dataclasses.field(default_factory=SamplingParams)


def _prompts(args: GenerateArgs) -> list[str]:
    if args.prompt is not None:
        return [args.prompt]
    if args.prompt_file is not None:
        with open(args.prompt_file, encoding="utf-8") as f:
            lines = [line.rstrip("\n") for line in f if line.strip()]
        if not lines:
            raise ValueError(f"--prompt-file {args.prompt_file!r} has no prompts")
        return lines
    if sys.stdin is None or sys.stdin.isatty():
        raise ValueError("no prompt: pass --prompt TEXT, --prompt-file FILE, or pipe prompts on standard input")
    lines = [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not lines:
        raise ValueError("standard input held no prompts")
    return lines


_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\"}


def unescape_stop(text: str) -> str:
    """A stop string as typed in a shell: ``\\n``, ``\\t`` and ``\\\\`` become a newline, a tab and a backslash
    (`--stop "\\n"` would otherwise wait for a backslash followed by n)."""
    return re.sub(r"\\([nt\\])", lambda m: _ESCAPES[m.group(1)], text)


def run(args: GenerateArgs) -> int:
    args.sampling.stop = [unescape_stop(s) for s in args.sampling.stop]
    from cerebras_gpt.generation import generate, stream_text
    from cerebras_gpt.hf import load_model_and_tokenizer
    from cerebras_gpt.quantization import apply_quantize, check_precision

    check_precision(args.quantize)  # a bad value fails before the model loads
    prompts = _prompts(args)
    device, dtype = resolve_device_dtype(args.device, args.dtype)
    model, tokenizer = load_model_and_tokenizer(args.model, device=device, dtype=dtype)
    model = apply_quantize(model, args.quantize)
    if args.sparse_kernels != "off":
        if args.sparse_kernels not in ("auto", "always"):
            raise ValueError(f"--sparse-kernels {args.sparse_kernels!r} must be auto, always or off")
        from cerebras_gpt.sparse_kernels import sparsify_for_inference

        swapped = sum(c.kernel != "dense" for c in sparsify_for_inference(model, args.sparse_kernels))
        print(f"sparse kernels: {swapped} linear layers swapped", file=sys.stderr)
    if args.compile:  # the first step of each process traces and compiles (or loads) its graph: say why it waits
        print("compiling the decode step (up to tens of seconds before the first token)", file=sys.stderr)
    if args.stream:
        for prompt in prompts:
            sys.stdout.write(prompt)
            for chunk in stream_text(model, tokenizer, prompt, args.sampling, compile=args.compile):
                sys.stdout.write(chunk)
                sys.stdout.flush()
            sys.stdout.write("\n")
        return 0
    outputs = generate(model, tokenizer, prompts, args.sampling, compile=args.compile)
    for prompt, text in zip(prompts, outputs):
        print(prompt + text)
    return 0


def main(argv: list[str]) -> int:
    return run_command(GenerateArgs, argv, "cerebras-gpt generate", run)
