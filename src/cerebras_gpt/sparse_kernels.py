"""Sparse inference: run the sparse linears of a trained sparse model with sparse kernels.

`sparsify_for_inference(model)` replaces each `nn.Linear` in the transformer blocks whose weight is
sparse enough with

- `CSRLinear` on CPU: the weight as a compressed-sparse-row tensor, multiplied by
  `torch.sparse.mm` (MKL's sparse BLAS in the x86 builds); or
- `SemiStructuredLinear` on CUDA: `torch.sparse.to_sparse_semi_structured` (cuSPARSELt / CUTLASS
  2:4 kernels, Ampere and newer, fp16/bf16) when every group of 4 inputs has at most 2 nonzeros.

With ``mode="auto"`` a layer is replaced only where a quick measurement on that layer's shape says
the sparse kernel is faster than the dense one; ``"always"`` replaces every eligible layer. The
replacement is for inference only (no gradients) and the model's state dict changes; keep the
dense model for saving. The LM head is tied to the embedding and stays dense.
"""

from __future__ import annotations

import functools
import logging
import time
import warnings
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

log = logging.getLogger(__name__)


class CSRLinear(nn.Module):
    """``y = x W^T + b`` with W held as a CSR tensor (CPU, float32/float64).

    Rows of x are multiplied ``chunk_rows`` at a time: the (out, chunk) product then stays in cache,
    which measured faster than one (out, N) product at N = 512 (BENCHMARKS.md, "Figures from the code").
    """

    def __init__(self, linear: nn.Linear, chunk_rows: int = 32) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.chunk_rows = chunk_rows
        with warnings.catch_warnings():  # "sparse CSR support is in beta": known, and CSR @ dense is what we use
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            csr = linear.weight.detach().to_sparse_csr()
        self.register_buffer("weight", csr, persistent=False)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, self.in_features).to(self.weight.dtype)  # (N, in)
        y = torch.empty(x2.shape[0], self.out_features, dtype=x2.dtype)  # (N, out)
        for start in range(0, x2.shape[0], self.chunk_rows):
            chunk = x2[start : start + self.chunk_rows]
            # W (out, in) @ chunk^T (in, n) -> (out, n); MKL reads the transposed view without a copy.
            y[start : start + self.chunk_rows] = torch.sparse.mm(self.weight, chunk.t()).t()
        if self.bias is not None:
            y += self.bias
        return y.reshape(*shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        nnz = self.weight.values().numel()
        density = nnz / (self.in_features * self.out_features)
        return f"in={self.in_features}, out={self.out_features}, density={density:.3f}"


class SemiStructuredLinear(nn.Module):
    """``y = x W^T + b`` with a 2:4-sparse W compressed for the CUDA semi-structured kernels."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        from torch.sparse import to_sparse_semi_structured

        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = nn.Parameter(to_sparse_semi_structured(linear.weight.detach()), requires_grad=False)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        y = F.linear(x.reshape(-1, self.in_features), self.weight, self.bias)  # (N, out)
        return y.reshape(*shape[:-1], self.out_features)


def is_2to4(weight: torch.Tensor) -> bool:
    """Whether every group of 4 consecutive inputs of each row has at most 2 nonzeros."""
    if weight.dim() != 2 or weight.shape[1] % 4:
        return False
    return bool(((weight.reshape(weight.shape[0], -1, 4) != 0).sum(-1) <= 2).all())


@torch.no_grad()
def prune_2to4(model: nn.Module, param_filter: list[str] | None = None) -> None:
    """One-shot magnitude 2:4 pruning of the selected matrices (keep the 2 largest of every 4 inputs)."""
    import fnmatch

    from cerebras_gpt.sparsity import DEFAULT_PARAM_FILTER, canonical_name

    globs = param_filter or DEFAULT_PARAM_FILTER
    for raw, p in model.named_parameters():
        if p.dim() == 2 and any(fnmatch.fnmatchcase(canonical_name(raw), g) for g in globs):
            groups = p.view(p.shape[0], -1, 4)  # (out, in/4, 4)
            drop = groups.abs().argsort(dim=-1)[..., :2]
            groups.scatter_(-1, drop, 0.0)


@dataclass
class KernelChoice:
    """What `sparsify_for_inference` decided for one linear layer."""

    name: str
    sparsity: float
    kernel: Literal["dense", "csr", "2:4"]
    dense_ms: float | None = None
    sparse_ms: float | None = None


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up (CSR conversion caches, cuSPARSELt plans)
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return sorted(times)[len(times) // 2]


@torch.no_grad()
def sparsify_for_inference(
    model: nn.Module,
    mode: Literal["auto", "always", "off"] = "auto",
    min_sparsity: float = 0.5,
    calib_tokens: int = 512,
    repeats: int = 5,
) -> list[KernelChoice]:
    """Swap the sparse linears of ``model``'s transformer blocks for sparse-kernel modules, in place.

    Args:
        model: a GPT in eval mode (CPU float32 for CSR; CUDA fp16/bf16 for 2:4).
        mode: ``auto`` replaces a layer only where a measurement (``calib_tokens`` rows of input,
            median of ``repeats``) finds the sparse kernel faster; ``always`` replaces every
            eligible layer; ``off`` does nothing.
        min_sparsity: layers with a smaller fraction of zero weights stay dense.
        calib_tokens: rows of the measurement input (prefill of B x T tokens is B*T rows).
        repeats: timed repetitions per layer shape.

    Returns:
        One `KernelChoice` per linear layer of the blocks.
    """
    if mode not in ("auto", "always", "off"):
        raise ValueError(f"sparse kernel mode {mode!r} must be auto, always or off")
    choices: list[KernelChoice] = []
    if mode == "off":
        return choices
    timed: dict[tuple, tuple[float, float]] = {}  # (kernel, shape, sparsity %) -> (dense, sparse) ms
    targets = [(name, mod) for name, mod in model.named_modules() if isinstance(mod, nn.Linear) and ".h." in f".{name}"]
    for name, linear in targets:
        w = linear.weight
        sparsity = float((w == 0).sum()) / w.numel()
        kernel = _eligible_kernel(w, sparsity, min_sparsity)
        choice = KernelChoice(name, sparsity, "dense")
        if kernel is not None:
            try:
                replacement = CSRLinear(linear) if kernel == "csr" else SemiStructuredLinear(linear)
            except (RuntimeError, ValueError) as e:  # e.g. a shape the 2:4 kernels do not tile
                log.info("sparse kernels: %s stays dense (%s)", name, e)
                choices.append(choice)
                continue
            faster = True
            if mode == "auto":
                key = (kernel, tuple(w.shape), round(sparsity * 100))
                if key not in timed:
                    x = torch.randn(calib_tokens, linear.in_features, device=w.device, dtype=w.dtype)
                    timed[key] = (
                        _median_ms(functools.partial(linear, x), repeats),
                        _median_ms(functools.partial(replacement, x), repeats),
                    )
                choice.dense_ms, choice.sparse_ms = timed[key]
                faster = choice.sparse_ms < choice.dense_ms
            if faster:
                parent, _, child = name.rpartition(".")
                setattr(model.get_submodule(parent), child, replacement)
                choice.kernel = kernel
        choices.append(choice)
    n_sparse = sum(c.kernel != "dense" for c in choices)
    log.info("sparse kernels: %d of %d block linears replaced (%s)", n_sparse, len(choices), mode)
    return choices


def _eligible_kernel(w: torch.Tensor, sparsity: float, min_sparsity: float) -> str | None:
    if sparsity < min_sparsity:
        return None
    if w.device.type == "cpu" and w.dtype in (torch.float32, torch.float64):
        return "csr"
    if (
        w.device.type == "cuda"
        and w.dtype in (torch.float16, torch.bfloat16)
        and torch.cuda.get_device_capability(w.device)[0] >= 8
        and is_2to4(w)
    ):
        return "2:4"
    return None


__all__ = ["CSRLinear", "KernelChoice", "SemiStructuredLinear", "is_2to4", "prune_2to4", "sparsify_for_inference"]
