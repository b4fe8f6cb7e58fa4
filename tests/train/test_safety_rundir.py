"""Run directories bound to their run: a changed model, data or schedule is refused, not silently resumed."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from cerebras_gpt.train import rundir
from cerebras_gpt.train.config import TrainConfig
from cerebras_gpt.train.loop import train


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, shared_data) -> Path:
    from cerebras_gpt.data.prepare import prepare

    root = tmp_path_factory.mktemp("safety_rundir")
    text = (shared_data / "tinyshakespeare.txt").read_text()
    for name, part in (("a", text[:40000]), ("b", text[40000:80000])):
        (root / f"{name}.txt").write_text(part)
        prepare([str(root / f"{name}.txt")], root / name, paragraphs=True, val_fraction=0.1, workers=1, progress=False)
    return root


def _cfg(out_dir, data_dir, **kw) -> TrainConfig:
    base = dict(
        model="debug-tiny",
        data_dir=str(data_dir),
        steps=2,
        batch_size=2,
        seq_len=16,
        out_dir=str(out_dir) if out_dir else None,
        progress=False,
        tensorboard=False,
        eval_batches=1,
        warmup_steps=1,
    )
    base.update(kw)
    return TrainConfig(**base)


def _snapshot(directory: Path) -> dict:
    return {p.relative_to(directory): p.read_bytes() for p in directory.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    "change, named",
    [
        (dict(model="debug-small"), "model 'debug-tiny' there, 'debug-small' now"),
        (dict(steps=3), "schedule.steps 2 there, 3 now"),
        ("data", "data.path"),
    ],
)
def test_a_different_run_is_refused_and_the_old_one_is_unchanged(tmp_path, corpus, change, named):
    run = tmp_path / "run"
    train(_cfg(run, corpus / "a", steps=2, stop_at_step=1))  # unfinished: a rerun would resume it
    before = _snapshot(run)
    changed = _cfg(run, corpus / "b", steps=2) if change == "data" else _cfg(run, corpus / "a", **change)
    with pytest.raises(ValueError) as info:
        train(changed)
    message = str(info.value)
    assert named in message and "--out" in message and "--resume never --overwrite" in message
    assert _snapshot(run) == before


def test_resume_never_needs_overwrite_then_starts_over(tmp_path, corpus):
    run = tmp_path / "run"
    train(_cfg(run, corpus / "a"))
    (run / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="already holds a run .* --overwrite"):
        train(_cfg(run, corpus / "a", model="debug-small", resume="never"))
    result = train(_cfg(run, corpus / "a", model="debug-small", resume="never", overwrite=True))
    assert result["steps"] == 2 and "already_complete" not in result
    assert json.loads((run / rundir.RUN_FILE).read_text())["identity"]["model"] == "debug-small"
    assert (run / "notes.txt").read_text() == "mine"  # --overwrite removes only what a run writes


def test_finished_run_rerun_reports_its_results(tmp_path, corpus, caplog):
    caplog.set_level(logging.INFO, logger="cerebras_gpt.train")
    run = tmp_path / "run"
    first = train(_cfg(run, corpus / "a"))
    again = train(_cfg(run, corpus / "a"))
    assert again["already_complete"] is True
    assert again["final_loss"] == first["final_loss"] and again["val_loss"] == first["val_loss"]
    assert "is complete (step 2 of 2)" in caplog.text


def test_default_out_dirs_are_per_run(tmp_path, corpus, monkeypatch):
    monkeypatch.chdir(tmp_path)
    one = train(_cfg(None, corpus / "a"))
    two = train(_cfg(None, corpus / "a"))
    assert one["out_dir"] != two["out_dir"]
    assert Path(one["out_dir"]).parent == Path("runs") and Path(one["out_dir"]).name.startswith("debug-tiny-")
    assert "already_complete" not in two


def test_cli_wrong_model_is_one_line(tmp_path, corpus):
    run = tmp_path / "run"
    train(_cfg(run, corpus / "a", stop_at_step=1))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cerebras_gpt",
            "train",
            "--model",
            "debug-small",
            "--data-dir",
            str(corpus / "a"),
            "--steps",
            "2",
            "--batch-size",
            "2",
            "--seq-len",
            "16",
            "--out",
            str(run),
            "--no-progress",
            "--no-tensorboard",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "holds a different run" in proc.stderr and "debug-small" in proc.stderr


def test_finetune_on_other_records_is_refused(tmp_path):
    from cerebras_gpt import GPT, GPTConfig
    from cerebras_gpt.finetune.run import FinetuneArgs, finetune

    GPT(GPTConfig.from_name("debug-tiny")).save_pretrained(tmp_path / "base")
    for name, word in (("one", "yes"), ("two", "no")):
        rows = [json.dumps({"prompt": f"q{i}:", "completion": f" {word}"}) for i in range(16)]
        (tmp_path / f"{name}.jsonl").write_text("\n".join(rows) + "\n")

    def args(data: str, **kw) -> FinetuneArgs:
        return FinetuneArgs(
            model=str(tmp_path / "base"),
            data=str(tmp_path / data),
            steps=2,
            batch_size=4,
            out_dir=str(tmp_path / "ft"),
            progress=False,
            **kw,
        )

    finetune(args("one.jsonl", stop_at_step=1))
    before = _snapshot(tmp_path / "ft")
    with pytest.raises(ValueError, match="holds a different run .*finetune.data.sha256"):
        finetune(args("two.jsonl"))
    assert _snapshot(tmp_path / "ft") == before
    finished = finetune(args("one.jsonl"))
    assert finished["steps"] == 2
    again = finetune(args("one.jsonl"))
    assert again["already_complete"] is True and again["train_loss"] == finished["train_loss"]
