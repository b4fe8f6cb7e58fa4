"""--logger: metrics.csv beside metrics.jsonl, Weights & Biases in offline mode, TensorBoard only when chosen."""

from __future__ import annotations

import csv
import json

import pytest

from cerebras_gpt.train.config import TrainConfig
from cerebras_gpt.train.loop import train


def _cfg(out_dir, data_dir, **kw) -> TrainConfig:
    return TrainConfig(
        model="debug-tiny",
        data_dir=str(data_dir),
        steps=4,
        batch_size=4,
        seq_len=32,
        out_dir=str(out_dir),
        progress=False,
        eval_interval=2,
        eval_batches=2,
        warmup_steps=1,
        **kw,
    )


def test_csv_logger_mirrors_the_jsonl_and_tensorboard_is_left_out(tmp_path, data_dir):
    out = tmp_path / "run"
    train(_cfg(out, data_dir, logger=["csv"]))
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [int(r["step"]) for r in rows] == [r["step"] for r in records] == [1, 2, 3, 4]
    assert all(float(r["loss"]) == rec["loss"] for r, rec in zip(rows, records))
    assert rows[1]["val_loss"] and float(rows[1]["val_loss"]) == records[1]["val_loss"] and rows[0]["val_loss"] == ""
    assert not (out / "tensorboard").exists()


def test_csv_is_truncated_with_the_jsonl_on_resume(tmp_path, data_dir):
    out = tmp_path / "run"
    train(_cfg(out, data_dir, logger=["csv"], stop_at_step=2, checkpoint_interval=2))
    with (out / "metrics.jsonl").open("a") as f:  # a record written after the last checkpoint, then a crash
        f.write(json.dumps({"step": 3, "tokens": 384, "loss": 9.9}) + "\n")
    with (out / "metrics.csv").open("a") as f:
        f.write("3,384,9.9,,,,,,,\n")
    train(_cfg(out, data_dir, logger=["csv"], checkpoint_interval=2))
    steps = [int(r["step"]) for r in csv.DictReader((out / "metrics.csv").open())]
    assert steps == [1, 2, 3, 4]


def test_wandb_logger_offline(tmp_path, data_dir, monkeypatch):
    pytest.importorskip("wandb", reason="the wandb extra is not installed (pip install 'cerebras-gpt[wandb]')")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    train(_cfg(out, data_dir, logger=["wandb", "tensorboard"]))
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb")), list((out / "wandb").iterdir())
    assert (out / "tensorboard").is_dir()
