"""CPU float32 training matmuls through oneDNN (`train/cpu_matmul.py`): the same arithmetic to float32
rounding, the same parameters and names, chosen once per machine and then the same in every process."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from cerebras_gpt import GPT, GPTConfig
from cerebras_gpt.train import cpu_matmul, parallelize
from cerebras_gpt.train.distributed import DistInfo
from cerebras_gpt.train.loss import token_loss

pytestmark = pytest.mark.skipif(not cpu_matmul.onednn_available(), reason="this PyTorch build has no oneDNN")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private cache directory and an empty in-process table of choices."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(cpu_matmul, "_onednn_pays", {})
    monkeypatch.setattr(cpu_matmul, "_numpy_pays", {})
    return tmp_path / "cache"


@pytest.mark.parametrize("bias", [True, False])
def test_onednn_linear_matches_nn_linear_forward_and_backward(bias):
    torch.manual_seed(0)
    plain = nn.Linear(48, 80, bias=bias)
    fast = cpu_matmul.OneDNNLinear(plain)
    assert fast.weight is plain.weight and list(fast.state_dict()) == list(plain.state_dict())
    x = torch.randn(3, 7, 48, requires_grad=True)
    g = torch.randn(3, 7, 80)
    grads = []
    for layer in (plain, fast):
        x.grad = None
        layer.zero_grad()
        y = layer(x)
        y.backward(g)
        grads.append((y.detach(), x.grad.clone(), layer.weight.grad.clone(), bias and layer.bias.grad.clone()))
    for want, got in zip(*grads):
        if want is False:
            continue
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_onednn_linear_leaves_autocast_and_other_dtypes_to_f_linear():
    plain = nn.Linear(16, 8)
    fast = cpu_matmul.OneDNNLinear(plain)
    x = torch.randn(4, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert fast(x).dtype == plain(x).dtype == torch.bfloat16
    half = cpu_matmul.OneDNNLinear(nn.Linear(16, 8).to(torch.float64))
    assert half(x.double()).dtype == torch.float64


def test_nt_matmul_either_kernel_gives_the_product():
    torch.manual_seed(0)
    a, w = torch.randn(64, 32), torch.randn(500, 32)
    want = a @ w.t()
    for use in (True, False):
        with cpu_matmul.onednn_forced(use):
            out = torch.empty(64, 500)
            got = cpu_matmul.nt_matmul(a, w, out=out)
            assert (got is out) != use  # oneDNN returns a new tensor; torch.mm writes into the buffer
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_the_choice_is_measured_once_per_machine_and_kept(cache, monkeypatch):
    calls = []

    def fake_measure(rows, in_features, out_features, backward, repeats):
        calls.append((rows, in_features, out_features, backward))
        return True

    monkeypatch.setattr(cpu_matmul, "_measure", fake_measure)
    assert cpu_matmul.onednn_pays(4096, 64, 256, backward=True)
    assert cpu_matmul.onednn_pays(4096, 64, 256, backward=True)
    assert calls == [(2048, 64, 256, True)]  # timed at most 2,048 rows, once
    saved = json.loads(cpu_matmul.decisions_path().read_text())
    assert list(saved.values()) == [True] and "2048x64x256 with backward" in next(iter(saved))
    # Another process on this machine reads the same answer instead of timing again.
    monkeypatch.setattr(cpu_matmul, "_onednn_pays", {})
    assert cpu_matmul.onednn_pays(2048, 64, 256, backward=True) and len(calls) == 1
    # A real measurement answers a bool and writes it beside the others.
    monkeypatch.undo()
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    assert isinstance(cpu_matmul.onednn_pays(64, 32, 48), bool)
    assert len(json.loads(cpu_matmul.decisions_path().read_text())) == 2


def test_the_head_products_through_numpy_give_torchs(monkeypatch):
    """`nt_matmul`, `nn_matmul` and `tn_matmul` with NumPy's matmul chosen: torch's products, written into the
    caller's buffers where they take one (strided row slices too), on a parameter that requires grad."""
    torch.manual_seed(0)
    x, w = torch.randn(64, 32), nn.Parameter(torch.randn(500, 32))
    g = torch.randn(64, 500)
    monkeypatch.setattr(cpu_matmul, "numpy_pays", lambda *shape, **kw: True)
    logits = torch.empty(64, 500)
    assert cpu_matmul.nt_matmul(x, w, out=logits) is logits
    grad_x = torch.empty(128, 32)
    assert cpu_matmul.nn_matmul(g, w, out=grad_x[64:]).data_ptr() == grad_x[64:].data_ptr()
    grad_w = cpu_matmul.tn_matmul(g, x)
    torch.testing.assert_close(logits, x @ w.detach().t(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad_x[64:], g @ w.detach(), rtol=1e-4, atol=1e-4)  # sums of 500 products
    torch.testing.assert_close(grad_w, g.t() @ x, rtol=1e-5, atol=1e-5)


def test_the_numpy_choice_is_measured_once_per_machine_and_kept(cache, monkeypatch):
    pytest.importorskip("threadpoolctl")
    calls = []

    def fake_measure(kind, rows, in_features, out_features, repeats):
        calls.append((kind, rows, in_features, out_features))
        return kind == "nt"

    monkeypatch.setattr(cpu_matmul, "_measure_numpy", fake_measure)
    monkeypatch.setattr(cpu_matmul, "_measure", lambda *shape: False)  # x @ W.T's rival: torch.mm, not oneDNN
    assert cpu_matmul.numpy_pays("nt", 1024, 128, 50257) and not cpu_matmul.numpy_pays("tn", 1024, 128, 50257)
    assert cpu_matmul.numpy_pays("nt", 1000, 128, 50257)  # rows share their power of two's answer
    assert calls == [("nt", 1024, 128, 50257), ("tn", 1024, 128, 50257)]
    saved = json.loads(cpu_matmul.decisions_path().read_text())
    numpy_keys = {key: value for key, value in saved.items() if "through NumPy" in key}
    assert sorted(numpy_keys.values()) == [False, True] and any("x @ W.T through NumPy" in key for key in numpy_keys)
    monkeypatch.setattr(cpu_matmul, "_numpy_pays", {})  # another process reads them
    assert cpu_matmul.numpy_pays("nt", 1024, 128, 50257) and len(calls) == 2
    with cpu_matmul.onednn_forced(False):  # fixed kernels for a comparison: torch's, not NumPy's
        assert not cpu_matmul.numpy_pays("nt", 1024, 128, 50257)
    monkeypatch.undo()
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.setattr(cpu_matmul, "_numpy_pays", {})
    assert isinstance(cpu_matmul.numpy_pays("nn", 64, 32, 48), bool)  # a real measurement


def test_parallelize_swaps_the_block_linears_and_training_matches(cache):
    torch.manual_seed(0)
    config = GPTConfig.from_name("debug-tiny")
    plain, fast = GPT(config).train(), GPT(config).train()
    fast.load_state_dict(plain.state_dict())
    keys = list(fast.state_dict())
    with cpu_matmul.onednn_forced(True):
        parallelize.parallelize(fast, DistInfo(), torch.device("cpu"), cpu_rows=64, activation_checkpointing=True)
        assert cpu_matmul.apply_onednn_linears(fast.transformer.h, 64) == 0  # idempotent
    swapped = [m for m in fast.modules() if isinstance(m, cpu_matmul.OneDNNLinear)]
    assert len(swapped) == 4 * config.n_layer and type(fast.lm_head) is nn.Linear
    assert list(fast.state_dict()) == keys
    x = torch.randint(0, config.vocab_size, (4, 17))
    losses = []
    for model, use in ((plain, False), (fast, True)):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        with cpu_matmul.onednn_forced(use):
            for _ in range(3):
                loss = token_loss(model, x[:, :-1], x[:, 1:]) / x[:, 1:].numel()
                loss.backward()
                opt.step()
                opt.zero_grad()
                losses.append(loss.item())
    assert losses[3:] == pytest.approx(losses[:3], rel=1e-5)
    cpu_matmul.remove_onednn_linears(fast)
    assert not any(isinstance(m, cpu_matmul.OneDNNLinear) for m in fast.modules())
    assert list(fast.state_dict()) == keys


def test_a_shape_where_onednn_does_not_pay_keeps_nn_linear(cache):
    model = GPT(GPTConfig.from_name("debug-tiny"))
    with cpu_matmul.onednn_forced(False):
        assert cpu_matmul.apply_onednn_linears(model.transformer.h, 64) == 0
    assert all(type(m) is not cpu_matmul.OneDNNLinear for m in model.modules())
