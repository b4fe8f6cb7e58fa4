"""torchrun process groups and collectives (model wrapping is train/parallelize.py's).

Under `torchrun` (RANK/WORLD_SIZE/LOCAL_RANK in the environment) the process group is NCCL on CUDA and
gloo on CPU, at any world size (one rank under torchrun still runs the DDP/FSDP2 code path); without it
everything runs in one process and these helpers are no-ops.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(device: torch.device) -> DistInfo:
    """Join the torchrun process group if launched by torchrun (idempotent)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and "TORCHELASTIC_RUN_ID" not in os.environ:  # not launched by torchrun
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend)
    return info


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def resolve_device(device: str) -> torch.device:
    """``auto``: cuda:LOCAL_RANK where CUDA is available, else cpu."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    from cerebras_gpt.errors import require_device

    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"--device {device!r} is not a device: use cpu, cuda, cuda:N or auto") from e
    require_device(dev)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return dev


def wrap(model: nn.Module, info: DistInfo, device: torch.device, fsdp: bool) -> nn.Module:
    """DDP or FSDP2 around ``model``: an alias of `cerebras_gpt.train.parallelize.wrap`, where wrapping lives."""
    from cerebras_gpt.train.parallelize import wrap as _wrap

    return _wrap(model, info, device, fsdp)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over ranks in place (no-op in one process)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def broadcast_from_main(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (e.g. a run directory named after the time); itself in one process."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]
    return value
