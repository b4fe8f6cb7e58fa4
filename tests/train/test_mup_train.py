"""μP in training: the optimizer's groups carry the published LR multipliers, two gloo ranks (DDP and FSDP2)
match one process, a run killed mid-checkpoint resumes exactly, and the exported model is plain GPT-2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import kill_in_save_env

from cerebras_gpt import GPT, GPTConfig, mup
from cerebras_gpt.train.config import TrainConfig
from cerebras_gpt.train.optim import build_optimizer
from cerebras_gpt.train.recipe import build_model_config

# debug-tiny under μP: width 32 against base 256, so hidden matrices train at 8x η_base; σ_base/√m init.
ARGS = [
    "--model",
    "debug-tiny",
    "--mup",
    "--batch-size",
    "4",
    "--seq-len",
    "32",
    "--steps",
    "4",
    "--warmup-steps",
    "1",
    "--eval-batches",
    "2",
    "--no-progress",
    "--no-tensorboard",
]


def test_optimizer_groups_carry_the_published_111m_mup_multipliers():
    config = build_model_config(TrainConfig(model="Cerebras-GPT-111M", mup=True))
    assert config.use_mup and config.output_logits_scale == pytest.approx(1 / 3)
    with torch.device("meta"):
        model = GPT(config, init_weights=False)
    optimizer = build_optimizer(model, config, mup.BASE_LR, (0.9, 0.95), 1e-8, 0.1)
    lr_of = {name: g["lr"] for g in optimizer.param_groups for name in g["names"]}
    assert len(lr_of) == sum(1 for _ in model.named_parameters())
    for name, lr in lr_of.items():
        group = mup.group(name)
        if group in ("hidden", "attn_out", "ffn_out"):  # LR adjust 0.3333 (ModelZoo 2.0.2)
            assert lr / mup.BASE_LR == pytest.approx(0.3333, abs=5e-5), name
        else:
            assert lr == 6e-3, name


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, shared_data) -> Path:
    from cerebras_gpt.data.prepare import prepare

    out = tmp_path_factory.mktemp("mup-data")
    text = out / "shakespeare.txt"
    text.write_text((shared_data / "tinyshakespeare.txt").read_text()[:60_000])
    prepare([str(text)], out / "prepared", paragraphs=True, val_fraction=0.1, workers=1, progress=False)
    return out / "prepared"


def _train(out_dir, data_dir, *extra, nproc=1, env=None, check=True) -> subprocess.CompletedProcess:
    # --standalone: a local c10d rendezvous on a free port (a static one on --master-port 0 never meets).
    launcher = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc)]
        if nproc > 1
        else [sys.executable]
    )
    cmd = launcher + ["-m", "cerebras_gpt", "train", *ARGS, "--data-dir", str(data_dir), "--out", str(out_dir), *extra]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=180, env=dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    )
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _losses(out_dir) -> dict[int, float]:
    rows = [json.loads(line) for line in (Path(out_dir) / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


@pytest.fixture(scope="module")
def single(tmp_path_factory, data_dir) -> dict[int, float]:
    out = tmp_path_factory.mktemp("mup-single")
    _train(out, data_dir)
    return _losses(out)


@pytest.mark.distributed
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_mup_on_two_gloo_ranks_matches_one_process(tmp_path, data_dir, single, mode):
    _train(tmp_path, data_dir, *(["--fsdp"] if mode == "fsdp" else []), nproc=2)
    two = _losses(tmp_path)
    assert sorted(two) == sorted(single) == [1, 2, 3, 4]
    # Step 1 is the same init; steps 2-4 agree only if every rank applied the same μP per-group LRs.
    for step, loss in two.items():
        assert loss == pytest.approx(single[step], abs=1e-5), (mode, step)
    saved = json.loads((tmp_path / "model" / "config.json").read_text())
    assert saved["cerebras_gpt"]["mup_folded"] is True


def test_mup_run_killed_mid_checkpoint_resumes_exactly_and_exports_plain_gpt2(tmp_path, data_dir, single):
    from transformers import GPT2LMHeadModel

    proc = _train(tmp_path, data_dir, "--checkpoint-interval", "1", env=kill_in_save_env(3), check=False)
    assert proc.returncode == -9
    _train(tmp_path, data_dir, "--checkpoint-interval", "1")
    assert _losses(tmp_path) == single  # bitwise, after resuming from the step-2 checkpoint
    # The training checkpoint keeps the unfolded μP parameters; the model directory is folded GPT-2.
    state = torch.load(tmp_path / "checkpoints" / "step_00000004" / "train_state.pt", weights_only=False)
    config = mup.to_mup(GPTConfig.from_name("debug-tiny"))
    ours = GPT(config)
    ours.load_state_dict(state["model"])
    ours.eval()
    theirs = GPT2LMHeadModel.from_pretrained(tmp_path / "model").eval()
    ids = torch.randint(0, config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = ours(ids)
        assert (theirs(ids).logits - reference).abs().max().item() <= 1e-4 * reference.abs().max().item()
