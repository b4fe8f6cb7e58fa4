"""Faster decoding on CPU: how a decode step's few rows are multiplied by the weights.

A decoding step multiplies a few rows (one per sequence) by every weight matrix, so it is bound by
reading the weights once (438 MB for 111M in fp32). MKL's GEMM behind `F.linear` reads them well
below memory speed at these shapes, by how much depends on the CPU: on this project's 2-core AVX2
machines a 111M step through `F.linear` took about twice the time of merely streaming the weights at one
row, and four times at eight (the step times of each path: BENCHMARKS.md, "Figures from the code").

Two remedies, neither of which changes the arithmetic beyond fp32 rounding (summation order):

- One row (batch-1 decoding): on some CPUs (the AVX2 AMD machines) MKL's GEMV runs on one core, and
  one core cannot stream memory as fast as two. Viewing the weight as ``threads`` blocks of output rows
  and multiplying them with one `torch.bmm` lets MKL's batched GEMM run the blocks on all cores. The
  blocks are views: no copy. On others (the AVX-512 Xeons) MKL's own GEMV already uses every core and
  the split is slower, so which one runs is measured once per process and weight shape
  (`split_row_pays`), on the model's largest weight.
- Several rows (batched prompts, a server): oneDNN with the weight reordered once into its blocked
  layout, the path PyTorch's Inductor takes for frozen CPU graphs
  (`torch.ops.mkldnn._reorder_linear_weight` / `_linear_pointwise`). Reordering the 111M weights takes
  a few hundred milliseconds, as long as several decode steps, so the packed copy is kept for the next
  generation and reused while the weight is unchanged (same storage, same version counter: any
  in-place update, an optimizer step or `load_state_dict`, makes it stale). It costs the weights'
  size again in memory: packing is skipped when it would not fit in a quarter of the available
  memory, and `release_packed_weights(model)` frees it.

Long inputs (prefill), training (autograd) and anything but CPU float32 keep `F.linear`. The effect on
whole decoding is measured by `bench/generate.py` and `bench/serve.py` and recorded in BENCHMARKS.md.
"""

from __future__ import annotations

import contextlib
import logging
import os
import weakref
from collections.abc import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from cerebras_gpt.runtime import median_times

log = logging.getLogger(__name__)

# Rows (tokens) per call up to which the packed kernel runs: every decode step of up to 32
# sequences, and the prefill of short prompts. oneDNN measured faster than F.linear at all of them.
PACKED_MAX_ROWS = 32
# The row count oneDNN tunes the packed layout for; the layout serves any row count.
_LAYOUT_ROWS_HINT = 8

# nn.Linear -> ((weight storage, offset, version, shape), packed weight). Keyed by the module, which
# dies with its model; the key tuple says whether the packed copy still matches the weight.
_cache: weakref.WeakKeyDictionary[nn.Linear, tuple[tuple, torch.Tensor]] = weakref.WeakKeyDictionary()


def packing_available() -> bool:
    """Whether this PyTorch build has oneDNN's packed linear (x86 and ARM CPU builds do)."""
    return bool(torch.backends.mkldnn.is_available()) and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def _weight_key(weight: torch.Tensor) -> tuple | None:
    try:
        return weight.untyped_storage().data_ptr(), weight.storage_offset(), weight._version, tuple(weight.shape)
    except RuntimeError:  # an inference-mode tensor has no version counter: never reuse its packing
        return None


def _cached_packing(linear: nn.Linear, key: tuple | None) -> torch.Tensor | None:
    hit = _cache.get(linear)
    return hit[1] if hit is not None and key is not None and hit[0] == key else None


def _packed_weight(linear: nn.Linear) -> torch.Tensor | None:
    """The cached packed copy of ``linear``'s weight, or a new one; None where oneDNN cannot pack."""
    key = _weight_key(linear.weight)
    packed = _cached_packing(linear, key)
    if packed is None:
        try:
            packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), _LAYOUT_ROWS_HINT)
        except RuntimeError as e:  # a build whose oneDNN cannot pack: this layer runs unpacked
            log.info("packed weights unavailable (%s)", e)
            return None
        if key is not None:
            _cache[linear] = (key, packed)
    return packed


def split_row_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, blocks: int) -> torch.Tensor:
    """``x @ weight.T + bias`` for one row ``x`` of shape (in,), the output rows cut into ``blocks``.

    `torch.bmm` over the blocks (views of ``weight``) lets MKL run them on separate cores; the rows
    left over when ``blocks`` does not divide the output size go through one small `torch.mv`.
    """
    out_features, in_features = weight.shape
    blocks = max(1, min(blocks, out_features))
    per_block = out_features // blocks
    even = per_block * blocks
    y = torch.empty(out_features, dtype=x.dtype, device=x.device)
    # (blocks, 1, in) @ (blocks, in, per_block): row times transposed block, which MKL's batched GEMM
    # runs as one GEMV per block on its own core (as a column it stays on one core: several times slower).
    rows = x.view(1, 1, -1).expand(blocks, -1, -1)
    block_weights = weight[:even].view(blocks, per_block, in_features).transpose(1, 2)
    torch.bmm(rows, block_weights, out=y[:even].view(blocks, 1, per_block))
    if even < out_features:
        torch.mv(weight[even:], x, out=y[even:])
    return y if bias is None else y.add_(bias)


# (threads, weight shape) -> whether `split_row_linear` beat `F.linear` on one row, measured once.
_split_pays: dict[tuple[int, tuple[int, ...]], bool] = {}


def split_row_pays(weight: torch.Tensor, threads: int, repeats: int = 5) -> bool:
    """Whether splitting one row over ``threads`` cores is faster than `F.linear` for ``weight``.

    Timed here, once per process for each thread count and shape: a warm-up, then ``repeats``
    alternating calls of each on a random row, medians compared (about 12 products: ~0.1 s for the
    111M LM head). Which one wins depends on the CPU and its MKL code path, not on the values.
    """
    key = (threads, tuple(weight.shape))
    if key not in _split_pays:
        with torch.no_grad():
            x = torch.randn(weight.shape[1], dtype=weight.dtype)
            candidates = {
                "F.linear": lambda: F.linear(x, weight),
                "split": lambda: split_row_linear(x, weight, None, threads),
            }
            medians = median_times(candidates, repeats)
        _split_pays[key] = medians["split"] < medians["F.linear"]
        log.debug(  # the CLI shows INFO lines to the user; this one is for whoever tunes decoding
            "one-row linear %s on %d threads: split %.2f ms, F.linear %.2f ms",
            tuple(weight.shape),
            threads,
            medians["split"] * 1e3,
            medians["F.linear"] * 1e3,
        )
    return _split_pays[key]


class DecodeLinear(nn.Module):
    """``y = x W^T + b`` sharing ``linear``'s weight, with the fast paths above for a few rows.

    ``split``: one row goes through `split_row_linear` (where `split_row_pays`); else `F.linear`.
    """

    def __init__(self, linear: nn.Linear, packed: bool, split: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias  # shared, not copied
        self.packed = _packed_weight(linear) if packed else None
        self.splittable = split and linear.weight.is_contiguous()  # the blocks are views of the weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // self.in_features
        if torch.is_grad_enabled() or rows > PACKED_MAX_ROWS:
            return F.linear(x, self.weight, self.bias)
        if rows == 1 and self.splittable and (threads := torch.get_num_threads()) > 1:
            y = split_row_linear(x.reshape(self.in_features), self.weight, self.bias, threads)
        elif self.packed is not None:
            y = torch.ops.mkldnn._linear_pointwise(
                x.reshape(rows, self.in_features), self.packed, self.bias, "none", [], ""
            )
        else:
            return F.linear(x, self.weight, self.bias)
        return y.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, packed={self.packed is not None}"


def _available_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not on every platform
        return None


def _swappable(module: nn.Module) -> bool:
    # Exactly nn.Linear: LoRA wrappers, sparse-kernel modules and the like keep their own forward.
    return type(module) is nn.Linear and module.weight.device.type == "cpu" and module.weight.dtype == torch.float32


@contextlib.contextmanager
def decode_linears(model: nn.Module, max_rows: int | None = None) -> Iterator[int]:
    """Swap the CPU float32 ``nn.Linear`` layers of ``model`` for `DecodeLinear` for the block's span.

    ``max_rows`` is the most rows a decode step will have (a batch of ``B`` prompts: ``B``), None when
    it varies without a known bound (a serving engine). Weights are packed for oneDNN when steps can
    have 2 to 32 rows, oneDNN is there and new packed copies fit in a quarter of available memory;
    batch 1 needs no packing. Yields how many layers were swapped; the original modules are back on
    exit, even after an error. Packed copies stay cached for the next call (see the module docstring).
    """
    swapped: dict[str, nn.Module] = {}  # name -> the original module
    targets = {name: mod for name, mod in model.named_modules() if _swappable(mod)}
    pack = (max_rows is None or 1 < max_rows <= PACKED_MAX_ROWS) and packing_available()
    if pack:
        new = {
            id(mod.weight): mod.weight
            for mod in targets.values()
            if _cached_packing(mod, _weight_key(mod.weight)) is None
        }
        need = sum(w.numel() * w.element_size() for w in new.values())
        available = _available_memory_bytes()
        if available is not None and need > available // 4:
            log.info("decode linears: %.1f GB of packed weights would not fit comfortably; not packing", need / 1e9)
            pack = False
    # One row at a time (batch-1 decoding; a server's lone request): split it over the cores where
    # that is measured to pay, on the largest weight (the LM head: most of a small model's bytes).
    threads = torch.get_num_threads()
    split = False
    if targets and threads > 1 and not torch.is_grad_enabled():
        largest = max(targets.values(), key=lambda mod: mod.weight.numel()).weight
        split = largest.is_contiguous() and split_row_pays(largest, threads)
    try:
        for name, mod in targets.items():
            model.set_submodule(name, DecodeLinear(mod, packed=pack, split=split))
            swapped[name] = mod
        yield len(swapped)
    finally:  # also when packing is interrupted half-way
        _restore(model, swapped)


def release_packed_weights(model: nn.Module) -> int:
    """Free the packed copies kept for ``model``'s linears; returns how many were freed."""
    return sum(_cache.pop(mod, None) is not None for mod in model.modules())


def _restore(model: nn.Module, swapped: dict[str, nn.Module]) -> None:
    for name, mod in swapped.items():
        model.set_submodule(name, mod)
    swapped.clear()


__all__ = [
    "PACKED_MAX_ROWS",
    "DecodeLinear",
    "decode_linears",
    "packing_available",
    "release_packed_weights",
    "split_row_linear",
    "split_row_pays",
]
