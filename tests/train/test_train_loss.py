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


@pytest.mark.parametrize("name", ["debug-tiny", "Cerebras-GPT-111M-muP"])
def test_chunked_loss_matches_the_textbook_loss_and_gradients(name, monkeypatch):
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
