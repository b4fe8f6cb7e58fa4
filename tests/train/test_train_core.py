"""Training: schedule values, decay groups, accumulation equivalence, plan defaults, exact resume, NaN skips."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from cerebras_gpt import GPT, GPTConfig
from cerebras_gpt.train.config import TrainConfig
from cerebras_gpt.train.loop import TrainingDiverged, train
from cerebras_gpt.train.optim import build_optimizer, lr_at, param_groups
from cerebras_gpt.train.recipe import resolve


def _cfg(out_dir, data_dir, **kw) -> TrainConfig:
    base = dict(
        model="debug-tiny",
        data_dir=str(data_dir) if data_dir else None,
        steps=6,
        batch_size=4,
        seq_len=32,
        out_dir=str(out_dir),
        resume="auto",
        progress=False,
        tensorboard=False,
        eval_batches=2,
        warmup_steps=2,
    )
    base.update(kw)
    return TrainConfig(**base)


def _losses(out_dir) -> dict[int, float]:
    rows = [json.loads(line) for line in (Path(out_dir) / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def test_schedule_key_steps():
    kw = dict(peak=6e-4, warmup=100, total=1000, min_ratio=0.1)
    # The ModelZoo's LinearLR warmup from 0: LR = peak * s / W, so step 0 runs at LR 0.
    assert lr_at(0, decay="linear", **kw) == 0.0
    assert lr_at(1, decay="linear", **kw) == pytest.approx(6e-6)
    assert lr_at(99, decay="linear", **kw) == pytest.approx(6e-4 * 0.99)
    assert lr_at(100, decay="linear", **kw) == pytest.approx(6e-4)
    assert lr_at(550, decay="linear", **kw) == pytest.approx(6e-4 - 0.5 * 5.4e-4)
    assert lr_at(1000, decay="linear", **kw) == pytest.approx(6e-5)
    assert lr_at(5000, decay="linear", **kw) == pytest.approx(6e-5)
    assert lr_at(550, decay="cosine", **kw) == pytest.approx(6e-5 + 5.4e-4 * 0.5)
    assert lr_at(1000, decay="cosine", **kw) == pytest.approx(6e-5)


def test_paper_defaults_and_rule():
    plan = resolve(TrainConfig(model="Cerebras-GPT-111M"))
    assert (plan.lr, plan.global_batch, plan.seq_len, plan.decay, plan.eps) == (6e-4, 120, 2048, "linear", 1e-8)
    assert plan.warmup_steps == 1525 and plan.total_steps == 9037  # the paper's 9037 steps, 2.22e9 tokens
    assert resolve(TrainConfig(model="Cerebras-GPT-1.3B")).decay == "cosine"
    assert resolve(TrainConfig(model="Cerebras-GPT-111M", mup=True)).lr == 6e-3
    tiny = resolve(TrainConfig(model="debug-tiny", batch_size=8, seq_len=64))
    assert tiny.lr == 6e-4 and tiny.tokens == pytest.approx(20 * tiny.params, rel=1e-3)
    with pytest.raises(ValueError, match="micro_batch_size"):
        resolve(TrainConfig(model="debug-tiny", batch_size=8, micro_batch_size=3))


def test_decay_groups_and_mup_multipliers():
    model = GPT(GPTConfig.from_name("debug-tiny"))
    groups = param_groups(model, model.config, 0.1)
    decayed = {n for g in groups if g["weight_decay"] for n in g["names"]}
    plain = {n for g in groups if not g["weight_decay"] for n in g["names"]}
    assert "transformer.wte.weight" in decayed and "transformer.wpe.weight" in decayed
    assert "transformer.h.0.attn.c_attn.weight" in decayed
    assert all(n.endswith("bias") or ".ln_" in n or "ln_f" in n for n in plain) and plain
    assert "lm_head.weight" not in decayed | plain  # tied: counted once, as wte
    mup_model = GPT(GPTConfig.from_name("debug-small-muP"))
    mults = {n: g["lr_mult"] for g in param_groups(mup_model, mup_model.config, 0.1) for n in g["names"]}
    assert mults["transformer.h.0.attn.c_attn.weight"] == pytest.approx(256 / 128)
    assert mults["transformer.h.0.mlp.c_proj.weight"] == pytest.approx(1024 / 512)
    assert mults["transformer.wte.weight"] == 1.0
    frozen = GPT(GPTConfig.from_name("debug-tiny"))
    for name, p in frozen.named_parameters():
        p.requires_grad = "ln_f" in name
    opt = build_optimizer(frozen, frozen.config, 1e-3, (0.9, 0.95), 1e-8, 0.1)
    assert sum(len(g["params"]) for g in opt.param_groups) == 2


def test_accumulation_equivalence(tmp_path):
    """One batch of 8 gives the same update as 4 micro-batches of 2."""
    batch = torch.randint(0, 50257, (8, 17), generator=torch.Generator().manual_seed(1))

    class Loader:
        def __init__(self, b):
            self.b = b

        def __iter__(self):
            while True:
                for i in range(0, 8, self.b):
                    yield batch[i : i + self.b]

        def __len__(self):
            return 1

        def state_dict(self):
            return {}

    weights, records = [], []
    for micro in (8, 2):
        torch.manual_seed(0)
        model = GPT(GPTConfig.from_name("debug-tiny"))
        cfg = _cfg(
            tmp_path / f"m{micro}",
            None,
            steps=1,
            batch_size=8,
            micro_batch_size=micro,
            seq_len=16,
            warmup_steps=0,
            lr=1e-2,
        )
        result = train(cfg, model=model, train_loader=Loader(micro))
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
        assert result["steps"] == 1
        records.append(json.loads((tmp_path / f"m{micro}" / "metrics.jsonl").read_text().splitlines()[0]))
    assert records[0]["loss"] == pytest.approx(records[1]["loss"], rel=1e-6)
    assert records[0]["grad_norm"] == pytest.approx(records[1]["grad_norm"], rel=1e-5)
    # Adam's first update is lr*g/(|g|+eps): ~lr*sign(g), except where g itself is a near-cancelled sum
    # of eps size, whose rounding (the summation order of 8 rows at once vs 4 x 2, in the chunked loss's
    # head gradient too) can move the update by a fraction of lr. So: almost every element equal within
    # 1e-6, none off by 1% of lr (1e-2).
    diff = (weights[0] - weights[1]).abs()
    assert float(diff.max()) < 1e-4
    assert float((diff > 1e-6).float().mean()) < 1e-5, int((diff > 1e-6).sum())


def test_exact_resume_after_clean_stop(tmp_path, data_dir):
    full = train(_cfg(tmp_path / "full", data_dir, checkpoint_interval=3))
    first = train(_cfg(tmp_path / "split", data_dir, checkpoint_interval=3, stop_at_step=3))
    assert first["steps"] == 3
    second = train(_cfg(tmp_path / "split", data_dir, checkpoint_interval=3))
    assert second["steps"] == 6
    assert _losses(tmp_path / "full") == _losses(tmp_path / "split")  # bitwise: JSON floats round-trip
    assert full["final_loss"] == second["final_loss"]
    ckpt = Path(second["checkpoint"])
    from cerebras_gpt.hf import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(ckpt)
    assert model.config.n_layer == 2 and tok.eos_id == 50256
    assert len(list((tmp_path / "split" / "checkpoints").glob("step_*"))) == 2  # keep_last


def test_nan_losses_skipped_then_stop(tmp_path, data_dir):
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_name("debug-tiny"))
    calls = {"n": 0}

    def poison(module, args, output):
        calls["n"] += 1
        return output * float("nan") if calls["n"] in (2, 3) else output

    handle = model.lm_head.register_forward_hook(poison)
    result = train(_cfg(tmp_path / "nan", data_dir, steps=5), model=model)
    assert result["skipped_steps"] == 2 and math.isfinite(result["final_loss"])
    handle.remove()
    model.lm_head.register_forward_hook(lambda m, a, out: out * float("nan"))
    with pytest.raises(TrainingDiverged, match="lower --lr"):
        train(_cfg(tmp_path / "nan2", data_dir, steps=10, max_bad_steps=3), model=model)
