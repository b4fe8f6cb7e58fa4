"""Presets: exact shapes and parameter counts, recipe figures, name lookup and validation."""

import math

import pytest

from cerebras_gpt import PRESETS, GPTConfig, recipe_for

# Facts file §1: V·d + 2048·d + L(12d²+13d) + 2d, from the paper's App. E.
PUBLISHED = {
    "Cerebras-GPT-111M": (10, 768, 12, 64, 111_050_496),
    "Cerebras-GPT-256M": (14, 1088, 17, 64, 255_977_024),
    "Cerebras-GPT-590M": (18, 1536, 12, 128, 590_310_912),
    "Cerebras-GPT-1.3B": (24, 2048, 16, 128, 1_315_723_264),
    "Cerebras-GPT-2.7B": (32, 2560, 32, 80, 2_651_553_280),
    "Cerebras-GPT-6.7B": (32, 4096, 32, 128, 6_658_404_352),
    "Cerebras-GPT-13B": (40, 5120, 40, 128, 12_853_386_240),
}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_presets_match_published_shapes_and_counts(name):
    L, d, h, hd, params = PUBLISHED[name]
    for variant in (name, name + "-muP"):
        if variant not in PRESETS:
            continue
        c = PRESETS[variant]
        assert (c.n_layer, c.n_embd, c.n_head, c.head_dim, c.ffn_dim) == (L, d, h, hd, 4 * d)
        assert c.num_params() == params
        assert c.num_params() == 50257 * d + 2048 * d + L * (12 * d * d + 13 * d) + 2 * d
        assert c.block_size == 2048 and c.vocab_size == 50257 and c.layer_norm_epsilon == 1e-5


def test_five_mup_variants():
    assert sorted(n for n in PRESETS if n.startswith("Cerebras-GPT-") and n.endswith("-muP")) == sorted(
        f"Cerebras-GPT-{s}-muP" for s in ("111M", "256M", "590M", "1.3B", "2.7B")
    )
    assert all(PRESETS[f"Cerebras-GPT-{s}-muP"].use_mup for s in ("111M", "2.7B"))


def test_model_param_count_equals_formula():
    from cerebras_gpt import GPT

    for name in ("debug-tiny", "debug-small"):
        assert GPT(GPTConfig.from_name(name)).num_params() == GPTConfig.from_name(name).num_params()


def test_residual_init_stds_follow_the_modelzoo():
    assert PRESETS["Cerebras-GPT-111M"].residual_init_std == pytest.approx(0.004472, abs=1e-6)
    assert PRESETS["Cerebras-GPT-256M"].residual_init_std == pytest.approx(0.003780, abs=1e-6)
    assert PRESETS["Cerebras-GPT-590M"].residual_init_std == pytest.approx(0.003333, abs=1e-6)
    for size in ("1.3B", "2.7B", "6.7B", "13B"):  # fixed 0.0025 from 1.3B up, not 0.02/sqrt(2L)
        assert PRESETS[f"Cerebras-GPT-{size}"].residual_init_std == 0.0025


def test_flops_per_token_counts_matmuls_and_attention():
    c = PRESETS["Cerebras-GPT-111M"]
    d, L, V, T = 768, 10, 50257, 2048
    forward = L * 24 * d * d + 2 * V * d + L * 4 * T * d
    assert c.flops_per_token() == 3 * forward
    assert c.flops_per_token(512) < c.flops_per_token()
    # Close to 6N plus attention: the usual approximation.
    assert c.flops_per_token() == pytest.approx(6 * c.num_params() + 12 * L * T * d, rel=0.05)


def test_recipe_figures():
    r = recipe_for("cerebras-gpt-111m")
    assert (r.peak_lr, r.batch_size, r.warmup_steps, r.decay, r.min_lr_ratio) == (6e-4, 120, 1525, "linear", 0.1)
    assert recipe_for("Cerebras-GPT-1.3B").decay == "cosine"
    assert recipe_for("Cerebras-GPT-6.7B").adam_eps == 1e-9
    assert recipe_for("Cerebras-GPT-111M-muP").peak_lr == 6e-3
    assert recipe_for("debug-tiny") is None
    # 20 tokens per parameter: the paper's token counts.
    c = PRESETS["Cerebras-GPT-13B"]
    assert math.isclose(c.compute_optimal_tokens(), 2.57e11, rel_tol=0.01)


def test_from_name_is_case_insensitive_and_takes_overrides():
    assert GPTConfig.from_name("cerebras-gpt-111m").n_embd == 768
    assert GPTConfig.from_name("CEREBRAS/Cerebras-GPT-2.7B").head_dim == 80
    c = GPTConfig.from_name("Cerebras-GPT-111M", block_size=512)
    assert c.block_size == 512 and c.n_layer == 10


def test_unknown_preset_suggests_close_names():
    with pytest.raises(ValueError, match=r"unknown preset 'Cerebras-GPT-111'; did you mean Cerebras-GPT-111M"):
        GPTConfig.from_name("Cerebras-GPT-111")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n_embd=100, n_head=3), "not divisible by n_head=3"),
        (dict(n_layer=0), "n_layer=0 must be a positive integer"),
        (dict(n_embd=-8), "n_embd=-8 must be a positive integer"),
        (dict(vocab_size=0), "vocab_size=0"),
        (dict(dropout=1.5), "dropout=1.5"),
        (dict(n_inner=0), "n_inner=0"),
    ],
)
def test_invalid_configs_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GPTConfig(**kwargs)


def test_config_dict_round_trip_and_unknown_fields():
    c = GPTConfig.from_name("debug-small-muP")
    assert GPTConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match="unknown GPTConfig fields"):
        GPTConfig.from_dict({"n_layers": 2})
