"""MFU: the measured peak is cached per machine (and refreshed only upward), a training run reads it, and
the MFU it reports is at most 100%, computed with the plan's FLOPs per token."""

from __future__ import annotations

import json

import pytest
import torch

from cerebras_gpt.train import metrics
from cerebras_gpt.train.config import TrainConfig
from cerebras_gpt.train.loop import train

CPU = torch.device("cpu")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private peak cache; measurements return the next value of ``cache.values`` and are counted."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    class Measured:
        values = [100e9, 150e9, 120e9]
        calls = 0

    def fake_measure(device, dtype, n=None, repeats=5):
        Measured.calls += 1
        return Measured.values[Measured.calls - 1]

    monkeypatch.setattr(metrics, "measure_peak_flops", fake_measure)
    return Measured


def test_the_peak_is_measured_once_then_read_from_the_cache(cache):
    flops, how = metrics.measured_peak(CPU, torch.float32)
    assert (flops, cache.calls) == (100e9, 1)
    assert metrics.measured_peak(CPU, torch.float32)[0] == 100e9 and cache.calls == 1  # read, not measured
    stored = json.loads(metrics.peak_cache_path().read_text())
    key = metrics.peak_key(CPU, torch.float32)
    assert stored[key]["flops"] == 100e9 and stored[key]["gemm"] == metrics.CPU_PEAK_GEMM_N
    assert f"{torch.get_num_threads()} threads" in key and torch.__version__ in key and "float32" in key
    assert "best of 5" in how and str(metrics.peak_cache_path()) in how


def test_a_refresh_keeps_the_higher_peak(cache):
    metrics.measured_peak(CPU, torch.float32)
    assert metrics.measured_peak(CPU, torch.float32, refresh=True)[0] == 150e9  # higher: replaces
    assert metrics.measured_peak(CPU, torch.float32, refresh=True)[0] == 150e9  # 120e9 measured under load: kept
    assert cache.calls == 3 and metrics.measured_peak(CPU, torch.float32)[0] == 150e9


def test_a_damaged_cache_is_measured_again(cache):
    metrics.peak_cache_path().parent.mkdir(parents=True)
    metrics.peak_cache_path().write_text("{not json")
    assert metrics.measured_peak(CPU, torch.float32)[0] == 100e9 and cache.calls == 1


def test_mfu_is_clamped_and_uses_the_plan_flops():
    assert metrics.model_flops_utilization(1e9, 50.0, 100e9) == 0.5
    assert metrics.model_flops_utilization(1e9, 50.0, 100e9, world_size=2) == 0.25
    assert metrics.model_flops_utilization(1e9, 500.0, 100e9) == 1.0


def _cfg(out_dir, data_dir) -> TrainConfig:
    return TrainConfig(
        model="debug-tiny",
        data_dir=str(data_dir),
        steps=2,
        batch_size=2,
        seq_len=32,
        out_dir=str(out_dir),
        progress=False,
        tensorboard=False,
        eval_batches=1,
        warmup_steps=1,
        log_interval=1,
    )


def test_a_training_step_reports_mfu_at_most_100_percent_against_the_cached_peak(tmp_path, data_dir, cache, caplog):
    # A peak far below what the machine does (as a busy machine could measure) is read from the cache, not
    # measured again, and the MFU it would give (far over 100%) is reported as 100%.
    cache.values = [1e3]
    metrics.measured_peak(CPU, torch.float32)
    with caplog.at_level("INFO", logger="cerebras_gpt.train"):
        result = train(_cfg(tmp_path / "run", data_dir))
    assert cache.calls == 1
    records = metrics.read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["mfu"] for r in records if "mfu" in r] == [1.0, 1.0] and result["mfu"] == 1.0
    assert "peak 0.000 TFLOP/s for MFU (measured: best of 5" in caplog.text


def test_a_real_training_step_reports_a_real_mfu_under_100_percent(tmp_path, data_dir):
    """Against this machine's real (cached) peak: the unclamped figure is under 100% too."""
    result = train(_cfg(tmp_path / "run", data_dir))
    peak, _ = metrics.peak_flops(CPU, torch.float32)
    flops_per_token = result["plan"]["flops_per_token"]
    assert 0 < result["mfu"] <= 1.0
    assert flops_per_token * result["tokens_per_s"] / peak == pytest.approx(result["mfu"])
