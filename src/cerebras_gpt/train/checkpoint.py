"""Training checkpoints: written atomically, the last K kept, resumable exactly.

Layout of ``out_dir/checkpoints/step_NNNNNNNN/``::

    model/            HF GPT-2 model directory (μP folded): `load_model_and_tokenizer(ckpt_dir)` reads it
    train_state.pt    unfolded model state (unsharded runs), optimizer, step, tokens, RNG, loader, sparsity:
                      tensors and plain data only, read with ``torch.load(weights_only=True)`` (never unpickles code)
    dcp/              FSDP2 runs: model + optimizer as a sharded torch.distributed.checkpoint (any rank count)
    run_config.json   the resolved TrainConfig, GPTConfig and plan

A checkpoint is written under ``checkpoints/.tmp-step_NNNNNNNN``, flushed to disk, then renamed: a crash
(even SIGKILL) mid-write leaves only a temp directory, which is never taken as the latest and is removed
by the next save. A checkpoint of the same step is swapped in by renames (`cerebras_gpt.atomic.replace_dir`):
the old one is removed only once its replacement is in place. A full or read-only disk ends the save with an
`OSError` that says so, the previous checkpoints untouched.

Loading: `load_train_state` refuses a ``train_state.pt`` holding anything but tensors and plain data (a
crafted pickle cannot run code), and `latest_valid_checkpoint` skips, with a warning, a latest checkpoint
that is truncated or corrupt and resumes from the one before it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import pickle
import random
import shutil
import signal
import threading
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cerebras_gpt import atomic
from cerebras_gpt.runtime import is_dtensor
from cerebras_gpt.train import distributed

log = logging.getLogger("cerebras_gpt.train")

PREFIX = "step_"
TMP_PREFIX = ".tmp-"


def checkpoint_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoints"


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """Complete checkpoints in ``out_dir``, oldest first."""
    root = checkpoint_dir(out_dir)
    if not root.is_dir():
        return []
    for old in root.glob(f"{PREFIX}*{atomic.OLD_SUFFIX}*"):  # a same-step swap cut short by a crash
        atomic.recover_dir(root / old.name.split(atomic.OLD_SUFFIX)[0])
    found = [
        p
        for p in root.iterdir()
        if p.is_dir()
        and p.name.startswith(PREFIX)
        and p.name[len(PREFIX) :].isdigit()
        and (p / "train_state.pt").exists()
    ]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX) :]))


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def is_checkpoint(path: str | Path) -> bool:
    return (Path(path) / "train_state.pt").exists()


class CorruptCheckpoint(ValueError):
    """A checkpoint file that cannot be read: truncated, damaged, or holding more than tensors and plain data."""


def rng_state() -> dict[str, Any]:
    """RNG states as tensors and plain data (numpy's key array as a tensor), loadable with weights_only."""
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [str(name), torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached_gaussian)],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached_gaussian = state["numpy"]
    keys = keys.numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)
    np.random.set_state((name, keys.astype(np.uint32), int(pos), int(has_gauss), float(cached_gaussian)))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _plain(obj: Any) -> Any:
    """``obj`` with numpy scalars and arrays turned into Python numbers and tensors (weights_only-loadable)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.copy())
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _legacy_safe_globals() -> list[Any]:
    """What checkpoints written before the weights_only format hold besides tensors: numpy's RNG key array."""
    multiarray = getattr(np, "_core", None) or np.core
    reconstruct = multiarray.multiarray._reconstruct
    # numpy 1.x pickles name the function numpy.core.multiarray._reconstruct: the same function.
    return [
        reconstruct,
        (reconstruct, "numpy.core.multiarray._reconstruct"),
        np.ndarray,
        np.dtype,
        type(np.dtype(np.uint32)),
    ]


def load_train_state(path: str | Path, mmap: bool = False) -> dict[str, Any]:
    """``train_state.pt`` of checkpoint ``path``, read with ``weights_only=True``: no code can run.

    ``mmap``: map the tensors instead of reading them (a cheap check that the file is whole and safe).
    Raises `CorruptCheckpoint` (a ValueError) for a truncated or damaged file or one holding other objects.
    """
    file = Path(path) / "train_state.pt"
    try:
        with torch.serialization.safe_globals(_legacy_safe_globals()):
            return torch.load(file, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        # torch's message is a paragraph; the line naming the object (e.g. "GLOBAL posix.system") is the one to show
        lines = [line for line in str(e).splitlines() if "GLOBAL" in line or "Unsupported" in line]
        first = lines[0].strip().rstrip(".") if lines else type(e).__name__
        raise CorruptCheckpoint(
            f"{file}: refused: it holds Python objects other than tensors and plain data ({first[:160]}), which "
            "could run code when loaded; only use training checkpoints written by cerebras-gpt from people you "
            "trust, or start from its model/ directory with --init-from DIR/model"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, KeyError, ValueError) as e:
        if isinstance(e, FileNotFoundError):
            raise CorruptCheckpoint(f"{file}: missing; the checkpoint is incomplete, resume from another one") from None
        first = str(e).splitlines()[0][:160] if str(e) else ""
        raise CorruptCheckpoint(
            f"{file}: unreadable ({type(e).__name__}: {first}); the file is truncated or "
            "damaged: resume from an earlier checkpoint"
        ) from None


class _DCPMetadataUnpickler(pickle.Unpickler):
    """Reads a DCP ``.metadata`` file (a pickle) allowing only the classes torch writes there."""

    ALLOWED = {
        ("pathlib", "PosixPath"),
        ("pathlib", "WindowsPath"),
        ("pathlib", "PurePosixPath"),
        ("torch", "Size"),
        ("torch.serialization", "_get_layout"),
        ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module == "torch.distributed.checkpoint.metadata" and not name.startswith("__"):
            found = super().find_class(module, name)
            if isinstance(found, type):
                return found
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in DCP metadata")


def check_dcp_metadata(dcp_dir: str | Path) -> None:
    """Refuse a sharded checkpoint whose ``.metadata`` pickle holds anything but DCP's own metadata classes.

    torch.distributed.checkpoint reads that file with plain `pickle.load`; checking it first with an
    allow-list means a crafted file is refused before it can run code.
    """
    file = Path(dcp_dir) / ".metadata"
    try:
        with file.open("rb") as f:
            _DCPMetadataUnpickler(f).load()
    except pickle.UnpicklingError as e:
        raise CorruptCheckpoint(
            f"{file}: refused: {e} (it could run code when loaded); only use training "
            "checkpoints written by cerebras-gpt from people you trust"
        ) from None
    except (OSError, EOFError, ValueError, AttributeError, ImportError, IndexError, TypeError) as e:
        raise CorruptCheckpoint(
            f"{file}: unreadable ({type(e).__name__}: {e}); the sharded checkpoint is "
            "incomplete or damaged: resume from an earlier checkpoint"
        ) from None


def check_model_file(path: str | Path) -> None:
    """Raise `CorruptCheckpoint` unless checkpoint ``path``'s model/model.safetensors has a readable header."""
    from safetensors import safe_open

    file = Path(path) / "model" / "model.safetensors"
    if not file.exists():
        return  # sharded (dcp/) checkpoints may keep the model elsewhere; load() reports what is missing
    try:
        with safe_open(str(file), framework="pt") as f:
            keys = list(f.keys())
            if keys:
                f.get_slice(keys[-1])
        size = file.stat().st_size
        with file.open("rb") as f:
            header = int.from_bytes(f.read(8), "little")
            f.seek(8)
            meta = json.loads(f.read(header))
        end = max((v["data_offsets"][1] for k, v in meta.items() if k != "__metadata__"), default=0)
        if 8 + header + end > size:
            raise ValueError(f"{size} bytes, the header says {8 + header + end}")
    except Exception as e:  # noqa: BLE001 - any failure to read the file means it is damaged
        raise CorruptCheckpoint(f"{file}: unreadable ({e}); the file is truncated or damaged") from None


def latest_valid_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest checkpoint of ``out_dir`` whose files read back; a damaged newer one is skipped with a warning."""
    found = list_checkpoints(out_dir)
    for path in reversed(found):
        try:
            load_train_state(path, mmap=True)
            check_model_file(path)
            _check_run_config(path)
            if (path / "dcp").is_dir():
                check_dcp_metadata(path / "dcp")
            return path
        except CorruptCheckpoint as e:
            log.warning("skipping checkpoint %s: %s; falling back to the previous complete checkpoint", path, e)
    if found:
        raise ValueError(
            f"no checkpoint in {checkpoint_dir(out_dir)} reads back (all {len(found)} are damaged); "
            "start over with --resume never --overwrite, or restore the files"
        )
    return None


def _check_run_config(path: Path) -> None:
    try:
        read_run_config(path)
    except (OSError, ValueError) as e:
        raise CorruptCheckpoint(
            f"{Path(path) / 'run_config.json'}: unreadable ({e}); the checkpoint is damaged"
        ) from None


def _write_train_state(state: dict[str, Any], path: Path) -> None:
    with path.open("wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def _interrupts_deferred():
    """Ctrl-C during a checkpoint write takes effect once the checkpoint is in place: torch's writer turns an
    interrupt inside it into a misleading "unexpected pos" write error, and the run would lose that step."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


@_interrupts_deferred()
def save(
    out_dir: str | Path,
    step: int,
    model: nn.Module,
    raw_model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    run_config: dict[str, Any],
    keep_last: int,
    sharded: bool,
    is_main: bool,
    tokenizer=None,
) -> Path | None:
    """Write checkpoint ``step`` (collective under torchrun: every rank calls it); returns its path.
    A Ctrl-C meanwhile is raised once the checkpoint is complete.

    Args:
        model: the model as trained (DDP/FSDP2-wrapped or plain).
        raw_model: the unwrapped `GPT` (its ``config`` and, for unsharded runs, its state).
        state: step, tokens, loader, sparsity and counters to restore; RNG states are added here.
        sharded: FSDP2: model and optimizer go to ``dcp/`` through torch.distributed.checkpoint.
        tokenizer: saved with ``model/`` (None: GPT-2's).
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
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_state_dict

        msd, osd = get_state_dict(model, optimizer)
        dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(tmp / "dcp"))
        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if is_main:
            export = GPT(raw_model.config, init_weights=False)
            export.load_state_dict(full, strict=False)
            export.save_pretrained(tmp / "model", tokenizer=tokenizer)
    elif is_main:
        raw_model.save_pretrained(tmp / "model", tokenizer=tokenizer)
        state["model"] = {k: v.detach().cpu() for k, v in raw_model.state_dict().items()}
        state["optimizer"] = optimizer.state_dict()
    if is_main:
        try:
            _write_train_state(_plain(state), tmp / "train_state.pt")
            (tmp / "run_config.json").write_text(json.dumps(run_config, indent=2, default=str) + "\n")
            atomic.replace_dir(tmp, final)  # a same-step checkpoint is removed only once this one is in place
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise _save_failed(e, final) from None
        except RuntimeError as e:  # torch's C++ writer reports ENOSPC as "basic_ios::clear" or "file write failed"
            shutil.rmtree(tmp, ignore_errors=True)
            if "write" in str(e) or "basic_ios" in str(e):
                raise _save_failed(OSError(_guess_errno(root), str(e)), final) from None
            raise
        for old in list_checkpoints(out_dir)[:-keep_last] if keep_last > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    distributed.barrier()
    return final


class CheckpointManager:
    """One run's checkpoints: where they go, how many are kept, whether they are sharded, and what is in them.

    Built once per run with the model (as trained and unwrapped), the optimizer, the run config and the
    tokenizer, so that a save is ``manager.save(step, state)``, with ``state`` the run's counters, loader
    and sparsity state (RNG states are added by `save`). The files are those of the module docstring.

    Args:
        out_dir: the run directory (checkpoints go to ``out_dir/checkpoints``).
        model: the model as trained (DDP/FSDP2-wrapped or plain).
        raw_model: the unwrapped `GPT` (its ``config`` and, for unsharded runs, its state).
        optimizer: saved with the model.
        run_config: written as ``run_config.json``.
        keep_last: checkpoints kept (0: all).
        sharded: FSDP2: model and optimizer go to ``dcp/`` through torch.distributed.checkpoint.
        is_main: whether this rank writes the files every rank shares.
        tokenizer: saved with ``model/`` (None: GPT-2's).
    """

    def __init__(
        self,
        out_dir: str | Path,
        model: nn.Module,
        raw_model: nn.Module,
        optimizer: torch.optim.Optimizer,
        run_config: dict[str, Any],
        *,
        keep_last: int = 0,
        sharded: bool = False,
        is_main: bool = True,
        tokenizer: Any = None,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.model, self.raw_model, self.optimizer = model, raw_model, optimizer
        self.run_config, self.keep_last, self.sharded = run_config, keep_last, sharded
        self.is_main, self.tokenizer = is_main, tokenizer

    def save(self, step: int, state: dict[str, Any]) -> Path | None:
        """Write checkpoint ``step`` (collective under torchrun); returns its path."""
        return save(
            self.out_dir,
            step,
            self.model,
            self.raw_model,
            self.optimizer,
            state,
            self.run_config,
            self.keep_last,
            sharded=self.sharded,
            is_main=self.is_main,
            tokenizer=self.tokenizer,
        )

    def load(self, path: str | Path) -> dict[str, Any]:
        """Restore model and optimizer from checkpoint ``path``; returns the rest of its state."""
        return load(path, self.model, self.raw_model, self.optimizer)

    def latest(self) -> Path | None:
        """The newest checkpoint of this run that reads back (see `latest_valid_checkpoint`)."""
        return latest_valid_checkpoint(self.out_dir)

    def checkpoints(self) -> list[Path]:
        """Complete checkpoints of this run, oldest first."""
        return list_checkpoints(self.out_dir)


def _guess_errno(root: Path) -> int:
    if not os.access(root, os.W_OK):
        return errno.EROFS
    return errno.ENOSPC if shutil.disk_usage(root).free < (64 << 20) else errno.EIO


def _save_failed(error: OSError, final: Path) -> OSError:
    previous = [p.name for p in list_checkpoints(final.parent.parent) if p != final]
    kept = f"the previous checkpoint {previous[-1]} is intact" if previous else "no earlier checkpoint exists"
    return OSError(
        error.errno,
        f"cannot write checkpoint {str(final)!r}: {atomic.describe_os_error(error)}; "
        f"{kept}; free space (or make the directory writable) and rerun to resume",
    )


def load(
    path: str | Path, model: nn.Module, raw_model: nn.Module, optimizer: torch.optim.Optimizer | None
) -> dict[str, Any]:
    """Restore model (and optimizer) from checkpoint ``path`` in place; returns the rest of its state.

    A sharded (``dcp/``) checkpoint loads onto any number of ranks, sharded or not.
    """
    path = Path(path)
    state = load_train_state(path)
    if (path / "dcp").is_dir():
        import torch.distributed.checkpoint as dcp

        check_dcp_metadata(path / "dcp")
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
    return any(is_dtensor(p) for p in model.parameters())


def read_run_config(path: str | Path) -> dict[str, Any]:
    return json.loads((Path(path) / "run_config.json").read_text())
