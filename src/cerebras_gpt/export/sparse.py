"""Sparse storage: a sparse model's matrices as nonzero values plus a bitmask, everything else dense.

A 2-D tensor is stored as its nonzero values (row-major) and one bit per entry wherever that is smaller than
the dense tensor; the round trip is bit-exact (-0.0 counts as nonzero). The parameters are the model's own
(μP not folded). The masks and the algorithms that make a model sparse are in `cerebras_gpt.sparsity`, which
still exports these names; `cerebras-gpt export --format sparse` writes this format.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cerebras_gpt.config import GPTConfig
from cerebras_gpt.model import GPT
from cerebras_gpt.runtime import full_tensor, unwrap_model

log = logging.getLogger(__name__)

SPARSE_FORMAT = "cerebras-gpt-sparse"
SPARSE_WEIGHTS = "model.sparse.safetensors"
_INT_VIEW = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _nonzero_bits(t: torch.Tensor) -> torch.Tensor:
    """Entries whose bit pattern is not all zero (-0.0 counts as nonzero, so the trip is bit-exact)."""
    return t.contiguous().view(_INT_VIEW[t.element_size()]) != 0


def save_sparse(model: GPT, out_path: str | Path, tokenizer=None) -> dict[str, int]:
    """Write ``model`` as a sparse model directory: values + bitmask per sparse matrix, the rest dense.

    A 2-D tensor is stored as its nonzero values (row-major) plus a bit per entry wherever that is
    smaller than the dense tensor (density below 1 - 1/(8·bytes per value)); everything else is
    stored dense. The parameters are the model's own (μP not folded), so `load_sparse` gives back
    the identical model. This is not a Hugging Face directory: export to HF for other tools.

    Args:
        model: a GPT (plain or wrapped).
        out_path: directory to create (``config.json`` + ``model.sparse.safetensors``).
        tokenizer: optional tokenizer whose files are saved beside the weights.

    Returns:
        Byte counts: ``stored`` (the weights file) and ``dense`` (the same tensors stored dense).
    """
    from safetensors.torch import save_file

    base = unwrap_model(model)
    out = Path(out_path)
    if out.exists() and not out.is_dir():
        raise ValueError(f"sparse export path {str(out)!r} is a file; give a directory")
    out.mkdir(parents=True, exist_ok=True)
    state = {k: full_tensor(v.detach()).cpu() for k, v in base.state_dict().items()}
    tied = base.config.tie_word_embeddings
    if tied:
        state.pop("lm_head.weight", None)
    tensors: dict[str, torch.Tensor] = {}
    layout: dict[str, dict[str, Any]] = {}
    dense_bytes = 0
    for name, t in state.items():
        t = t.contiguous()
        dense_bytes += t.numel() * t.element_size()
        if t.dim() == 2:
            nz = _nonzero_bits(t)
            nnz = int(nz.sum())
            if nnz * t.element_size() + (t.numel() + 7) // 8 < t.numel() * t.element_size():
                bits = np.packbits(nz.numpy().reshape(-1), bitorder="little")
                tensors[name + ".values"] = t[nz].contiguous()
                tensors[name + ".bitmask"] = torch.from_numpy(bits)
                layout[name] = {"encoding": "bitmask", "shape": list(t.shape), "nonzero": nnz}
                continue
        tensors[name] = t
        layout[name] = {"encoding": "dense", "shape": list(t.shape)}
    save_file(tensors, str(out / SPARSE_WEIGHTS), metadata={"format": SPARSE_FORMAT})
    meta = {"format": SPARSE_FORMAT, "version": 1, "architecture": base.config.to_dict(), "tensors": layout}
    (out / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    stored = (out / SPARSE_WEIGHTS).stat().st_size
    log.info(
        "sparse model in %s: %.1f MB (dense %.1f MB, %.3fx)", out, stored / 1e6, dense_bytes / 1e6, stored / dense_bytes
    )
    return {"stored": stored, "dense": dense_bytes}


def load_sparse(path: str | Path, device: torch.device | str = "cpu") -> GPT:
    """Load a directory written by `save_sparse`; returns the identical dense GPT (eval mode)."""
    from safetensors.torch import load_file

    from cerebras_gpt.hf import model_from_state_dict

    path = Path(path)
    config_path = path / "config.json"
    if not config_path.exists() or not (path / SPARSE_WEIGHTS).exists():
        raise ValueError(
            f"{str(path)!r} is not a sparse model directory (needs config.json and {SPARSE_WEIGHTS}); "
            "write one with `cerebras-gpt export --format sparse`"
        )
    meta = json.loads(config_path.read_text())
    if meta.get("format") != SPARSE_FORMAT:
        raise ValueError(
            f"{str(config_path)!r} is not a {SPARSE_FORMAT} config; load a Hugging Face directory "
            "with GPT.from_pretrained instead"
        )
    config = GPTConfig.from_dict(meta["architecture"])
    stored = load_file(str(path / SPARSE_WEIGHTS))
    state: dict[str, torch.Tensor] = {}
    for name, entry in meta["tensors"].items():
        if entry["encoding"] == "dense":
            state[name] = stored[name]
            continue
        shape = tuple(entry["shape"])
        values = stored[name + ".values"]
        n = math.prod(shape)
        nz = torch.from_numpy(np.unpackbits(stored[name + ".bitmask"].numpy(), count=n, bitorder="little").astype(bool))
        dense = torch.zeros(n, dtype=values.dtype)
        dense[nz] = values
        state[name] = dense.view(shape)
    return model_from_state_dict(config, state, f"sparse weights in {str(path)!r}", device=device)


__all__ = ["SPARSE_FORMAT", "SPARSE_WEIGHTS", "load_sparse", "save_sparse"]
