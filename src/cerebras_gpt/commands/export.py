"""`cerebras-gpt export`: a model or training checkpoint as a Hugging Face directory, a GGUF file, or sparse storage."""

from __future__ import annotations

import dataclasses
import json
from typing import Literal

from cerebras_gpt.commands import run_command


@dataclasses.dataclass
class ExportArgs:
    """Export a model directory, training checkpoint or hub id for another runtime.

    hf: the Hugging Face directory that transformers, vLLM (vllm serve OUT) and TGI load;
    gguf: one file for llama.cpp (llama-cli -m OUT.gguf); sparse: values + bitmask storage.
    """

    model: str
    """Model directory, training checkpoint directory, or hub id (e.g. cerebras/Cerebras-GPT-111M)."""
    out: str
    """Where to write: a directory (hf, sparse) or a .gguf file (gguf)."""
    format: Literal["hf", "gguf", "sparse"] = "hf"
    """hf (vLLM, TGI, transformers), gguf (llama.cpp) or sparse (values + bitmask of sparse weights)."""
    outtype: Literal["f32", "f16", "q8_0"] = "f16"
    """GGUF weight type for the 2-D weights (norms, biases and position embeddings stay f32)."""
    overwrite: bool = False
    """Replace --out if it exists."""


def run(args: ExportArgs) -> int:
    from cerebras_gpt.export import export_model

    summary = export_model(args.model, args.format, args.out, outtype=args.outtype, overwrite=args.overwrite)
    if args.format == "gguf":
        summary = {"path": summary["path"], "bytes": summary["bytes"], "tensors": len(summary["tensors"])}
    print(json.dumps(summary))
    return 0


def main(argv: list[str]) -> int:
    return run_command(ExportArgs, argv, "cerebras-gpt export", run)
