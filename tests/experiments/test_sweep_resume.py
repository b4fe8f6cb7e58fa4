"""A sweep of real `train` runs: interrupted (SIGKILL) and run again, it does not redo finished trials."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cerebras_gpt.experiments.sweep import SweepConfig, read_results, run_sweep, trial_id, trial_settings

BASE = """\
model: debug-tiny
seq_len: 32
batch_size: 4
steps: 3
warmup_steps: 1
eval_batches: 2
checkpoint_interval: 1
tensorboard: false
progress: false
device: cpu
"""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, shared_data) -> Path:
    from cerebras_gpt.data.prepare import prepare

    out = tmp_path_factory.mktemp("sweep-data")
    text = out / "shakespeare.txt"
    text.write_text((shared_data / "tinyshakespeare.txt").read_text()[:40_000])
    prepare([str(text)], out / "prepared", paragraphs=True, val_fraction=0.1, workers=1, progress=False)
    return out / "prepared"


def test_sweep_killed_then_resumed_does_not_redo_finished_trials(tmp_path, data_dir):
    base = tmp_path / "base.yaml"
    base.write_text(BASE)
    out = tmp_path / "sweep"
    argv = ["--base", str(base), "--out", str(out), "--set", f"data_dir={data_dir}", "--grid", "lr=1e-3,2e-3,4e-3"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "cerebras_gpt", "sweep", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    results = out / "results.jsonl"
    deadline = time.time() + 240
    while not (results.exists() and results.read_text().count("\n") >= 1) and proc.poll() is None:
        assert time.time() < deadline, "the first trial did not finish in time"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = results.read_text()
    finished = [json.loads(line)["trial"] for line in before.splitlines()]
    assert 1 <= len(finished) <= 3, proc.stderr.read().decode()[-2000:]

    cfg = SweepConfig(out=str(out), base=str(base), set=[f"data_dir={data_dir}"], grid=["lr=1e-3,2e-3,4e-3"])
    ids = [trial_id(s) for s in trial_settings(cfg)]
    result = run_sweep(cfg, progress=False)
    # A trial killed mid-run is queued again behind the ones still queued, so the order may change.
    assert result.skipped == finished and sorted(result.ran) == sorted(t for t in ids if t not in finished)
    after = results.read_text()
    assert after.startswith(before)  # recorded lines untouched
    rows = read_results(out)
    assert sorted(r["trial"] for r in rows) == sorted(ids) and all(r["status"] == "ok" for r in rows)
    assert result.best["trial"] in ids and (out / "results.csv").read_text().count("\n") == 4
    best = json.loads((out / "best.json").read_text())["best"]
    assert best["metrics"]["val_loss"] == min(r["metrics"]["val_loss"] for r in rows)

    again = run_sweep(cfg, progress=False)  # nothing left: a third run trains nothing
    assert again.ran == [] and sorted(again.skipped) == sorted(ids) and results.read_text() == after


def test_max_trials_spreads_a_sweep_over_invocations(tmp_path, data_dir):
    base = tmp_path / "base.yaml"
    base.write_text(BASE.replace("steps: 3", "steps: 1").replace("checkpoint_interval: 1", "checkpoint_interval: 0"))
    cfg = SweepConfig(
        out=str(tmp_path / "sweep"), base=str(base), set=[f"data_dir={data_dir}"], grid=["lr=1e-3,3e-3"], max_trials=1
    )
    first = run_sweep(cfg, progress=False)
    assert len(first.ran) == 1 and len(first.pending) == 1 and first.skipped == []
    second = run_sweep(cfg, progress=False)
    assert second.skipped == first.ran and len(second.ran) == 1 and second.pending == []
    assert len(read_results(cfg.out)) == 2
