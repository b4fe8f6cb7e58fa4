"""Checkpoint safety: no code runs from a crafted train_state.pt, damaged checkpoints fall back, full disks say so."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from cerebras_gpt.train import checkpoint
from cerebras_gpt.train.config import TrainConfig
from cerebras_gpt.train.loop import train


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, shared_data) -> Path:
    from cerebras_gpt.data.prepare import prepare

    root = tmp_path_factory.mktemp("safety_ckpt")
    (root / "small.txt").write_text((shared_data / "tinyshakespeare.txt").read_text()[:40000])
    prepare([str(root / "small.txt")], root / "data", paragraphs=True, val_fraction=0.1, workers=1, progress=False)
    return root / "data"


def _cfg(out_dir, data_dir, **kw) -> TrainConfig:
    base = dict(
        model="debug-tiny",
        data_dir=str(data_dir),
        steps=4,
        batch_size=2,
        seq_len=16,
        out_dir=str(out_dir),
        progress=False,
        tensorboard=False,
        eval_batches=1,
        warmup_steps=1,
        checkpoint_interval=2,
    )
    base.update(kw)
    return TrainConfig(**base)


class _Payload:
    """Unpickling this runs ``touch MARKER``: what a hostile train_state.pt would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _plant_payload(ckpt: Path, marker: Path) -> None:
    torch.save({"step": 2, "evil": _Payload(marker)}, ckpt / "train_state.pt")


def test_saved_state_loads_with_weights_only(tmp_path, data_dir):
    train(_cfg(tmp_path / "run", data_dir))
    for ckpt in checkpoint.list_checkpoints(tmp_path / "run"):
        state = torch.load(ckpt / "train_state.pt", map_location="cpu", weights_only=True)  # no safe globals needed
        assert state["step"] in (2, 4) and isinstance(state["rng"]["numpy"][1], torch.Tensor)


def test_crafted_pickle_runs_nothing_on_resume_or_init(tmp_path, data_dir):
    run = tmp_path / "run"
    train(_cfg(run, data_dir, steps=2, checkpoint_interval=0))
    ckpt = checkpoint.latest_checkpoint(run)
    marker = tmp_path / "pwned"
    _plant_payload(ckpt, marker)

    with pytest.raises(ValueError, match="refused: it holds Python objects other than tensors .*posix.system"):
        train(_cfg(tmp_path / "other", data_dir, resume=str(ckpt)))
    with pytest.raises(ValueError, match="refused: it holds Python objects"):
        train(_cfg(tmp_path / "init", data_dir, init_from=str(ckpt)))
    with pytest.raises(ValueError, match="no checkpoint in .* reads back"):  # --resume auto: the only one is bad
        train(_cfg(run, data_dir, steps=2, checkpoint_interval=0))
    assert not marker.exists()


def test_crafted_pickle_through_the_cli_is_one_line(tmp_path, data_dir):
    run = tmp_path / "run"
    train(_cfg(run, data_dir, steps=2, checkpoint_interval=0))
    ckpt = checkpoint.latest_checkpoint(run)
    marker = tmp_path / "pwned"
    _plant_payload(ckpt, marker)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cerebras_gpt",
            "train",
            "--model",
            "debug-tiny",
            "--data-dir",
            str(data_dir),
            "--steps",
            "4",
            "--batch-size",
            "2",
            "--seq-len",
            "16",
            "--out",
            str(tmp_path / "cli"),
            "--resume",
            str(ckpt),
            "--no-progress",
            "--no-tensorboard",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "refused" in proc.stderr
    assert not marker.exists()


def test_old_numpy_rng_checkpoint_loads_through_the_safe_path(tmp_path):
    # Checkpoints written before this format pickled numpy's RNG state (an ndarray) with weights_only=False.
    (tmp_path / "step_00000001").mkdir()
    legacy = {
        "step": 1,
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": (3, (1, 2), None)},
    }
    torch.save(legacy, tmp_path / "step_00000001" / "train_state.pt")
    state = checkpoint.load_train_state(tmp_path / "step_00000001")
    assert state["step"] == 1 and np.array_equal(state["rng"]["numpy"][1], np.random.get_state()[1])
    checkpoint.set_rng_state(state["rng"] | {"python": __import__("random").getstate()})


@pytest.mark.parametrize("damage", ["train_state.pt", "model/model.safetensors"])
def test_damaged_latest_checkpoint_falls_back_to_the_previous(tmp_path, data_dir, damage, caplog):
    run = tmp_path / "run"
    reference = train(_cfg(tmp_path / "ref", data_dir, steps=6))
    train(_cfg(run, data_dir, steps=6, stop_at_step=4))  # checkpoints at steps 2 and 4
    latest = checkpoint.latest_checkpoint(run)
    assert latest.name == "step_00000004"
    file = latest / damage
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])  # truncated, as by a full disk or a crash

    result = train(_cfg(run, data_dir, steps=6))
    assert "skipping checkpoint" in caplog.text and "step_00000004" in caplog.text
    assert result["steps"] == 6 and result["final_loss"] == reference["final_loss"]  # exact resume from step 2


@pytest.mark.parametrize(
    "code, words", [(errno.ENOSPC, "no space left on device"), (errno.EROFS, "read-only file system")]
)
def test_full_or_read_only_disk_keeps_the_previous_checkpoint(tmp_path, data_dir, monkeypatch, code, words):
    run = tmp_path / "run"
    train(_cfg(run, data_dir, steps=4, stop_at_step=2, checkpoint_interval=0))
    before = {p.relative_to(run): p.read_bytes() for p in (run / "checkpoints").rglob("*") if p.is_file()}

    def fail(state, path):
        path.write_bytes(b"partial")
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(checkpoint, "_write_train_state", fail)
    with pytest.raises(OSError) as info:
        train(_cfg(run, data_dir, steps=4))
    message = str(info.value)
    assert words in message and "step_00000002 is intact" in message and "\n" not in message
    after = {p.relative_to(run): p.read_bytes() for p in (run / "checkpoints").rglob("*") if p.is_file()}
    assert after == before  # nothing half-written left, the step-2 checkpoint byte for byte the same
    monkeypatch.undo()
    assert train(_cfg(run, data_dir, steps=4))["steps"] == 4  # and the run resumes from it


def test_same_step_checkpoint_is_replaced_only_once_the_new_one_is_whole(tmp_path, data_dir, monkeypatch):
    run = tmp_path / "run"
    train(_cfg(run, data_dir, steps=2, checkpoint_interval=0))
    ckpt = checkpoint.latest_checkpoint(run)
    original = (ckpt / "train_state.pt").read_bytes()
    from cerebras_gpt import atomic

    def crash(built, target):  # the new checkpoint is complete, then the swap fails
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic, "replace_dir", crash)
    model = __import__("cerebras_gpt").GPT.from_pretrained(ckpt / "model")
    optimizer = torch.optim.AdamW(model.parameters())
    with pytest.raises(OSError, match="no space left on device"):
        checkpoint.save(run, 2, model, model, optimizer, {"step": 2}, {}, keep_last=2, sharded=False, is_main=True)
    assert (ckpt / "train_state.pt").read_bytes() == original
    assert not list((run / "checkpoints").glob(".tmp-*"))


def test_sharded_checkpoint_metadata_is_read_through_an_allow_list(tmp_path):
    import pickle

    import torch.distributed.checkpoint as dcp

    model = torch.nn.Linear(4, 4)
    with warnings.catch_warnings():  # one process, no process group: DCP warns that it assumes so
        warnings.simplefilter("ignore")
        dcp.save({"model": model.state_dict()}, checkpoint_id=str(tmp_path / "dcp"))
    checkpoint.check_dcp_metadata(tmp_path / "dcp")  # what torch writes passes

    marker = tmp_path / "pwned"
    (tmp_path / "dcp" / ".metadata").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(ValueError, match="refused: global 'posix.system' is not allowed"):
        checkpoint.check_dcp_metadata(tmp_path / "dcp")
    assert not marker.exists()
