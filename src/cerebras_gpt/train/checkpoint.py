"""Training checkpoints: written atomically, the last K kept, resumable exactly.

Layout of ``out_dir/checkpoints/step_NNNNNNNN/``::

    model/            HF GPT-2 model directory (μP folded): `load_model_and_tokenizer(ckpt_dir)` reads it
    train_state.pt    unfolded model state (unsharded runs), optimizer, step, tokens, RNG, loader, sparsity
    dcp/              FSDP2 runs: model + optimizer as a sharded torch.distributed.checkpoint (any rank count)
    run_config.json   the resolved TrainConfig, GPTConfig and plan

A checkpoint is written under ``checkpoints/.tmp-step_NNNNNNNN``, flushed to disk, then renamed: a crash
(even SIGKILL) mid-write leaves only a temp directory, which is never taken as the latest and is removed
by the next save.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cerebras_gpt.train import distributed

PREFIX = "step_"
TMP_PREFIX = ".tmp-"
# Fault injection for the crash-safety test: SIGKILL this process halfway through writing that step.
KILL_ENV = "CEREBRAS_GPT_KILL_IN_SAVE"


def checkpoint_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoints"


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """Complete checkpoints in ``out_dir``, oldest first."""
    root = checkpoint_dir(out_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX)
             and (p / "train_state.pt").exists()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def is_checkpoint(path: str | Path) -> bool:
    return (Path(path) / "train_state.pt").exists()


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fsync_tree(path: Path) -> None:
    for p in sorted(path.rglob("*")):
        if p.is_file():
            with p.open("rb") as f:
                os.fsync(f.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _maybe_crash(step: int) -> None:
    if os.environ.get(KILL_ENV) == str(step):
        os.kill(os.getpid(), signal.SIGKILL)


def save(out_dir: str | Path, step: int, model: nn.Module, raw_model: nn.Module,
         optimizer: torch.optim.Optimizer, state: dict[str, Any], run_config: dict[str, Any],
         keep_last: int, sharded: bool, is_main: bool) -> Path | None:
    """Write checkpoint ``step`` (collective under torchrun: every rank calls it); returns its path.

    Args:
        model: the model as trained (DDP/FSDP2-wrapped or plain).
        raw_model: the unwrapped `GPT` (its ``config`` and, for unsharded runs, its state).
        state: step, tokens, loader, sparsity and counters to restore; RNG states are added here.
        sharded: FSDP2: model and optimizer go to ``dcp/`` through torch.distributed.checkpoint.
    """
    from cerebras_gpt.model import GPT

    root = checkpoint_dir(out_dir)
    final = root / f"{PREFIX}{step:08d}"
    tmp = root / f"{TMP_PREFIX}{final.name}"
    if is_main:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(TMP_PREFIX + "*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir()
    distributed.barrier()
    state = dict(state, rng=rng_state())
    if sharded:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                             get_state_dict)

        msd, osd = get_state_dict(model, optimizer)
        dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(tmp / "dcp"))
        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if is_main:
            export = GPT(raw_model.config, init_weights=False)
            export.load_state_dict(full, strict=False)
            export.save_pretrained(tmp / "model")
    elif is_main:
        raw_model.save_pretrained(tmp / "model")
        state["model"] = {k: v.detach().cpu() for k, v in raw_model.state_dict().items()}
        state["optimizer"] = optimizer.state_dict()
    if is_main:
        _maybe_crash(step)
        torch.save(state, tmp / "train_state.pt")
        (tmp / "run_config.json").write_text(json.dumps(run_config, indent=2, default=str) + "\n")
        _fsync_tree(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_tree(root)
        for old in list_checkpoints(out_dir)[:-keep_last] if keep_last > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    distributed.barrier()
    return final


def load(path: str | Path, model: nn.Module, raw_model: nn.Module,
         optimizer: torch.optim.Optimizer | None) -> dict[str, Any]:
    """Restore model (and optimizer) from checkpoint ``path`` in place; returns the rest of its state.

    A sharded (``dcp/``) checkpoint loads onto any number of ranks, sharded or not.
    """
    path = Path(path)
    state = torch.load(path / "train_state.pt", map_location="cpu", weights_only=False)
    if (path / "dcp").is_dir():
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        if optimizer is None:
            from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

            msd = get_model_state_dict(model)
            dcp.load({"model": msd}, checkpoint_id=str(path / "dcp"))
            set_model_state_dict(model, msd)
        else:
            msd, osd = get_state_dict(model, optimizer)
            sd = {"model": msd, "optim": osd}
            dcp.load(sd, checkpoint_id=str(path / "dcp"))
            set_state_dict(model, optimizer, model_state_dict=sd["model"], optim_state_dict=sd["optim"])
    else:
        if _is_sharded(model):
            raise ValueError(f"{path} is an unsharded (DDP or one-process) checkpoint; resume it without --fsdp")
        raw_model.load_state_dict(state.pop("model"))
        opt_state = state.pop("optimizer")
        if optimizer is not None:
            optimizer.load_state_dict(opt_state)
    return state


def _is_sharded(model: nn.Module) -> bool:
    return any(type(p).__name__ == "DTensor" for p in model.parameters())


def read_run_config(path: str | Path) -> dict[str, Any]:
    return json.loads((Path(path) / "run_config.json").read_text())
