"""Training talks: the plan at start, a line per evaluation and per checkpoint, a summary with the next
commands, a warning for an empty val split, and where to resume after Ctrl-C."""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import sys
import time

from cerebras_gpt.train import report
from cerebras_gpt.train.config import TrainConfig
from cerebras_gpt.train.loop import train


def _train_cli(*args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "cerebras_gpt",
        "train",
        "--model",
        "debug-tiny",
        "--batch-size",
        "4",
        "--seq-len",
        "32",
        "--warmup-steps",
        "1",
        "--eval-batches",
        "2",
        "--no-progress",
        "--no-tensorboard",
        *args,
    ]


def test_a_run_says_its_plan_evaluations_checkpoints_and_next_steps(tmp_path, data_dir):
    out = tmp_path / "run"
    proc = subprocess.run(
        _train_cli(
            "--data-dir",
            str(data_dir),
            "--steps",
            "4",
            "--eval-interval",
            "2",
            "--checkpoint-interval",
            "2",
            "--out",
            str(out),
        ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    said = proc.stdout + proc.stderr
    assert "training plan" in said and re.search(r"^steps +4$", said, re.M) and f"run directory  {out}" in said
    evals = [line for line in said.splitlines() if " val loss " in line and line.startswith("step ")]
    assert [line.split()[1] for line in evals] == ["2/4", "4/4"]
    assert all("perplexity" in line and "tokens/s" in line and "MFU" in line for line in evals)
    assert f"step 2: checkpoint saved to {out / 'checkpoints' / 'step_00000002'}" in said
    summary = proc.stdout
    assert "trained 4 steps" in summary and f"model        {out / 'model'}" in summary
    assert f"cerebras-gpt generate --model {out / 'model'}" in summary
    assert f"cerebras-gpt eval --model {out / 'model'} --data-dir {data_dir}" in summary


def test_mfu_is_shown_at_most_100_percent():
    assert report.shown_mfu(1.7) == 1.0 and report.shown_mfu(0.25) == 0.25 and report.shown_mfu(-1) == 0.0
    assert "MFU 100.0%" in report.eval_line(3, 10, 2.0, 1000.0, 1.3)


def test_an_empty_val_split_is_warned_about(tmp_path, shared_data, caplog):
    from cerebras_gpt.data.prepare import prepare

    # The whole file as one document (no --paragraphs): the hash split sends it to train, val stays empty.
    data = tmp_path / "one-doc"
    prepare([str(shared_data / "tinyshakespeare.txt")], data, val_fraction=0.05, workers=1, progress=False)
    cfg = TrainConfig(
        model="debug-tiny",
        data_dir=str(data),
        steps=2,
        batch_size=2,
        seq_len=32,
        out_dir=str(tmp_path / "run"),
        progress=False,
        tensorboard=False,
        warmup_steps=1,
    )
    with caplog.at_level(logging.WARNING, logger="cerebras_gpt.train"):
        result = train(cfg)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("has no 32-token window" in w and "--paragraphs" in w for w in warnings), warnings
    assert result["val_loss"] is None


def test_ctrl_c_names_the_checkpoint_to_resume_from(tmp_path, data_dir):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        _train_cli(
            "--data-dir",
            str(data_dir),
            "--steps",
            "100000",
            "--eval-interval",
            "0",
            "--checkpoint-interval",
            "2",
            "--out",
            str(out),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not list((out / "checkpoints").glob("step_*")) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "Traceback" not in err, err[-3000:]
    assert "interrupted: the latest checkpoint is" in err and f"--out {out}" in err
    # Ctrl-C mostly lands while a checkpoint is written (every 2 steps here): it waits for the write, so the
    # checkpoint named is whole (torch's writer used to fail with a misleading "disk full" error instead).
    from cerebras_gpt.train import checkpoint

    latest = checkpoint.latest_valid_checkpoint(out)
    assert latest is not None and f"the latest checkpoint is {latest};" in err
