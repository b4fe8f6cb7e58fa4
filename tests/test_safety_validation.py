"""Values that cannot be right are refused up front: numeric options, altered shards, out-of-vocabulary tokens."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cerebras_gpt.data import verify
from cerebras_gpt.train.config import TrainConfig
from cerebras_gpt.train.loop import train
from cerebras_gpt.train.validate import check_numbers


@pytest.fixture
def data_dir(tmp_path, shared_data) -> Path:
    from cerebras_gpt.data.prepare import prepare

    (tmp_path / "small.txt").write_text((shared_data / "tinyshakespeare.txt").read_text()[:20000])
    prepare(
        [str(tmp_path / "small.txt")], tmp_path / "data", paragraphs=True, val_fraction=0.1, workers=1, progress=False
    )
    return tmp_path / "data"


@pytest.mark.parametrize(
    "field, value, named",
    [
        ("lr", float("inf"), "--lr inf is out of range: it must be a finite number >= 0"),
        ("lr", float("nan"), "--lr nan is out of range"),
        ("min_lr_ratio", 1.5, "--min-lr-ratio 1.5 is out of range: it must be a finite number >= 0 and <= 1"),
        ("checkpoint_interval", -1, "--checkpoint-interval -1 is out of range: it must be an integer >= 0"),
        ("grad_clip", -1.0, "--grad-clip -1.0 is out of range"),
        ("warmup_steps", -5, "--warmup-steps -5 is out of range"),
        ("seq_len", 0, "--seq-len 0 is out of range: it must be an integer >= 1"),
        ("steps", 2.5, "--steps 2.5 must be an integer >= 1"),
        ("weight_decay", float("-inf"), "--weight-decay -inf is out of range"),
        ("betas", (0.9, 1.5), "--betas [0.9, 1.5] must be two finite numbers >= 0 and < 1"),
    ],
)
def test_each_bad_number_is_named_with_its_range(field, value, named):
    with pytest.raises(ValueError) as info:
        check_numbers(TrainConfig(**{field: value}))
    assert named in str(info.value)


def test_all_problems_are_reported_at_once_before_anything_is_written(tmp_path):
    cfg = TrainConfig(lr=float("inf"), min_lr_ratio=2.0, grad_clip=-1, out_dir=str(tmp_path / "run"))
    with pytest.raises(ValueError) as info:
        train(cfg)
    assert all(flag in str(info.value) for flag in ("--lr", "--min-lr-ratio", "--grad-clip"))
    assert not (tmp_path / "run").exists()


def test_finetune_numbers_go_through_the_same_check():
    from cerebras_gpt.finetune.run import FinetuneArgs

    with pytest.raises(ValueError) as info:
        FinetuneArgs(model="m", data="d.jsonl", val_fraction=1.5, epochs=0, lr=float("inf")).check()
    message = str(info.value)
    assert "--val-fraction 1.5" in message and "--epochs 0" in message and "--lr inf" in message


def test_cli_infinite_lr_is_one_line(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cerebras_gpt",
            "train",
            "--model",
            "debug-tiny",
            "--lr",
            "inf",
            "--min-lr-ratio",
            "2",
            "--out",
            str(tmp_path / "run"),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--lr inf is out of range" in proc.stderr and "--min-lr-ratio 2.0" in proc.stderr


def test_altered_shard_is_caught_by_its_checksum(data_dir):
    verify.verify_prepared(data_dir, 50257)
    shard = data_dir / "train_00000.bin"
    tokens = np.fromfile(shard, dtype=np.uint16)
    tokens[10] = (int(tokens[10]) + 1) % 50000  # same size, different bytes
    tokens.tofile(shard)
    with pytest.raises(ValueError, match=r"train_00000.bin: sha256 .* differs from meta.json"):
        verify.verify_prepared(data_dir, 50257)


def test_resized_shard_is_caught_by_its_size(data_dir):
    shard = data_dir / "train_00000.bin"
    shard.write_bytes(shard.read_bytes()[:-2])
    with pytest.raises(ValueError, match="bytes, but meta.json says"):
        verify.verify_prepared(data_dir)


def test_hashes_are_computed_once_then_cached(data_dir, monkeypatch):
    verify.verify_prepared(data_dir, 50257)
    calls = []
    original = verify._hash_and_max
    monkeypatch.setattr(verify, "_hash_and_max", lambda *a: calls.append(a) or original(*a))
    verify.verify_prepared(data_dir, 50257)
    assert calls == []  # size and mtime unchanged: the cached result stands
    shard = data_dir / "val_00000.bin"
    shard.write_bytes(shard.read_bytes())  # rewritten (new mtime): checked again
    verify.verify_prepared(data_dir, 50257)
    assert [Path(c[0]).name for c in calls] == ["val_00000.bin"]


def test_tokens_outside_the_vocabulary_are_an_error_not_an_index_error(tmp_path, data_dir):
    largest = max(verify.verify_prepared(data_dir).values())
    cfg = TrainConfig(
        model="debug-tiny",
        model_overrides={"vocab_size": str(largest)},
        data_dir=str(data_dir),
        steps=2,
        batch_size=2,
        seq_len=16,
        out_dir=str(tmp_path / "run"),
        progress=False,
        tensorboard=False,
    )
    with pytest.raises(ValueError, match=f"token id {largest} is outside the model's vocabulary \\({largest} ids\\)"):
        train(cfg)
