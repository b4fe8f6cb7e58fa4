"""μP arithmetic against the published Cerebras-GPT-111M-muP values, and the initialized weights that follow it."""

import dataclasses
import math

import pytest
import torch
from scipy.stats import truncnorm

from cerebras_gpt import GPT, GPTConfig, mup

# ModelZoo release 2.0.2 (c1ef453), Cerebras-GPT-111M-muP; facts file §3.
PUBLISHED_111M_MUP = dict(
    embedding_std=0.08, hidden_std=0.04619, out_proj_std=0.01033, output_logits_scale=0.3333, lr_adjust=0.3333
)


def param_names(config: GPTConfig) -> list[str]:
    with torch.device("meta"):
        return [name for name, _ in GPT(config, init_weights=False).named_parameters()]


def test_111m_mup_init_stds_and_lr_multipliers_equal_the_published_values():
    config = GPTConfig.from_name("Cerebras-GPT-111M-muP")
    assert mup.width_multiplier(config) == 3
    assert config.output_logits_scale == pytest.approx(PUBLISHED_111M_MUP["output_logits_scale"], abs=5e-5)
    assert config.embeddings_scale == 10 and config.attn_scale == 1 / 64
    seen = set()
    for name in param_names(config):
        group, std, lr = mup.group(name), mup.init_std(config, name), mup.lr_multiplier(config, name)
        seen.add(group)
        if group == "embedding":
            assert std == PUBLISHED_111M_MUP["embedding_std"] and lr == 1.0, name
        elif group == "hidden":
            assert std == pytest.approx(PUBLISHED_111M_MUP["hidden_std"], abs=5e-6), name
            assert lr == pytest.approx(PUBLISHED_111M_MUP["lr_adjust"], abs=5e-5), name
        elif group in ("attn_out", "ffn_out"):
            assert std == pytest.approx(PUBLISHED_111M_MUP["out_proj_std"], abs=5e-6), name
            assert lr == pytest.approx(PUBLISHED_111M_MUP["lr_adjust"], abs=5e-5), name
        else:
            assert group == "vector" and std is None and lr == 1.0, name
    assert seen == {"embedding", "hidden", "attn_out", "ffn_out", "vector"}


def test_ffn_output_lr_follows_d_ffn_not_width():
    # ModelZoo HEAD scales mlp.c_proj's LR by 1/(d_ffn/1024); with d_ffn = 4d it equals 1/m.
    config = GPTConfig.from_name("Cerebras-GPT-111M-muP", n_inner=2048)
    assert mup.lr_multiplier(config, "transformer.h.3.mlp.c_proj.weight") == 0.5
    assert mup.lr_multiplier(config, "transformer.h.3.mlp.c_fc.weight") == pytest.approx(1 / 3)
    sp = GPTConfig.from_name("Cerebras-GPT-111M")
    assert all(mup.lr_multiplier(sp, n) == 1.0 for n in param_names(sp))


def test_initialized_111m_mup_weights_have_the_published_stds():
    # The real init on the real shapes, but only block 4 and a 1024-row embedding are materialized: the
    # other parameters stay on the meta device, where init costs nothing (111M of truncated normals take
    # ~20 s on a busy 2-core machine). The vocabulary does not enter any μP std.
    with torch.device("meta"):
        model = GPT(GPTConfig.from_name("Cerebras-GPT-111M-muP", vocab_size=1024), init_weights=False)
    model.transformer.h[4].to_empty(device="cpu")
    model.transformer.wte.to_empty(device="cpu")
    torch.manual_seed(0)
    model.init_weights()
    # Truncated normal at ±2σ (ModelZoo): the sample std is σ times that of a unit normal cut at ±2.
    shrink = truncnorm(-2, 2).std()
    h = model.transformer.h[4]
    for tensor, sigma in [
        (model.transformer.wte.weight, 0.08),
        (h.attn.c_attn.weight, 0.04619),
        (h.mlp.c_fc.weight, 0.04619),
        (h.attn.c_proj.weight, 0.01033),
        (h.mlp.c_proj.weight, 0.01033),
    ]:
        assert tensor.std().item() == pytest.approx(sigma * shrink, rel=0.01)
        assert tensor.abs().max().item() <= 2 * sigma * (1 + 1e-3)  # the ±2σ bound, σ from the rule
    assert torch.all(h.ln_1.weight == 1) and torch.all(h.attn.c_attn.bias == 0)


def test_to_mup_converts_an_sp_preset_and_keeps_base_values():
    sp = GPTConfig.from_name("Cerebras-GPT-256M")
    converted = mup.to_mup(sp)
    assert converted.use_mup and converted.output_init_std is None
    assert dataclasses.replace(converted, name="") == dataclasses.replace(
        GPTConfig.from_name("Cerebras-GPT-256M-muP"), name=""
    )
    custom = mup.to_mup(sp, base_width=128, init_std=0.05, embeddings_scale=4.0, output_alpha=2.0)
    assert mup.width_multiplier(custom) == 1088 / 128
    assert custom.output_logits_scale == pytest.approx(2.0 * 128 / 1088)
    assert mup.init_std(custom, "transformer.h.0.mlp.c_fc.weight") == pytest.approx(0.05 / math.sqrt(1088 / 128))


def test_untied_lm_head_is_initialized_like_the_embedding_it_replaces():
    config = mup.to_mup(GPTConfig.from_name("debug-small", tie_word_embeddings=False, vocab_size=1024))
    torch.manual_seed(0)
    model = GPT(config)
    assert mup.group("lm_head.weight") == "embedding" and mup.lr_multiplier(config, "lm_head.weight") == 1.0
    assert model.lm_head.weight.std().item() == pytest.approx(0.08 * truncnorm(-2, 2).std(), rel=0.02)


def test_rules_table_lists_every_group_and_multiplier():
    rows = mup.rules(GPTConfig.from_name("Cerebras-GPT-1.3B-muP"))
    by_group = {r["group"]: r for r in rows if r["group"] != "forward"}
    assert by_group["hidden"]["lr_multiplier"] == pytest.approx(256 / 2048)
    assert by_group["attn_out"]["init_std"] == pytest.approx(0.08 / math.sqrt(2 * 8 * 24))
    forward = {r["multiplier"]: r["value"] for r in rows if r["group"] == "forward"}
    assert forward == {"embeddings_scale": 10.0, "output_logits_scale": 0.125, "attn_scale": 1 / 128}
