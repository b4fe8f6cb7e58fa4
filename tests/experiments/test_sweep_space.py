"""Sweep search spaces, settings applied to a run config, and the results table."""

import csv
import dataclasses
import json

import pytest

from cerebras_gpt import GPTConfig
from cerebras_gpt.experiments.sweep import (
    SweepConfig,
    apply_overrides,
    best_trial,
    curves,
    read_results,
    trial_id,
    trial_settings,
    write_table,
)


@dataclasses.dataclass
class RunLike:
    lr: float = 1e-3
    steps: int = 10
    mup: bool = False
    name: str | None = None
    model: GPTConfig = dataclasses.field(default_factory=lambda: GPTConfig.from_name("debug-tiny"))


def test_grid_is_the_cartesian_product_in_order():
    cfg = SweepConfig(grid=["lr=1e-3,4e-3", "model.n_embd=32,64", "mup=true,false"])
    trials = trial_settings(cfg)
    assert len(trials) == 8
    assert trials[0] == {"lr": 1e-3, "model.n_embd": 32, "mup": True}
    assert trials[-1] == {"lr": 4e-3, "model.n_embd": 64, "mup": False}
    assert len({trial_id(t) for t in trials}) == 8


def test_random_search_is_reproducible_and_within_bounds():
    cfg = SweepConfig(
        random=["lr=loguniform:1e-4:1e-2", "steps=intuniform:5:9", "mup=choice:true,false"],
        trials=20,
        seed=3,
        grid=["model.n_layer=1,2"],
    )
    trials = trial_settings(cfg)
    assert trials == trial_settings(dataclasses.replace(cfg))  # same seed, same trials: resumable
    assert len(trials) == 40 and trials != trial_settings(dataclasses.replace(cfg, seed=4))
    assert all(1e-4 <= t["lr"] <= 1e-2 and 5 <= t["steps"] <= 9 and t["mup"] in (True, False) for t in trials)
    assert {t["model.n_layer"] for t in trials} == {1, 2}


def test_trial_ids_are_stable_and_ignore_key_order():
    assert trial_id({"lr": 0.001, "model.n_embd": 64}) == trial_id({"model.n_embd": 64, "lr": 0.001})
    assert trial_id({"lr": 0.001}) != trial_id({"lr": 0.002})
    assert trial_id({"lr": 0.001}).startswith("lr0.001-")


@pytest.mark.parametrize(
    "cfg,message",
    [
        (SweepConfig(), "nothing to sweep"),
        (SweepConfig(random=["lr=loguniform:1e-4:1e-2"]), "--trials"),
        (SweepConfig(grid=["lr"]), "KEY=VALUE"),
        (SweepConfig(grid=["lr=1", "lr=2"]), "appears twice"),
        (SweepConfig(random=["lr=gauss:1:2"], trials=2), "unknown distribution"),
        (SweepConfig(random=["lr=loguniform:0:1"], trials=2), "LOW > 0"),
        (SweepConfig(random=["lr=uniform:2:1"], trials=2), "LOW < HIGH"),
    ],
)
def test_bad_sweeps_are_clear(cfg, message):
    with pytest.raises(ValueError, match=message):
        cfg.validate()
        trial_settings(cfg)


def test_settings_apply_to_nested_run_configs_with_types_checked():
    run = apply_overrides(RunLike(), {"lr": 1, "steps": 20.0, "mup": True, "model.n_embd": 64, "name": None})
    assert run.lr == 1.0 and isinstance(run.lr, float) and run.steps == 20 and run.mup is True
    assert run.model.n_embd == 64 and run.model.n_layer == 2 and RunLike().model.n_embd == 32
    for bad, message in [
        ({"lrate": 1}, "unknown setting 'lrate'.*valid keys"),
        ({"mup": 1}, "true or false"),
        ({"lr": "fast"}, "must be a number"),
        ({"steps": 2.5}, "integer"),
        ({"lr.x": 1}, "not a section"),
        ({"model.n_embd": 33}, "not divisible"),
    ]:
        with pytest.raises(ValueError, match=message):
            apply_overrides(RunLike(), bad)


def test_table_ranks_trials_and_names_the_best(tmp_path):
    rows = [
        {"trial": "a", "settings": {"lr": 1e-3, "width": 64}, "status": "ok", "metrics": {"val_loss": 3.2, "step": 9}},
        {"trial": "b", "settings": {"lr": 4e-3, "width": 64}, "status": "ok", "metrics": {"val_loss": 2.9, "step": 9}},
        {
            "trial": "c",
            "settings": {"lr": 1.6e-2, "width": 64},
            "status": "failed",
            "metrics": {},
            "error": "val_loss is nan (diverged)",
        },
        {"trial": "d", "settings": {"lr": 1e-3, "width": 128}, "status": "ok", "metrics": {"val_loss": 3.0, "step": 9}},
    ]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"trial": "e", "sett')
    assert [r["trial"] for r in read_results(tmp_path)] == ["a", "b", "c", "d"]  # a torn last line is dropped
    write_table(tmp_path, rows, "val_loss", "min")
    with open(tmp_path / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["trial"] for r in table] == ["b", "d", "a", "c"]
    assert list(table[0])[:5] == ["trial", "status", "lr", "width", "val_loss"]
    assert json.loads((tmp_path / "best.json").read_text())["best"]["trial"] == "b"
    assert best_trial(rows, "val_loss", "max")["trial"] == "a"
    lines = curves(rows, "lr", "width", "val_loss")
    assert lines[64] == [(1e-3, 3.2), (4e-3, 2.9), (1.6e-2, float("inf"))]
