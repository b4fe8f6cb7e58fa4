"""The Trainer: set up once, trained in parts; `parallelize` wraps each block once however often it runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointWrapper

from cerebras_gpt import GPT, GPTConfig
from cerebras_gpt.model import Block
from cerebras_gpt.train import parallelize
from cerebras_gpt.train.config import TrainConfig
from cerebras_gpt.train.distributed import DistInfo
from cerebras_gpt.train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[2]


class Windows:
    """Endless (B, T+1) batches of random tokens, batch ``i`` seeded by ``i``: resumable by one number."""

    def __init__(self, batch_size: int = 4, seq_len: int = 16) -> None:
        self.batch_size, self.seq_len, self.batch = batch_size, seq_len, 0

    def __iter__(self):
        while True:
            g = torch.Generator().manual_seed(self.batch)
            self.batch += 1
            yield torch.randint(0, 512, (self.batch_size, self.seq_len + 1), generator=g)

    def __len__(self) -> int:
        return 1000

    def state_dict(self) -> dict[str, int]:
        return {"batch": self.batch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.batch = int(state["batch"])


def _cfg(out_dir, **kw) -> TrainConfig:
    base = dict(
        model="debug-tiny",
        steps=6,
        batch_size=4,
        seq_len=16,
        out_dir=str(out_dir),
        resume="never",
        progress=False,
        tensorboard=False,
        warmup_steps=2,
        log_interval=1,
        lr=1e-3,
    )
    base.update(kw)
    return TrainConfig(**base)


def _losses(out_dir) -> dict[int, float]:
    rows = [json.loads(line) for line in (Path(out_dir) / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def _weights(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_fit_in_parts_equals_one_fit(tmp_path):
    whole = Trainer(_cfg(tmp_path / "whole"), train_loader=Windows())
    whole.fit(until=6)
    parts = Trainer(_cfg(tmp_path / "parts"), train_loader=Windows())
    first = parts.fit(until=2)
    assert first["steps"] == 2 and Path(first["checkpoint"]).name == "step_00000002"
    assert parts.fit(until=4)["steps"] == 4
    assert parts.fit(until=6)["steps"] == 6
    assert parts.fit(until=9)["steps"] == 6  # never past the schedule
    assert _losses(tmp_path / "parts") == _losses(tmp_path / "whole") and len(_losses(tmp_path / "whole")) == 6
    assert torch.equal(_weights(parts.raw_model), _weights(whole.raw_model))
    result = parts.export()
    assert (tmp_path / "parts" / "model" / "config.json").exists() and result["steps"] == 6


def test_train_step_is_one_optimizer_step(tmp_path):
    trainer = Trainer(_cfg(tmp_path), train_loader=Windows())
    batch = next(iter(Windows()))
    before = _weights(trainer.raw_model).clone()
    out = trainer.train_step(batch)
    assert trainer.step == 1 and trainer.tokens == 4 * 16 and out["lr"] == 0.0  # warmup from 0: step 0 at LR 0
    assert torch.isfinite(torch.tensor(out["loss"])) and torch.equal(_weights(trainer.raw_model), before)
    trainer.train_step(batch)
    assert not torch.equal(_weights(trainer.raw_model), before)


def test_activation_checkpointing_wraps_once_and_keeps_the_losses(tmp_path):
    plain = Trainer(_cfg(tmp_path / "plain"), train_loader=Windows())
    plain.fit()
    ac = Trainer(_cfg(tmp_path / "ac", activation_checkpointing=True), train_loader=Windows())
    n_layer = ac.config.n_layer
    for until in (2, 4, 6):
        ac.fit(until=until)
        assert parallelize.checkpointed_blocks(ac.raw_model) == n_layer
        assert not any(isinstance(m, CheckpointWrapper) for b in ac.raw_model.transformer.h for m in b.children())
    assert _losses(tmp_path / "ac") == pytest.approx(_losses(tmp_path / "plain"), rel=1e-6)
    # The checkpoint holds the plain GPT-2 names (the on-disk format does not change).
    state = torch.load(Path(ac.last_checkpoint) / "train_state.pt", weights_only=True)
    assert set(state["model"]) == set(GPT(GPTConfig.from_name("debug-tiny")).state_dict())
    ac.export()
    assert all(isinstance(b, Block) for b in ac.unwrap().transformer.h)  # usable for inference again


def test_parallelize_is_idempotent():
    model = GPT(GPTConfig.from_name("debug-tiny"))
    keys = list(model.state_dict())
    for _ in range(2):
        out = parallelize.parallelize(
            model, DistInfo(), torch.device("cpu"), activation_checkpointing=True, compile=True
        )  # compiled lazily: nothing runs here
        assert out is model
    blocks = model.transformer.h
    assert all(isinstance(b, CheckpointWrapper) and isinstance(b._checkpoint_wrapped_module, Block) for b in blocks)
    assert parallelize.checkpointed_blocks(model) == len(blocks) and parallelize.is_compiled(model)
    assert parallelize.apply_activation_checkpointing(model) == 0
    assert list(model.state_dict()) == keys
    with parallelize.plain_blocks(model):
        assert all(isinstance(b, Block) for b in model.transformer.h)
        assert [n for n, _ in model.named_modules()] == [n for n, _ in GPT(model.config).named_modules()]
    assert parallelize.checkpointed_blocks(model) == len(blocks)
    parallelize.remove_compile(model)
    parallelize.remove_activation_checkpointing(model)
    assert not parallelize.is_compiled(model) and parallelize.checkpointed_blocks(model) == 0


def test_ddp_wraps_once_across_fits(tmp_path):
    """Under a process group (one gloo rank, in this process) the Trainer wraps DDP once, however many fits."""
    if dist.is_initialized():
        pytest.skip("a process group is already up in this process")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        trainer = Trainer(_cfg(tmp_path / "out", activation_checkpointing=True), train_loader=Windows())
        wrapped = trainer.model
        assert isinstance(wrapped, torch.nn.parallel.DistributedDataParallel) and wrapped.module is trainer.raw_model
        for until in (2, 4, 6):
            trainer.fit(until=until)
            assert trainer.model is wrapped
            assert parallelize.checkpointed_blocks(trainer.raw_model) == trainer.config.n_layer
        assert parallelize.parallelize(wrapped, DistInfo(), torch.device("cpu")) is wrapped
        trainer.export()
    finally:
        dist.destroy_process_group()


def test_finetune_early_stopping_sets_up_once(tmp_path, monkeypatch):
    """Early stopping over three evaluation intervals: one Trainer, each block checkpoint-wrapped once."""
    from cerebras_gpt.finetune.lora import LoRAConfig
    from cerebras_gpt.finetune.run import FinetuneArgs, finetune
    from cerebras_gpt.finetune.synthetic import reverse_records, write_jsonl

    calls = {"parallelize": 0, "checkpoint_wrapper": 0, "fit": 0}
    real_parallelize, real_wrapper, real_fit = (parallelize.parallelize, parallelize.checkpoint_wrapper, Trainer.fit)

    def counting(name, real):
        def call(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)

        return call

    monkeypatch.setattr(parallelize, "parallelize", counting("parallelize", real_parallelize))
    monkeypatch.setattr(parallelize, "checkpoint_wrapper", counting("checkpoint_wrapper", real_wrapper))
    monkeypatch.setattr(Trainer, "fit", counting("fit", real_fit))
    torch.manual_seed(0)
    config = GPTConfig.from_name("debug-tiny", block_size=32)
    GPT(config).save_pretrained(tmp_path / "base")
    write_jsonl(reverse_records(40, seed=1), tmp_path / "train.jsonl")
    summary = finetune(
        FinetuneArgs(
            model=str(tmp_path / "base"),
            data=str(tmp_path / "train.jsonl"),
            steps=6,
            batch_size=8,
            eval_interval=2,
            early_stopping_patience=5,
            lr=1e-3,
            out_dir=str(tmp_path / "out"),
            progress=False,
            activation_checkpointing=True,
            lora=LoRAConfig(rank=2),
            save_adapter=True,
        )
    )
    assert summary["steps"] == 6 and not summary["stopped_early"]
    assert calls == {"parallelize": 1, "checkpoint_wrapper": config.n_layer, "fit": 3}
    from safetensors import safe_open

    with safe_open(str(tmp_path / "out" / "adapter" / "adapter_model.safetensors"), framework="pt") as f:
        names = list(f.keys())
    assert names and not any("_checkpoint_wrapped_module" in n for n in names)  # PEFT's names, unwrapped


def test_library_reads_no_fault_injection_switch():
    """The SIGKILL-in-save hook is the test harness's (tests/harness/sitecustomize.py), not the library's."""
    hits = [p for p in (ROOT / "src").rglob("*.py") if "CEREBRAS_GPT_TEST_KILL_IN_SAVE" in p.read_text()]
    assert hits == []
