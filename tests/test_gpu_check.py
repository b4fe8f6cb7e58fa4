"""bench/gpu_check.py end to end on the CPU: every section runs, the GPU parts say why they were skipped,
and what a CPU can measure is measured. The script's first run on a GPU is then not its first run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ["environment", "gpu_tests", "train", "decode_serve", "distributed"]


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU behaviour; on a GPU run bench/gpu_check.py")
def test_gpu_check_runs_end_to_end_on_cpu(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--quick", "--budget-min", "5", "--out", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert set(SECTIONS) <= set(result) and result["seconds"] < 5 * 60
    # The printed table names every section.
    for name in ("environment", "gpu_tests", "train", "decode", "serve", "distributed"):
        assert f"\n{name}" in proc.stdout

    env_ = result["environment"]
    assert env_["status"] == "ok" and env_["torch"] == torch.__version__ and env_["cuda_available"] is False
    assert "no CUDA device" in env_["gpu_skipped"]

    tests = result["gpu_tests"]  # collected and all skipped, with the reason
    assert tests["status"] == "skipped" and "no CUDA device" in tests["reason"]
    assert tests["skipped"] >= 8 and tests["passed"] == tests["failed"] == tests["errors"] == 0
    assert "tests/test_cuda_paths.py" in tests["files"] and "tests/export/test_sparsity_storage.py" in tests["files"]

    train = result["train"]
    assert "need a GPU" in train["gpu_skipped"]
    shape = train["shapes"]["debug-tiny@64"]
    for impl in ("ours", "transformers"):
        assert shape[impl]["status"] == "ok" and shape[impl]["tokens_per_s"] > 0 and 0 < shape[impl]["mfu"] < 1
    assert shape["speedup"] == pytest.approx(shape["ours"]["tokens_per_s"] / shape["transformers"]["tokens_per_s"])

    ds = result["decode_serve"]
    assert "no CUDA device" in ds["gpu_skipped"]
    for batch in ("1", "16"):
        row = ds["decode"][batch]
        assert row["status"] == "ok" and row["ours_tokens_per_s"] > 0 and row["transformers_tokens_per_s"] > 0
        assert row["same_tokens"] == 1.0  # fp32 on the CPU: greedy paths agree token for token
    serve = ds["serve"]
    assert serve["status"] == "ok", serve
    assert sorted(serve["levels"], key=int) == ["1", "16", "64"]
    assert all(lv["failed"] == 0 and lv["tokens_per_s"] > 0 for lv in serve["levels"].values())

    dist = result["distributed"]
    assert dist["backend"] == "gloo" and "NCCL skipped" in dist["gpu_skipped"]
    for key in ("ddp@1", "fsdp@1"):
        assert dist["runs"][key]["status"] == "ok" and len(dist["runs"][key]["losses"]) == 2
    assert abs(dist["runs"]["fsdp@1"]["first_loss_minus_ddp"]) < 1e-4  # the same first step either way

    assert result["goals"] == {
        "train_mfu_1.3B_ge_50pct": None,
        "train_ge_1.1x_transformers_both_shapes": None,
        "decode_ge_1.3x_transformers": None,
    }


def test_gpu_check_rejects_a_bad_budget(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--budget-min", "0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "--budget-min 0.0 must be positive" in proc.stderr


def test_datasheet_peaks_by_device_name():
    from cerebras_gpt.train.metrics import datasheet_peak_flops

    assert datasheet_peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert datasheet_peak_flops("NVIDIA H200") == 989e12
    assert datasheet_peak_flops("NVIDIA H100 PCIe") == 756e12
    assert datasheet_peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert datasheet_peak_flops("NVIDIA GeForce RTX 4090") is None  # measured instead


def _load_gpu_check():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _FakeTrainer:
    """A 'model' with two blocks and a step that runs out of memory above ``limit`` rows, or fails compiled."""

    def __init__(self, limit: int, compiled_fails: bool) -> None:
        self.model = torch.nn.Module()
        self.model.transformer = torch.nn.Module()
        self.model.transformer.h = torch.nn.ModuleList([torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)])
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1)
        self.limit, self.compiled_fails, self.batches = limit, compiled_fails, []

    def step(self, batch) -> None:
        if batch.shape[0] > self.limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {batch.shape[0]} GiB")
        if self.compiled_fails and any(b._compiled_call_impl is not None for b in self.model.transformer.h):
            raise RuntimeError("InductorError: no C compiler")
        self.batches.append(batch.shape[0])


@pytest.mark.parametrize("compiled_fails", [False, True])
def test_micro_batch_search_steps_down_on_oom_and_compile_falls_back(monkeypatch, compiled_fails):
    from cerebras_gpt import GPTConfig

    gpu_check = _load_gpu_check()
    fake = _FakeTrainer(limit=6, compiled_fails=compiled_fails)
    monkeypatch.setattr(
        gpu_check,
        "build_trainer",
        lambda impl, preset, device, compile_blocks: (
            (fake.model, fake.optimizer),
            fake.step,
            GPTConfig.from_name("debug-tiny"),
        ),
    )
    row = gpu_check.bench_train_impl(
        "ours", "debug-tiny", 16, [16, 8, 4, 2], torch.device("cpu"), compile_blocks=True, warmup=1, steps=2, peak=1e12
    )
    assert [t["micro_batch"] for t in row["search"]] == [16, 8, 4]
    assert [t["fits"] for t in row["search"]] == [False, False, True] and "out of memory" in row["search"][0]["error"]
    assert row["micro_batch"] == 4 and row["tokens_per_s"] > 0 and row["mfu"] > 0
    if compiled_fails:  # recorded, then timed eagerly
        assert row["compiled"] is False and "no C compiler" in row["compile_error"]
        assert all(b._compiled_call_impl is None for b in fake.model.transformer.h)
    else:
        assert row["compiled"] is True and "compile_error" not in row
