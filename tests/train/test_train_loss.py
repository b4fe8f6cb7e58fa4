"""The chunked LM-head cross-entropy gives the textbook loss and gradients (ignored targets, μP output
multiplier, tied weights) without the logits, and is used only where it applies."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cerebras_gpt import GPT, GPTConfig
from cerebras_gpt.train import loss as train_loss


def _grads(model, x, y, use_chunked: bool):
    model.zero_grad(set_to_none=True)
    if use_chunked:
        value = train_loss.token_loss(model, x, y)
    else:
        value = F.cross_entropy(model(x).flatten(0, 1), y.flatten(), ignore_index=-100, reduction="sum")
    (value * 0.37).backward()
    return value.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("through_numpy", [False, True])
@pytest.mark.parametrize("name", ["debug-tiny", "Cerebras-GPT-111M-muP"])
def test_chunked_loss_matches_the_textbook_loss_and_gradients(name, through_numpy, monkeypatch):
    """With the head's three products through torch/oneDNN or through NumPy (`cpu_matmul.numpy_pays`)."""
    from cerebras_gpt.train import cpu_matmul

    monkeypatch.setattr(cpu_matmul, "numpy_pays", lambda *shape, **kw: through_numpy)
    overrides = {} if name == "debug-tiny" else dict(n_layer=1, n_embd=64, n_head=2, vocab_size=300, block_size=32)
    config = GPTConfig.from_name(name, **overrides)
    torch.manual_seed(0)
    model = GPT(config).train()
    x = torch.randint(0, config.vocab_size, (3, 11))
    y = torch.randint(0, config.vocab_size, (3, 11))
    y[1, 4:] = -100  # ignored targets (padding, prompt tokens)
    monkeypatch.setattr(train_loss, "CHUNK_ROWS", 7)  # several blocks, the last one short
    assert train_loss.chunked_loss_applies(model, x)
    ref_loss, ref = _grads(model, x, y, use_chunked=False)
    got_loss, got = _grads(model, x, y, use_chunked=True)
    torch.testing.assert_close(got_loss, ref_loss, rtol=1e-5, atol=1e-5)
    assert got.keys() == ref.keys()
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], rtol=1e-4, atol=1e-5, msg=lambda m, n=n: f"{n}: {m}")
    assert isinstance(model.lm_head, torch.nn.Linear)  # the head is back after the loss


def test_the_logits_path_is_taken_where_chunking_does_not_apply(tiny_model):
    x = torch.randint(0, tiny_model.config.vocab_size, (2, 5))
    with torch.no_grad():
        assert not train_loss.chunked_loss_applies(tiny_model, x)
        assert train_loss.output_for_loss(tiny_model, x).shape == (2, 5, tiny_model.config.vocab_size)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not train_loss.chunked_loss_applies(tiny_model, x)
    assert not train_loss.chunked_loss_applies(torch.nn.Sequential(tiny_model), x)
    handle = tiny_model.lm_head.register_forward_hook(lambda m, a, out: out)  # a hook must see the logits
    assert not train_loss.chunked_loss_applies(tiny_model, x)
    handle.remove()
    assert train_loss.chunked_loss_applies(tiny_model, x)


def test_chunked_loss_is_exact_where_a_target_probability_underflows():
    # Logits 0 or far above: targets at 0 have probabilities below float32's smallest normal (or 0), where
    # -log(softmax) would be inf or imprecise; those rows take the recomputed logsumexp instead.
    torch.manual_seed(0)
    vocab, width = 50, 4
    weight = torch.zeros(vocab, width)
    weight[:10, 0] = torch.linspace(20.0, 200.0, 10)  # tokens 0-9: logits 20..200 times h[:, 0]
    h = torch.zeros(8, width)
    h[:, 0] = 1.0
    y = torch.tensor([9, 0, 10, 45, 1, 8, -100, 0])  # targets 10, 45: logit 0 against 200 (p = e^-200)
    h.requires_grad_(True)
    weight.requires_grad_(True)
    loss = train_loss.ChunkedLinearCrossEntropy.apply(h, weight, y, 3)
    loss.backward()
    h64, w64 = h.detach().double().requires_grad_(), weight.detach().double().requires_grad_()
    ref = F.cross_entropy(h64 @ w64.t(), y, ignore_index=-100, reduction="sum")
    ref.backward()
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss.double(), ref.detach(), rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(h.grad.double(), h64.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(weight.grad.double(), w64.grad, rtol=1e-5, atol=1e-5)
