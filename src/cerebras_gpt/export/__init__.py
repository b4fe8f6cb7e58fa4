"""Exports of a model directory or training checkpoint for other runtimes.

- ``hf``: the Hugging Face GPT-2 directory (`model.save_pretrained`: safetensors, config, tokenizer,
  μP folded) that `transformers`, vLLM and TGI serve as it is;
- ``gguf``: one GGUF file for llama.cpp (`export.gguf`), f32, f16 or q8_0;
- ``sparse``: values + bitmask storage of a sparse model (`export.sparse`).

Nothing is overwritten unless asked (``overwrite``), and every output is written under a fresh temporary
name beside it (made by `tempfile`, removed on failure) and renamed, so an interrupted export never
leaves a half-written model where a good one was, and never touches a file it did not create.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

FORMATS = ("hf", "gguf", "sparse")


def export_model(
    model_path: str | os.PathLike, fmt: str, out: str | os.PathLike, outtype: str = "f16", overwrite: bool = False
) -> dict:
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
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_beside(out, directory=True)
    try:
        if fmt == "hf":
            model.save_pretrained(tmp, tokenizer=tokenizer)
            summary: dict = {"path": str(out)}
        else:
            from cerebras_gpt.export.sparse import save_sparse

            summary = {"path": str(out), **save_sparse(model, tmp, tokenizer=tokenizer)}
        replace_path(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("exported %s as %s to %s", model_path, fmt, out)
    return summary


def temp_path_beside(out: Path, directory: bool) -> Path:
    """A new, uniquely named empty file or directory beside ``out`` (``.OUT.<random>.tmp``).

    Unique (made by `tempfile`), so it is never a name a user's file already holds, and in the same
    directory, so the final rename is atomic. It gets the permissions a plain mkdir/open would give
    (tempfile makes it private to the owner).
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        os.close(fd)
        tmp = Path(name)
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod((0o777 if directory else 0o666) & ~umask)
    return tmp


def replace_path(new: Path, out: Path) -> None:
    """Move ``new`` (a complete file or directory) to ``out``; an old ``out`` is removed only after.

    A directory cannot be renamed over a non-empty one, so the old ``out`` is first renamed to a
    unique name beside it, then ``new`` takes its place, then the old one is deleted.
    """
    if not out.exists():
        new.replace(out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    old.rmdir()  # only its unique name is wanted
    out.replace(old)
    try:
        new.replace(out)
    except BaseException:
        old.replace(out)  # put the previous export back
        raise
    shutil.rmtree(old) if old.is_dir() else old.unlink()
