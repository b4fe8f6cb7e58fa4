"""Cerebras' own μP checkpoints (BTLM-format config.json, unfolded weights) load with our logits, and
re-export as plain GPT-2 that `transformers` reads with the same logits."""

import json

import pytest
import torch
from transformers import GPT2LMHeadModel

from cerebras_gpt import GPT, GPTConfig, mup

CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def btlm_config(config: GPTConfig, legacy: bool) -> dict:
    """config.json as the cerebras/Cerebras-GPT-*-muP repos hold it (facts file §1, [HFI])."""
    hf = {
        "architectures": ["BTLMLMHeadModel"],
        "model_type": "btlm",
        "auto_map": {
            "AutoConfig": "cerebras/btlm-3b-8k-base--configuration_btlm.BTLMConfig",
            "AutoModel": "cerebras/btlm-3b-8k-base--modeling_btlm.BTLMModel",
            "AutoModelForCausalLM": "cerebras/btlm-3b-8k-base--modeling_btlm.BTLMLMHeadModel",
        },
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": config.ffn_dim,
        "n_positions": config.block_size,
        "vocab_size": config.vocab_size,
        "activation_function": "gelu",
        "layer_norm_epsilon": 1e-5,
        "attn_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "resid_pdrop": 0.0,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": True,
        "position_embedding_type": "learned",
        "alibi_scaling": None,
        "mup_embeddings_scale": config.mup_embeddings_scale,
        "mup_scale_qk_dot_by_d": True,
        "bos_token_id": 50256,
        "eos_token_id": 50256,
        "torch_dtype": "float32",
    }
    if not legacy:  # the first 111M-μP config (commit 898d006) had neither field
        hf["mup_width_scale"] = config.mup_base_width / config.n_embd
        hf["mup_output_alpha"] = config.mup_output_alpha
    return hf


def write_btlm_checkpoint(model: GPT, directory, legacy: bool = False) -> None:
    """Our μP weights, unfolded, under HF GPT-2 keys (Conv1D transposed), as Cerebras' converter writes them:
    a pytorch_model.bin with the tied lm_head stored and the causal-mask buffers regenerated."""
    directory.mkdir(parents=True, exist_ok=True)
    config = model.config
    state = {}
    for key, tensor in model.state_dict().items():
        tensor = tensor.detach().clone()
        state[key] = tensor.t().contiguous() if key.endswith(CONV1D) else tensor
    T = config.block_size
    for i in range(config.n_layer):
        state[f"transformer.h.{i}.attn.bias"] = torch.tril(torch.ones(T, T, dtype=torch.bool)).view(1, 1, T, T)
        state[f"transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    torch.save(state, directory / "pytorch_model.bin")
    (directory / "config.json").write_text(json.dumps(btlm_config(config, legacy), indent=2))


def mup_model(base_width: int) -> GPT:
    config = mup.to_mup(
        GPTConfig(n_layer=2, n_embd=64, n_head=4, block_size=64, vocab_size=1024),
        base_width=base_width,
        embeddings_scale=10.0,
        output_alpha=2.0 if base_width != 256 else 1.0,
    )
    torch.manual_seed(0)
    model = GPT(config)
    with torch.no_grad():  # move every tensor off its init (LayerNorms, biases) so each mapping is exercised
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize("base_width,legacy", [(32, False), (256, True)])
def test_btlm_mup_checkpoint_loads_and_reexports_to_transformers(tmp_path, base_width, legacy):
    ours = mup_model(base_width)
    write_btlm_checkpoint(ours, tmp_path / "btlm", legacy=legacy)
    loaded = GPT.from_pretrained(tmp_path / "btlm")
    assert loaded.config.use_mup and loaded.config.mup_base_width == base_width
    assert loaded.config.output_logits_scale == ours.config.output_logits_scale
    ids = torch.randint(0, 1024, (2, 48), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = ours(ids)
        assert torch.equal(loaded(ids), reference)

    loaded.save_pretrained(tmp_path / "plain")
    saved = json.loads((tmp_path / "plain" / "config.json").read_text())
    assert saved["model_type"] == "gpt2" and saved["architectures"] == ["GPT2LMHeadModel"]
    theirs = GPT2LMHeadModel.from_pretrained(tmp_path / "plain").eval()
    with torch.no_grad():
        logits = theirs(ids).logits
    assert (logits - reference).abs().max().item() <= 1e-4 * reference.abs().max().item()
    assert torch.equal(logits.argmax(-1), reference.argmax(-1))


def test_btlm_config_with_dot_by_sqrt_d_is_refused(tmp_path):
    write_btlm_checkpoint(mup_model(32), tmp_path)
    hf = json.loads((tmp_path / "config.json").read_text())
    hf["mup_scale_qk_dot_by_d"] = False
    (tmp_path / "config.json").write_text(json.dumps(hf))
    with pytest.raises(ValueError, match="mup_scale_qk_dot_by_d"):
        GPT.from_pretrained(tmp_path)
