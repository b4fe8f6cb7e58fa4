"""The runtime layer under everything that runs a model: which device and dtype, the autocast every
forward pass runs under, parameters seen through the wrappers that training puts around a model (their
names, and FSDP2's sharded DTensors), and the timing by which kernels are chosen on this machine.

Commands, the server, the lm-eval adapter and the benchmarks resolve the user's 'auto'-able
``--device``/``--dtype`` strings here (never through a command module).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable


def resolve_device_dtype(device: str, dtype: str):
    """(torch.device, torch.dtype) from the 'auto'-able strings every command takes."""
    import torch

    from cerebras_gpt.errors import require_device

    try:
        dev = torch.device(
            "cuda" if device == "auto" and torch.cuda.is_available() else "cpu" if device == "auto" else device
        )
    except RuntimeError as e:
        raise ValueError(f"--device {device!r} is not a device: use cpu, cuda, cuda:N or auto") from e
    require_device(dev)
    if dtype == "auto":
        return dev, torch.bfloat16 if dev.type == "cuda" else torch.float32
    choices = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }
    if dtype not in choices:
        raise ValueError(f"--dtype {dtype!r} is not one of {sorted(choices)}")
    return dev, choices[dtype]


def autocast_context(device, dtype: str = "auto") -> contextlib.AbstractContextManager:
    """The one autocast of training, evaluation and lm-eval: bf16 on CUDA (``auto`` or ``bfloat16``), none on
    the CPU unless ``bfloat16`` is asked (the project's two numerics: CPU fp32, CUDA bf16)."""
    import torch

    if dtype == "bfloat16" or (dtype == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# Path components that wrappers insert into parameter names: torch.compile (`_orig_mod`), FSDP1
# (`_fsdp_wrapped_module`), PyTorch's checkpoint wrapper (`_checkpoint_wrapped_module`); DDP adds a leading
# `module`. Optimizer groups, sparsity masks and sparse kernels are keyed by the plain model's names.
WRAPPER_PARTS = frozenset({"_orig_mod", "_fsdp_wrapped_module", "_checkpoint_wrapped_module"})


def canonical_name(name: str) -> str:
    """``name`` as the plain model calls it: wrapper components dropped wherever they are, and DDP's
    ``module.`` dropped where a wrapper put it (at the start, or right after another wrapper)."""
    parts = name.split(".")
    while parts and (parts[0] in WRAPPER_PARTS or parts[0] == "module"):
        parts.pop(0)
    return ".".join(p for p in parts if p not in WRAPPER_PARTS)


def unwrap_model(model):
    """The plain model inside DDP (``.module``) and torch.compile (``._orig_mod``) wrappers, however nested."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model


# FSDP2 (`fully_shard`) turns each parameter into a DTensor: every rank holds a shard (`local_tensor`), and
# decisions that must agree across ranks (sparsity masks, exported weights) read the whole (`full_tensor`).
# Plain tensors pass through unchanged, so callers need no branch of their own.
def is_dtensor(t) -> bool:
    """Whether ``t`` is a DTensor (a parameter or gradient sharded by FSDP2)."""
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def local_tensor(t):
    """The tensor this rank holds: the local shard of a DTensor, else ``t`` itself."""
    return t.to_local() if is_dtensor(t) else t


def full_tensor(t):
    """The whole tensor on every rank: an all-gather for a DTensor (every rank must call it), else ``t``."""
    return t.full_tensor() if is_dtensor(t) else t


__all__ = [
    "WRAPPER_PARTS",
    "autocast_context",
    "canonical_name",
    "full_tensor",
    "is_dtensor",
    "local_tensor",
    "resolve_device_dtype",
    "unwrap_model",
]


def median_times(candidates: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each of ``candidates`` (name -> call): one warm-up call each, then ``repeats``
    rounds calling them in turn, so that a machine's load falls on all of them alike. How the kernel
    choices measured on this machine (`decode_linear.split_row_pays`, `train.cpu_matmul.onednn_pays`) time."""
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for run in candidates.values():
        run()
    for _ in range(repeats):
        for name, run in candidates.items():
            t0 = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}
