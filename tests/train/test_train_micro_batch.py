"""`--micro-batch-size auto`: the largest micro-batch that fits a memory budget, probed, falling back on OOM."""

from __future__ import annotations

import logging

import pytest
import torch

from cerebras_gpt.config import PRESETS
from cerebras_gpt.train import micro_batch
from cerebras_gpt.train.config import TrainConfig
from cerebras_gpt.train.loop import train

TINY = PRESETS["debug-tiny"]
CPU = torch.device("cpu")


def test_the_estimate_grows_with_the_micro_batch_and_counts_the_optimizer_states():
    one, four = (micro_batch.step_memory_bytes(TINY, m, 64) for m in (1, 4))
    assert micro_batch.step_memory_bytes(TINY, 0, 64) == 16 * TINY.num_params()
    assert four - one == 3 * (one - 16 * TINY.num_params())
    # 111M at 2048 tokens, fp32: 1.78 GB of states, ~107 MB of activations a layer, 1.2 GB of logits.
    gb = micro_batch.step_memory_bytes(PRESETS["Cerebras-GPT-111M"], 1, 2048) / 1e9
    assert 3.5 < gb < 4.5
    assert micro_batch.divisors_descending([12, 18]) == [6, 3, 2, 1]


def test_auto_picks_the_largest_micro_batch_within_the_budget_and_probes_it():
    budget = (micro_batch.step_memory_bytes(TINY, 2, 32) + micro_batch.step_memory_bytes(TINY, 4, 32)) // 2
    probed = []
    chosen, how = micro_batch.choose_micro_batch(
        TINY, [8], 32, CPU, "float32", budget=budget, probe=lambda m: probed.append(m)
    )
    assert chosen == 2 and probed == [2] and "auto" in how and "probed" in how
    # The real probe: one forward and backward on this CPU.
    assert micro_batch.choose_micro_batch(TINY, [8], 32, CPU, "float32", budget=budget)[0] == 2


def test_an_out_of_memory_probe_falls_back_to_the_next_smaller_size():
    def probe(m: int) -> None:
        if m > 1:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")

    assert micro_batch.choose_micro_batch(TINY, [4], 32, CPU, "float32", budget=10**12, probe=probe)[0] == 1

    def broken(m: int) -> None:
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")  # a bug, not memory: not swallowed

    with pytest.raises(RuntimeError, match="shapes"):
        micro_batch.choose_micro_batch(TINY, [4], 32, CPU, "float32", budget=10**12, probe=broken)


def test_nothing_fits_says_what_to_change():
    with pytest.raises(ValueError, match=r"micro-batch of 1 sequence of 32 tokens needs about .* GB.*--seq-len"):
        micro_batch.choose_micro_batch(TINY, [4], 32, CPU, "float32", budget=1000)


def test_a_bad_budget_variable_is_named(monkeypatch):
    monkeypatch.setenv("CEREBRAS_GPT_MEMORY_BUDGET_GB", "lots")
    with pytest.raises(ValueError, match="CEREBRAS_GPT_MEMORY_BUDGET_GB='lots'"):
        micro_batch.memory_budget(CPU)


def _run(tmp_path, data_dir, name: str, micro) -> dict:
    cfg = TrainConfig(
        model="debug-tiny",
        data_dir=str(data_dir),
        steps=2,
        batch_size=8,
        seq_len=32,
        micro_batch_size=micro,
        warmup_steps=1,
        eval_batches=1,
        out_dir=str(tmp_path / name),
        progress=False,
        tensorboard=False,
        seed=3,
    )
    return train(cfg)


def test_training_under_a_budget_accumulates_and_matches_the_same_explicit_micro_batch(
    tmp_path, data_dir, monkeypatch, caplog
):
    budget = (micro_batch.step_memory_bytes(TINY, 2, 32) + micro_batch.step_memory_bytes(TINY, 4, 32)) / 2
    monkeypatch.setenv("CEREBRAS_GPT_MEMORY_BUDGET_GB", str(budget / 1e9))
    with caplog.at_level(logging.INFO, logger="cerebras_gpt.train"):
        auto = _run(tmp_path, data_dir, "auto", "auto")
        default = _run(tmp_path, data_dir, "default", None)  # the whole batch does not fit: chosen the same way
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("micro-batch ")]
    assert len(lines) == 2 and all(
        line.startswith("micro-batch 2 per rank (auto:") and "4 accumulation" in line for line in lines
    )
    monkeypatch.delenv("CEREBRAS_GPT_MEMORY_BUDGET_GB")
    explicit = _run(tmp_path, data_dir, "explicit", 2)
    assert auto["plan"]["micro_batch"] == default["plan"]["micro_batch"] == 2
    assert auto["plan"]["accum_steps"] == 4
    assert auto["val_loss"] == pytest.approx(explicit["val_loss"], rel=1e-6)
    assert default["val_loss"] == pytest.approx(explicit["val_loss"], rel=1e-6)


def test_the_cli_and_yaml_accept_auto():
    from cerebras_gpt.commands.train import TrainArgs
    from cerebras_gpt.config_io import from_mapping, parse_args

    assert (
        parse_args(TrainArgs, ["--model", "debug-tiny", "--micro-batch-size", "auto"], "t").micro_batch_size == "auto"
    )
    assert parse_args(TrainArgs, ["--model", "debug-tiny", "--micro-batch-size", "4"], "t").micro_batch_size == 4
    assert from_mapping(TrainArgs, {"model": "debug-tiny", "micro_batch_size": "auto"}, "x").micro_batch_size == "auto"
