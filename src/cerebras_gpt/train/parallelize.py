"""Everything that wraps a model for training, in one place and one order: `parallelize`.

The order is torchtitan's (``models/llama3/infra/parallelize.py``: ``apply_ac`` -> ``apply_compile`` ->
``apply_fsdp``), for the same reasons:

1. activation checkpointing: each transformer block becomes a `CheckpointWrapper` (torch's
   ``checkpoint_wrapper``, non-reentrant), so recomputation is per block;
2. torch.compile, per block, in place (``Block.compile()``): each compiled region is one block, already
   checkpointed, and parameter names keep no ``_orig_mod`` prefix;
3. FSDP2 (``fully_shard`` per block, then the root) or DDP under torchrun; nothing in one process.

Before them, on a CPU without compile or FSDP2 (``cpu_rows``), the blocks' float32 linears are swapped for
oneDNN's where that is measured faster (`cpu_matmul.apply_onednn_linears`): checkpointing and DDP then
wrap the swapped layers.

Every step is idempotent: a model that already carries a wrapper is not wrapped again, so calling
`parallelize` twice on the same model (as a second `Trainer` over it would) changes nothing the second
time. The DDP wrapper is the one step that returns a new module; pass the unwrapped model again and it
is wrapped once more, which is why the `Trainer` calls this once and keeps the result.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointWrapper, checkpoint_wrapper

from cerebras_gpt.train import cpu_matmul
from cerebras_gpt.train.distributed import DistInfo

log = logging.getLogger("cerebras_gpt.train")


def _blocks(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks (``transformer.h``) of the `GPT` inside ``model`` (itself, under DDP or LoRA)."""
    from cerebras_gpt.model import GPT

    for module in model.modules():
        if isinstance(module, GPT):
            return module.transformer.h
    raise ValueError(f"no cerebras_gpt GPT inside the {type(model).__name__} to parallelize")


def apply_activation_checkpointing(model: nn.Module) -> int:
    """Wrap each block of ``model`` in a `CheckpointWrapper`, in place; returns how many were wrapped now.

    Blocks already wrapped are left alone. The wrapper's state-dict hooks drop its
    ``_checkpoint_wrapped_module`` prefix, so checkpoints keep the plain GPT-2 names.
    """
    blocks = _blocks(model)
    wrapped = 0
    for i, block in enumerate(blocks):
        if not isinstance(block, CheckpointWrapper):
            blocks[i] = checkpoint_wrapper(block)
            wrapped += 1
    return wrapped


def remove_activation_checkpointing(model: nn.Module) -> None:
    """Put the plain blocks back: a `CheckpointWrapper` forwards attribute reads to its block but not
    writes, so ``setup_kv_cache`` on a still-wrapped model would set the caches on the wrappers."""
    blocks = _blocks(model)
    for i, block in enumerate(blocks):
        if isinstance(block, CheckpointWrapper):
            blocks[i] = block._checkpoint_wrapped_module


@contextlib.contextmanager
def plain_blocks(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` with its blocks unwrapped from activation checkpointing for the duration (put back after).

    For code that names modules rather than state-dict keys (LoRA's adapter and merge, by
    ``named_modules``): inside, the names are the plain GPT-2 ones. Not under FSDP2, whose hooks sit on
    the wrappers.
    """
    blocks = _blocks(model)
    saved = list(blocks)
    remove_activation_checkpointing(model)
    try:
        yield model
    finally:
        for i, block in enumerate(saved):
            blocks[i] = block


def checkpointed_blocks(model: nn.Module) -> int:
    """How many blocks of ``model`` run under activation checkpointing (each wrapped once)."""
    return sum(isinstance(b, CheckpointWrapper) for b in _blocks(model))


def apply_compile(model: nn.Module) -> None:
    """torch.compile each block in place (``nn.Module.compile``); blocks already compiled are left alone."""
    for block in _blocks(model):
        if getattr(block, "_compiled_call_impl", None) is None:
            block.compile()


def remove_compile(model: nn.Module) -> None:
    """Undo `apply_compile`: the eager fallback when compilation fails on the first step."""
    for block in _blocks(model):
        block._compiled_call_impl = None


def is_compiled(model: nn.Module) -> bool:
    return any(getattr(b, "_compiled_call_impl", None) is not None for b in _blocks(model))


def apply_fsdp(model: nn.Module) -> nn.Module:
    """FSDP2: ``fully_shard`` each block, then the root (each all-gather is one block's parameters)."""
    if not dist.is_initialized():
        raise ValueError("--fsdp needs a process group: launch with torchrun --nproc-per-node N")
    from torch.distributed.fsdp import FSDPModule, fully_shard

    if isinstance(model, FSDPModule):
        return model
    for block in _blocks(model):
        fully_shard(block)
    fully_shard(model)
    return model


def apply_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    from torch.nn.parallel import DistributedDataParallel as DDP

    if isinstance(model, DDP):
        return model
    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)


def parallelize(
    model: nn.Module,
    info: DistInfo,
    device: torch.device,
    *,
    fsdp: bool = False,
    activation_checkpointing: bool = False,
    compile: bool = False,
    cpu_rows: int | None = None,
) -> nn.Module:
    """Activation checkpointing, then compile, then FSDP2 or DDP (see the module docstring).

    ``cpu_rows`` (tokens per micro-batch), on a CPU without compile or FSDP2: first the blocks' float32
    linears go through oneDNN where it is measured faster at that shape (`cpu_matmul`).

    Returns the module to train: ``model`` itself (changed in place) or, under torchrun without FSDP2,
    a `DistributedDataParallel` around it. ``model`` keeps its blocks wrapped afterwards.
    """
    if cpu_rows and device.type == "cpu" and not (compile or fsdp):
        cpu_matmul.apply_onednn_linears(_blocks(model), cpu_rows)
    if activation_checkpointing:
        apply_activation_checkpointing(model)
    if compile:
        apply_compile(model)
    if fsdp:
        return apply_fsdp(model)
    if info.enabled or dist.is_initialized():
        return apply_ddp(model, device)
    return model


def wrap(model: nn.Module, info: DistInfo, device: torch.device, fsdp: bool) -> nn.Module:
    """DDP or FSDP2 around ``model`` under torchrun (one rank included); FSDP2 only if asked.

    The wrapping step of `parallelize` alone (formerly ``train.distributed.wrap``).
    """
    return parallelize(model, info, device, fsdp=fsdp)


__all__ = [
    "parallelize",
    "apply_activation_checkpointing",
    "apply_compile",
    "apply_fsdp",
    "apply_ddp",
    "checkpointed_blocks",
    "is_compiled",
    "plain_blocks",
    "remove_activation_checkpointing",
    "remove_compile",
    "wrap",
]
