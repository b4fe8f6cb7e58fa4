"""The model against Hugging Face transformers: logits parity both ways, the μP fold, the KV cache."""

import json

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, GPT2Model

from cerebras_gpt import GPT, GPTConfig


def hf_config(c: GPTConfig) -> GPT2Config:
    return GPT2Config(
        n_embd=c.n_embd,
        n_layer=c.n_layer,
        n_head=c.n_head,
        n_inner=c.ffn_dim,
        n_positions=c.block_size,
        vocab_size=c.vocab_size,
        activation_function="gelu",
        layer_norm_epsilon=1e-5,
        attn_pdrop=0.0,
        embd_pdrop=0.0,
        resid_pdrop=0.0,
    )


def random_ids(n=2, t=24, vocab=50257, seed=0):
    return torch.randint(0, vocab, (n, t), generator=torch.Generator().manual_seed(seed))


def max_diff(a, b):
    return (a - b).abs().max().item()


@pytest.mark.parametrize("name", ["debug-tiny", "debug-small", "Cerebras-GPT-111M"])
def test_our_checkpoint_loads_in_transformers_with_same_logits(name, tmp_path):
    torch.manual_seed(0)
    ours = GPT(GPTConfig.from_name(name)).eval()
    ours.save_pretrained(tmp_path)
    theirs = GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    ids = random_ids(t=16)
    with torch.no_grad():
        assert max_diff(ours(ids), theirs(ids).logits) <= 1e-4


@pytest.mark.parametrize("name", ["debug-tiny", "debug-medium", "Cerebras-GPT-111M"])
def test_transformers_checkpoint_loads_with_same_logits(name, tmp_path):
    torch.manual_seed(0)
    theirs = GPT2LMHeadModel(hf_config(GPTConfig.from_name(name))).eval()
    theirs.save_pretrained(tmp_path)
    ours = GPT.from_pretrained(tmp_path)
    # Conv1D (in, out) matrices become contiguous (out, in) copies, not transposed views (slower matmuls).
    assert all(p.is_contiguous() for p in ours.parameters())
    ids = random_ids(t=16)
    with torch.no_grad():
        assert max_diff(ours(ids), theirs(ids).logits) <= 1e-4


def test_mup_model_folds_exactly_into_plain_gpt2(tmp_path):
    torch.manual_seed(0)
    config = GPTConfig.from_name("debug-small-muP")
    ours = GPT(config).eval()
    assert config.embeddings_scale == 10 and config.output_logits_scale == 2.0  # 256 / 128
    ours.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["tie_word_embeddings"] is False and saved["cerebras_gpt"]["mup_folded"] is True
    theirs = GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    back = GPT.from_pretrained(tmp_path)
    ids = random_ids(t=20)
    with torch.no_grad():
        reference = ours(ids)
        assert max_diff(reference, theirs(ids).logits) <= 1e-4
        assert max_diff(reference, back(ids)) <= 1e-4


def test_headless_gpt2model_layout_without_architectures(tmp_path):
    """The 13B repo declares a headless GPT2Model; the first configs had no `architectures` key."""
    torch.manual_seed(0)
    config = GPTConfig.from_name("debug-tiny")
    base = GPT2Model(hf_config(config)).eval()
    base.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg.pop("architectures", None)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    ours = GPT.from_pretrained(tmp_path)
    ids = random_ids(t=12)
    with torch.no_grad():
        hidden = base(ids).last_hidden_state
        assert max_diff(ours(ids), hidden @ base.wte.weight.T) <= 1e-4


def test_pytorch_bin_and_sharded_checkpoints(tmp_path):
    torch.manual_seed(0)
    theirs = GPT2LMHeadModel(hf_config(GPTConfig.from_name("debug-tiny"))).eval()
    ids = random_ids(t=12)
    with torch.no_grad():
        expected = theirs(ids).logits
    # pytorch_model.bin (old repos), read with weights_only=True
    bin_dir = tmp_path / "bin"
    theirs.save_pretrained(bin_dir)
    (bin_dir / "model.safetensors").unlink()
    torch.save(theirs.state_dict(), bin_dir / "pytorch_model.bin")
    # sharded safetensors with an index (13B-size repos)
    shard_dir = tmp_path / "sharded"
    theirs.save_pretrained(shard_dir, max_shard_size="500KB")
    assert (shard_dir / "model.safetensors.index.json").exists()
    for d in (bin_dir, shard_dir):
        with torch.no_grad():
            assert max_diff(GPT.from_pretrained(d)(ids), expected) <= 1e-4


def test_strict_loading_lists_missing_and_unexpected(tmp_path):
    from safetensors.torch import load_file, save_file

    GPT(GPTConfig.from_name("debug-tiny")).save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state.pop("transformer.h.1.mlp.c_fc.bias")
    state["transformer.h.9.extra.weight"] = torch.zeros(2)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(
        ValueError, match=r"missing \['transformer.h.1.mlp.c_fc.bias'\].*unexpected \['transformer.h.9.extra.weight'\]"
    ):
        GPT.from_pretrained(tmp_path)


def test_unsupported_config_and_missing_files_are_clear(tmp_path):
    GPT(GPTConfig.from_name("debug-tiny")).save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "activation_function": "gelu_new"}))
    with pytest.raises(ValueError, match="activation_function='gelu_new'"):
        GPT.from_pretrained(tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        GPT.from_pretrained(tmp_path)


def test_hub_download_without_network_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    with pytest.raises(
        ValueError,
        match="'cerebras/Cerebras-GPT-111M': no such local directory, and it could not be "
        "downloaded.*no network.*local directory",
    ):
        GPT.from_pretrained("cerebras/Cerebras-GPT-111M")
    with pytest.raises(ValueError, match="no such local directory, and not a hub id"):
        GPT.from_pretrained("no/such/thing/here")


def test_cached_decoding_equals_full_forward(tiny_model):
    ids = random_ids(n=3, t=20)
    with torch.no_grad():
        full = tiny_model(ids)
        tiny_model.setup_kv_cache(3, 32)
        steps = [tiny_model(ids[:, :8], torch.arange(8))]
        steps += [tiny_model(ids[:, t : t + 1], torch.arange(t, t + 1)) for t in range(8, 20)]
        tiny_model.clear_kv_cache()
    assert max_diff(torch.cat(steps, dim=1), full) <= 1e-5


def test_ragged_rows_in_one_cache_match_separate_runs(tiny_model):
    """Rows at different positions (continuous batching) see only their own slots."""
    ids = random_ids(n=2, t=12)
    with torch.no_grad():
        full = tiny_model(ids)
        tiny_model.setup_kv_cache(4, 16)
        tiny_model(ids[1:2, :5], torch.arange(5), cache_rows=torch.tensor([3]))
        tiny_model(ids[0:1, :9], torch.arange(9), cache_rows=torch.tensor([1]))
        step = tiny_model(
            torch.stack([ids[0, 9:10], ids[1, 5:6]]), torch.tensor([[9], [5]]), cache_rows=torch.tensor([1, 3])
        )
        tiny_model.clear_kv_cache()
    assert max_diff(step[0, 0], full[0, 9]) <= 1e-5 and max_diff(step[1, 0], full[1, 5]) <= 1e-5


def test_a_bfloat16_cache_holds_rounded_keys_and_gives_float32_attention(tiny_model):
    """A cache kept below the activations' precision (a quantized model's compiled step): written rounded,
    read back as float32, on the plain and the ragged write; logits within bf16 rounding of the fp32 cache."""
    ids = random_ids(n=2, t=12)
    with torch.no_grad():
        full = tiny_model(ids)
        caches = tiny_model.setup_kv_cache(2, 16, dtype=torch.bfloat16)
        first = tiny_model(ids[:, :8], torch.arange(8))
        rest = tiny_model(ids[:, 8:], torch.tensor([[8, 9, 10, 11], [8, 9, 10, 11]]))
        tiny_model.clear_kv_cache()
    assert caches[0].k.dtype == torch.bfloat16 and caches[0].k[:, :, :12].abs().sum() > 0
    assert first.dtype == torch.float32
    assert 0 < max_diff(torch.cat([first, rest], dim=1), full) <= 0.02 * full.abs().max()


def test_context_and_cache_errors(tiny_model):
    with pytest.raises(ValueError, match="longer than the context"):
        tiny_model(torch.zeros(1, 129, dtype=torch.long))
    tiny_model.setup_kv_cache(1, 8)
    with pytest.raises(ValueError, match="pass input_pos"):
        tiny_model(torch.zeros(1, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="past the KV cache length"):
        tiny_model(torch.zeros(1, 2, dtype=torch.long), torch.tensor([8, 9]))
    tiny_model.clear_kv_cache()
    with pytest.raises(ValueError, match="exceeds the context"):
        tiny_model.setup_kv_cache(1, 1000)


def test_init_follows_the_paper():
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_name("debug-medium"))
    std = 0.02 / (2 * 6) ** 0.5
    for name, p in model.named_parameters():
        if name.endswith(("attn.c_proj.weight", "mlp.c_proj.weight")):
            assert p.std().item() == pytest.approx(std * 0.88, rel=0.1)  # truncated at ±2σ: std ≈ 0.88σ
            assert p.abs().max().item() <= 2 * std + 1e-7
        elif name.endswith("c_attn.weight") or name == "transformer.wte.weight":
            assert p.abs().max().item() <= 0.04 + 1e-7
        elif name.endswith("bias"):
            assert p.abs().max().item() == 0
    assert model.lm_head.weight is model.transformer.wte.weight and model.lm_head.bias is None
