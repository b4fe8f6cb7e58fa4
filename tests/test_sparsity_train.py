"""Sparse training through `cerebras_gpt.train`: exact sparsity in the saved model, exact resume, SPDF densify."""

from __future__ import annotations

import pytest
import torch

from cerebras_gpt.sparsity import SparsityConfig, measure_sparsity

loop = pytest.importorskip("cerebras_gpt.train.loop")
from cerebras_gpt.train.config import TrainConfig  # noqa: E402

STEPS = 10


class ByteLoader:
    """Deterministic random windows of a small token stream, with the loader state the loop saves."""

    def __init__(self, seq_len: int = 32, batch_size: int = 4) -> None:
        g = torch.Generator().manual_seed(0)
        self.stream = torch.randint(0, 256, (20_000,), generator=g)
        self.seq_len, self.batch_size, self.position = seq_len, batch_size, 0

    def __iter__(self):
        while True:
            g = torch.Generator().manual_seed(self.position)
            starts = torch.randint(0, self.stream.numel() - self.seq_len - 1, (self.batch_size,), generator=g)
            self.position += 1
            yield torch.stack([self.stream[s : s + self.seq_len + 1] for s in starts.tolist()])

    def __len__(self) -> int:
        return 10_000

    def state_dict(self) -> dict:
        return {"position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.position = state["position"]


def _cfg(out, sparsity: SparsityConfig, **kw) -> TrainConfig:
    return TrainConfig(
        model="debug-tiny",
        model_overrides={"vocab_size": "256"},
        steps=STEPS,
        batch_size=4,
        seq_len=32,
        lr=3e-3,
        warmup_steps=2,
        out_dir=str(out),
        tensorboard=False,
        progress=False,
        device="cpu",
        sparsity=sparsity,
        **kw,
    )


def _final_state(result) -> dict:
    from cerebras_gpt.hf import load_pretrained

    return load_pretrained(result["model_dir"]).state_dict()


@pytest.mark.parametrize("algorithm", ["rigl", "gmp"])
def test_train_keeps_exact_sparsity_and_resumes_exactly(tmp_path, algorithm):
    sparsity = SparsityConfig(sparsity=0.75, algorithm=algorithm, update_freq=2, stop_step=8, end_step=8)
    full = loop.train(_cfg(tmp_path / "full", sparsity), train_loader=ByteLoader())
    model = _final_state(full)
    assert full["sparsity"]["sparsity"] == pytest.approx(0.75, abs=1e-6)
    assert full["sparsity"]["flops_saved_per_token"] > 0
    for name, tensor in model.items():
        if name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")):
            assert int((tensor == 0).sum()) >= round(0.75 * tensor.numel()), name

    # Stop half-way, then resume in a fresh call: same weights as the uninterrupted run.
    out = tmp_path / "resumed"
    loop.train(_cfg(out, sparsity, stop_at_step=5, checkpoint_interval=5), train_loader=ByteLoader())
    resumed = loop.train(_cfg(out, sparsity), train_loader=ByteLoader())
    assert resumed["steps"] == STEPS
    again = _final_state(resumed)
    for name in model:
        assert torch.equal(model[name], again[name]), name


def test_densify_trains_the_zeros_of_a_sparse_checkpoint(tmp_path):
    sparse = loop.train(_cfg(tmp_path / "sparse", SparsityConfig(sparsity=0.75)), train_loader=ByteLoader())
    dense = loop.train(
        _cfg(tmp_path / "dense", SparsityConfig(sparsity=0.75, densify=True), init_from=sparse["model_dir"]),
        train_loader=ByteLoader(),
    )
    assert "sparsity" not in dense
    from cerebras_gpt.hf import load_pretrained

    before = measure_sparsity(load_pretrained(sparse["model_dir"]))
    after = measure_sparsity(load_pretrained(dense["model_dir"]))
    assert min(before.values()) >= 0.75 - 1e-6
    assert max(after.values()) < 0.05
