"""Faster small-batch decoding on CPU: linear layers with MKL-packed weights.

A decoding step multiplies a handful of rows (one per sequence) by every weight matrix. At 4 to 12
rows, MKL's general GEMM behind `F.linear` is badly tuned on x86: for the 111M LM head (50257 x 768,
one thread) 8 rows take 3.5x as long as 1 row and longer than 16 rows, although all of them read the
same 154 MB of weights. MKL's packed GEMM (`cblas_sgemm_pack` / `_compute`, which PyTorch exposes as
`torch.ops.mkl._mkl_reorder_linear_weight` / `_mkl_linear` for Inductor's frozen graphs) runs those
shapes 1.2-2.5x faster; at 1-3 and at 16 or more rows it is no better, so `PackedLinear` uses it for
4-12 rows only and `F.linear` otherwise (prefill, batch 1). The effect on whole decoding is measured
by `bench/generate.py` (batch 8) and `bench/serve.py` (4 clients), recorded in BENCHMARKS.md.

The packed copy holds the weights a second time while it lives, so `packed_linears` is a context
manager for the span of one batched generation and skips packing when the copy would not fit
comfortably in available memory. Results equal `F.linear`'s up to fp32 rounding (another summation
order), like any BLAS change of blocking.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

log = logging.getLogger(__name__)

# Rows (tokens) per call for which the packed kernel measured faster than F.linear on x86 MKL.
PACKED_MIN_ROWS = 4
PACKED_MAX_ROWS = 12


def mkl_packing_available() -> bool:
    """Whether this PyTorch build has MKL's packed GEMM (x86 CPU builds do)."""
    return bool(torch.backends.mkl.is_available()) and hasattr(torch.ops.mkl, "_mkl_reorder_linear_weight")


class PackedLinear(nn.Module):
    """``y = x W^T + b`` sharing ``linear``'s weight, plus an MKL-packed copy for 4-12 rows."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias  # shared, not copied
        # The batch-size hint only tunes the packing; the packed buffer serves any row count.
        self.packed = torch.ops.mkl._mkl_reorder_linear_weight(linear.weight.detach(), PACKED_MAX_ROWS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // self.in_features
        if PACKED_MIN_ROWS <= rows <= PACKED_MAX_ROWS and not torch.is_grad_enabled():
            y = torch.ops.mkl._mkl_linear(x.reshape(rows, self.in_features), self.packed, self.weight, self.bias, rows)
            return y.view(*x.shape[:-1], self.out_features)
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, packed rows {PACKED_MIN_ROWS}-{PACKED_MAX_ROWS}"


def _available_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not on every platform
        return None


def _packable(module: nn.Module) -> bool:
    # Exactly nn.Linear: LoRA wrappers, sparse-kernel modules and the like keep their own forward.
    return (type(module) is nn.Linear and module.weight.device.type == "cpu"
            and module.weight.dtype == torch.float32)


@contextlib.contextmanager
def packed_linears(model: nn.Module, max_rows: int, min_rows: int | None = None) -> Iterator[int]:
    """Swap the CPU float32 ``nn.Linear`` layers of ``model`` for `PackedLinear` for the block's span.

    ``min_rows``..``max_rows`` are the rows the model's calls will have (default: always ``max_rows``,
    as in a batch of equal steps; a serving engine passes 1..slots). Does nothing (yields 0) unless that
    range meets the packed kernel's 4-12, MKL is there and the packed copies fit in a quarter of
    available memory. Yields how many layers were swapped; the original modules are back on exit, even
    after an error.
    """
    min_rows = max_rows if min_rows is None else min_rows
    swapped: dict[str, nn.Module] = {}  # name -> the original module
    if min_rows <= PACKED_MAX_ROWS and max_rows >= PACKED_MIN_ROWS and mkl_packing_available():
        targets = {name: mod for name, mod in model.named_modules() if _packable(mod)}
        need = sum(mod.weight.numel() * 4 for mod in targets.values())
        available = _available_memory_bytes()
        if available is not None and need > available // 4:
            log.info("packed linears: %.1f GB of packed weights would not fit comfortably; using F.linear", need / 1e9)
            targets = {}
        try:
            for name, mod in targets.items():
                model.set_submodule(name, PackedLinear(mod))
                swapped[name] = mod
        except RuntimeError as e:  # an MKL build without packed GEMM: stay on F.linear
            log.info("packed linears unavailable (%s)", e)
            _restore(model, swapped)
    try:
        yield len(swapped)
    finally:
        _restore(model, swapped)


def _restore(model: nn.Module, swapped: dict[str, nn.Module]) -> None:
    for name, mod in swapped.items():
        model.set_submodule(name, mod)
    swapped.clear()


__all__ = ["PACKED_MAX_ROWS", "PACKED_MIN_ROWS", "PackedLinear", "mkl_packing_available", "packed_linears"]
