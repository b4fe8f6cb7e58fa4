"""Sweeps on Optuna: the study in SQLite (or any storage URL), two workers sharing it, a worker killed
mid-trial whose trial is run again with the same settings, TPE proposals. Real processes, real studies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from cerebras_gpt.experiments.sweep import SweepConfig, read_results, run_sweep, trial_id, trial_settings  # noqa: E402

BASE = """\
model: debug-tiny
seq_len: 32
batch_size: 4
steps: 4
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

    out = tmp_path_factory.mktemp("optuna-data")
    text = out / "shakespeare.txt"
    text.write_text((shared_data / "tinyshakespeare.txt").read_text()[:40_000])
    prepare([str(text)], out / "prepared", paragraphs=True, val_fraction=0.1, workers=1, progress=False)
    return out / "prepared"


def _sweep_cmd(base: Path, out: Path, data_dir: Path, grid: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "cerebras_gpt", "sweep", "--base", str(base), "--out", str(out),
        "--set", f"data_dir={data_dir}", "--grid", grid, *extra,
    ]  # fmt: skip


def _study(out: Path):
    return optuna.load_study(study_name=out.name, storage=f"sqlite:///{out / 'study.db'}")


def _complete_ids(out: Path) -> list[str]:
    return [trial_id(t.params) for t in _study(out).get_trials(states=(optuna.trial.TrialState.COMPLETE,))]


@pytest.mark.slow
def test_worker_killed_mid_trial_is_retried_with_its_settings_and_nothing_runs_twice(tmp_path, data_dir):
    base = tmp_path / "base.yaml"
    base.write_text(BASE)
    out = tmp_path / "sweep"
    grid = "lr=1e-3,2e-3,4e-3"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        _sweep_cmd(base, out, data_dir, grid), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
    )
    # Kill once the second trial has written a checkpoint: it is mid-run, RUNNING in the study.
    cfg = SweepConfig(out=str(out), base=str(base), set=[f"data_dir={data_dir}"], grid=[grid])
    ids = [trial_id(s) for s in trial_settings(cfg)]
    deadline = time.time() + 300
    while proc.poll() is None:
        started = [t for t in ids if list((out / "trials" / t).glob("checkpoints/*/train_state.pt"))]
        if len(read_results(out)) >= 1 and len(started) >= 2:
            break
        assert time.time() < deadline, "the second trial did not start in time"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first_done = [r["trial"] for r in read_results(out)]
    running = [trial_id(t.params) for t in _study(out).get_trials(states=(optuna.trial.TrialState.RUNNING,))]
    assert len(first_done) == 1 and len(running) == 1, proc.stderr.read().decode()[-2000:]
    killed = running[0]
    done_dir_files = sorted(p.name for p in (out / "trials" / first_done[0]).rglob("*"))

    rerun = subprocess.run(_sweep_cmd(base, out, data_dir, grid), capture_output=True, text=True, env=env, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    study = _study(out)
    failed = [trial_id(t.params) for t in study.get_trials(states=(optuna.trial.TrialState.FAIL,))]
    assert failed == [killed]  # the killed attempt, failed by the next worker (its process was gone) ...
    complete = _complete_ids(out)
    assert sorted(complete) == sorted(ids)  # ... and run again with the same settings: every trial once
    rows = read_results(out)
    assert sorted(r["trial"] for r in rows) == sorted(ids) and all(r["status"] == "ok" for r in rows)
    # The finished trial was not trained again (its directory is as it was).
    assert sorted(p.name for p in (out / "trials" / first_done[0]).rglob("*")) == done_dir_files
    best = json.loads((out / "best.json").read_text())["best"]
    assert best["metrics"]["val_loss"] == min(r["metrics"]["val_loss"] for r in rows)


@pytest.mark.slow
def test_two_workers_share_one_sqlite_study(tmp_path, data_dir):
    base = tmp_path / "base.yaml"
    base.write_text(BASE.replace("steps: 4", "steps: 2").replace("checkpoint_interval: 1", "checkpoint_interval: 0"))
    out = tmp_path / "sweep"
    grid = "lr=1e-3,2e-3,3e-3,4e-3,5e-3,6e-3"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    workers = [
        subprocess.Popen(
            # At most 3 trials each, so that neither can take all 6 before the other starts.
            _sweep_cmd(base, out, data_dir, grid, "--max-trials", "3"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    for w in workers:
        _, err = w.communicate(timeout=600)
        assert w.returncode == 0, err[-2000:]
    cfg = SweepConfig(out=str(out), base=str(base), set=[f"data_dir={data_dir}"], grid=[grid])
    ids = [trial_id(s) for s in trial_settings(cfg)]
    complete = _complete_ids(out)
    assert sorted(complete) == sorted(ids)  # every trial once, none twice
    rows = read_results(out)
    assert sorted(r["trial"] for r in rows) == sorted(ids)
    pids = {t.user_attrs["worker"]["pid"] for t in _study(out).get_trials(states=(optuna.trial.TrialState.COMPLETE,))}
    assert pids == {w.pid for w in workers}  # both took trials


def test_storage_study_and_tpe_sampler(tmp_path):
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    cfg = SweepConfig(
        out=str(tmp_path / "sweep"),
        random=["lr=loguniform:1e-4:1e-1", "width=choice:32,64"],
        trials=6,
        sampler="tpe",
        storage=url,
        study="my-study",
        seed=3,
        heartbeat=2,
    )
    seen = []

    def fake_trial(settings, trial_dir):  # a quick objective with its minimum at lr = 1e-2
        seen.append(settings)
        import math

        return {"val_loss": (math.log10(settings["lr"]) + 2) ** 2 + settings["width"] / 1000}

    result = run_sweep(cfg, trial_fn=fake_trial, progress=False)
    assert len(result.ran) == 6 and not (tmp_path / "sweep" / "study.db").exists()
    study = optuna.load_study(study_name="my-study", storage=url)
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 6
    assert study.best_value == min(r["metrics"]["val_loss"] for r in result.rows)
    assert all(1e-4 <= s["lr"] <= 1e-1 and s["width"] in (32, 64) for s in seen)
    assert json.loads((tmp_path / "sweep" / "best.json").read_text())["best"]["metrics"]["val_loss"] == study.best_value
    again = run_sweep(cfg, trial_fn=fake_trial, progress=False)  # the study has its 6: nothing more runs
    assert again.ran == [] and len(seen) == 6


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"grid": ["lr=1,2"], "sampler": "tpe"}, "needs --random axes"),
        ({"random": ["lr=uniform:1:2"], "trials": 2, "sampler": "grid"}, "--grid axes only"),
        ({"grid": ["lr=1,2"], "heartbeat": 0}, "heartbeat=0"),
    ],
)
def test_bad_sampler_settings_are_clear(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SweepConfig(**kwargs).validate()


def test_tpe_on_a_space_smaller_than_its_trials_stops(tmp_path):
    """Two possible settings and --trials 5: the duplicates are told from the record, the sweep ends."""
    cfg = SweepConfig(out=str(tmp_path / "sweep"), random=["width=choice:32,64"], trials=5, sampler="tpe")
    runs = []

    def fake_trial(settings, trial_dir):
        runs.append(settings["width"])
        return {"val_loss": settings["width"] / 100}

    result = run_sweep(cfg, trial_fn=fake_trial, progress=False)
    assert sorted(runs) == [32, 64] and result.best["settings"] == {"width": 32}


def test_trial_orphaned_before_its_worker_wrote_its_name_is_retried(tmp_path):
    """A worker killed between taking a trial and naming itself leaves a RUNNING trial without a worker:
    in the sweep's own study the next worker fails it and runs its settings at once."""
    from cerebras_gpt.experiments.sweep import _distributions, open_study

    cfg = SweepConfig(out=str(tmp_path / "sweep"), grid=["lr=1e-3,2e-3"], max_trials=0)
    run_sweep(cfg, trial_fn=lambda s, d: {"val_loss": s["lr"]}, progress=False)  # plans and queues both
    # Taken from the queue as a worker takes it (its settings fixed), then "killed": no name, no heartbeat.
    orphan = open_study(cfg).ask(fixed_distributions=_distributions(cfg))
    cfg.max_trials = None
    ran = []

    def fake_trial(settings, trial_dir):
        ran.append(settings["lr"])
        return {"val_loss": settings["lr"]}

    result = run_sweep(cfg, trial_fn=fake_trial, progress=False)
    assert sorted(ran) == [1e-3, 2e-3] and result.pending == []
    study = _study(tmp_path / "sweep")
    assert [t.number for t in study.get_trials(states=(optuna.trial.TrialState.FAIL,))] == [orphan.number]
    assert sorted(_complete_ids(tmp_path / "sweep")) == sorted(trial_id(s) for s in trial_settings(cfg))
