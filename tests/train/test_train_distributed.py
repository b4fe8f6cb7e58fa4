"""Training under torchrun (2 gloo ranks, DDP and FSDP2) against one process; resume 2 ranks -> 1; SIGKILL mid-save."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import kill_in_save_env

ARGS = [
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
]


def _run(out_dir, data_dir, *extra, nproc=1, env=None, check=True) -> subprocess.CompletedProcess:
    launcher = (
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--standalone"]
        if nproc > 1
        else [sys.executable]
    )
    cmd = launcher + ["-m", "cerebras_gpt", "train", *ARGS, "--data-dir", str(data_dir), "--out", str(out_dir), *extra]
    full_env = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _losses(out_dir) -> dict[int, float]:
    rows = [json.loads(line) for line in (Path(out_dir) / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


@pytest.fixture(scope="module")
def single(tmp_path_factory, data_dir) -> dict[int, float]:
    out = tmp_path_factory.mktemp("single")
    _run(out, data_dir, "--steps", "4")
    return _losses(out)


@pytest.mark.distributed
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_ranks_match_one_process_and_resume_on_one(tmp_path, data_dir, single, mode):
    fsdp = ["--fsdp"] if mode == "fsdp" else []
    _run(tmp_path, data_dir, "--steps", "4", "--stop-at-step", "2", *fsdp, nproc=2)
    two = _losses(tmp_path)
    assert sorted(two) == [1, 2]
    for step in two:
        assert two[step] == pytest.approx(single[step], abs=1e-5)
    ckpt = tmp_path / "checkpoints" / "step_00000002"
    assert (ckpt / "dcp").is_dir() == (mode == "fsdp") and (ckpt / "model" / "config.json").exists()
    _run(tmp_path, data_dir, "--steps", "4")  # the same run, resumed on one process
    resumed = _losses(tmp_path)
    assert sorted(resumed) == [1, 2, 3, 4]
    for step in resumed:
        assert resumed[step] == pytest.approx(single[step], abs=1e-5)


def _onednn_everywhere(cache_home: Path) -> dict[str, bool]:
    """A matmul-choice cache saying "oneDNN" for every shape these runs ask about (debug-tiny: the blocks'
    largest linear 32 -> 128, the LM head 32 -> 50,257; 64 rows a rank under two ranks, 128 in one process;
    one thread, as `_run` sets), so the runs take oneDNN's matmuls wherever training can."""
    import torch

    from cerebras_gpt.train import cpu_matmul

    if not cpu_matmul.onednn_available():
        pytest.skip("this PyTorch build has no oneDNN")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        keys = [cpu_matmul.decision_key(rows, 32, 128, backward=True) for rows in (64, 128)]
        keys += [cpu_matmul.decision_key(rows, 32, 50257) for rows in (64, 128)]
        # ... and NumPy's BLAS nowhere (the loss head's three products stay with oneDNN and torch).
        numpy_keys = [
            cpu_matmul.numpy_decision_key(k, rows, 32, 50257) for k in ("nt", "nn", "tn") for rows in (64, 128)
        ]
    finally:
        torch.set_num_threads(threads)
    seeded = {**dict.fromkeys(keys, True), **dict.fromkeys(numpy_keys, False)}
    path = cache_home / "cerebras_gpt" / "cpu_matmul.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(seeded))
    return seeded


@pytest.mark.distributed
def test_two_ranks_match_one_process_with_onednn_matmuls(tmp_path, data_dir, single):
    """DDP over `OneDNNLinear` and the loss's oneDNN head: two ranks give one process's losses, and both
    give the default run's to float32 rounding; the choices were read from the cache, none measured."""
    seeded = _onednn_everywhere(tmp_path / "cache")
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    _run(tmp_path / "one", data_dir, "--steps", "4", env=env)
    _run(tmp_path / "two", data_dir, "--steps", "4", nproc=2, env=env)
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert sorted(one) == sorted(two) == [1, 2, 3, 4]
    for step in one:
        assert two[step] == pytest.approx(one[step], abs=1e-5)
        assert one[step] == pytest.approx(single[step], abs=1e-4)
    cached = json.loads((tmp_path / "cache" / "cerebras_gpt" / "cpu_matmul.json").read_text())
    assert {k: v for k, v in cached.items() if "float32" in k} == seeded


def test_exact_resume_after_sigkill_mid_save(tmp_path, data_dir, single):
    proc = _run(tmp_path, data_dir, "--steps", "4", "--checkpoint-interval", "1", env=kill_in_save_env(3), check=False)
    assert proc.returncode == -9
    ckpts = tmp_path / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == [".tmp-step_00000003", "step_00000001", "step_00000002"]
    _run(tmp_path, data_dir, "--steps", "4")
    assert _losses(tmp_path) == single  # bitwise
    assert not list(ckpts.glob(".tmp-*"))
