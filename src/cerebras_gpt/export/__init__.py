"""Exports of a model directory or training checkpoint for other runtimes.

- ``hf``: the Hugging Face GPT-2 directory (`model.save_pretrained`: safetensors, config, tokenizer,
  μP folded) that `transformers`, vLLM and TGI serve as it is;
- ``gguf``: one GGUF file for llama.cpp (`export.gguf`), f32, f16 or q8_0;
- ``sparse``: values + bitmask storage of a sparse model (`cerebras_gpt.sparsity.save_sparse`).

Nothing is overwritten unless asked, and every output is written under a temporary name and renamed,
so an interrupted export never leaves a half-written model where a good one was.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

FORMATS = ("hf", "gguf", "sparse")


def export_model(model_path: str | os.PathLike, fmt: str, out: str | os.PathLike, outtype: str = "f16",
                 overwrite: bool = False) -> dict:
    """Load ``model_path`` (model directory, training checkpoint or hub id) and write it as ``fmt`` to ``out``.

    Args:
        model_path: what `hf.load_model_and_tokenizer` accepts (a checkpoint's ``model/`` is found).
        fmt: ``hf``, ``gguf`` or ``sparse``.
        out: the directory (hf, sparse) or .gguf file (gguf) to create.
        outtype: GGUF weight type, ``f32``, ``f16`` or ``q8_0`` (gguf only).
        overwrite: replace ``out`` if it exists.

    Returns:
        A summary of what was written (path, and format-specific sizes).
    """
    from cerebras_gpt.hf import load_model_and_tokenizer

    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r} is not one of {FORMATS}")
    out = Path(out)
    if out.exists() and not overwrite:
        raise ValueError(f"{str(out)!r} already exists; pass --overwrite to replace it, or choose another --out")
    if fmt == "gguf" and out.suffix != ".gguf":
        raise ValueError(f"--out {str(out)!r}: a GGUF export is one file; name it *.gguf")
    model, tokenizer = load_model_and_tokenizer(model_path)
    if fmt == "gguf":
        from cerebras_gpt.export.gguf import write_gguf

        return write_gguf(model, tokenizer, out, outtype=outtype, name=Path(str(model_path)).name)
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    if fmt == "hf":
        model.save_pretrained(tmp, tokenizer=tokenizer)
        summary: dict = {"path": str(out)}
    else:
        try:
            from cerebras_gpt.sparsity import save_sparse
        except ImportError as e:
            raise RuntimeError("sparse export needs cerebras_gpt.sparsity.save_sparse, which this install "
                               "lacks; update cerebras-gpt") from e
        summary = {"path": str(out), **save_sparse(model, tmp, tokenizer=tokenizer)}
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    tmp.replace(out)
    log.info("exported %s as %s to %s", model_path, fmt, out)
    return summary
