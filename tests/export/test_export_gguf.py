"""GGUF export read back with gguf's own GGUFReader: the GPT-2 fields llama.cpp reads, the tokenizer,
every tensor under llama.cpp's name with the right shape and type, and the values (exact in f32)."""

from __future__ import annotations

import json

import gguf
import numpy as np
import pytest
import torch

from cerebras_gpt import GPT, GPTConfig, load_tokenizer
from cerebras_gpt.commands.export import main as export_main
from cerebras_gpt.hf import folded_state_dict


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("tiny")
    GPT(GPTConfig.from_name("debug-tiny")).save_pretrained(d)
    return d


def _export(model_dir, out, outtype):
    assert export_main(["--model", str(model_dir), "--format", "gguf", "--out", str(out), "--outtype", outtype]) == 0
    return gguf.GGUFReader(out)


def _expected(model: GPT) -> dict[str, np.ndarray]:
    """llama.cpp's names for our (μP-folded) weights, in (out, in) layout."""
    c = model.config
    state, tied = folded_state_dict(model)  # HF layout: Conv1D weights are (in, out)
    sd = {
        k: (v.t() if k.endswith((".c_attn.weight", ".c_proj.weight", ".c_fc.weight")) else v).float().numpy()
        for k, v in state.items()
    }
    out = {
        "token_embd.weight": sd["transformer.wte.weight"],
        "position_embd.weight": sd["transformer.wpe.weight"],
        "output_norm.weight": sd["transformer.ln_f.weight"],
        "output_norm.bias": sd["transformer.ln_f.bias"],
    }
    ours = {
        "ln_1": "attn_norm",
        "attn.c_attn": "attn_qkv",
        "attn.c_proj": "attn_output",
        "ln_2": "ffn_norm",
        "mlp.c_fc": "ffn_up",
        "mlp.c_proj": "ffn_down",
    }
    for i in range(c.n_layer):
        for src, dst in ours.items():
            for kind in ("weight", "bias"):
                out[f"blk.{i}.{dst}.{kind}"] = sd[f"transformer.h.{i}.{src}.{kind}"]
    if not tied:
        out["output.weight"] = state["lm_head.weight"].float().numpy()
    return out


def _field(reader, key):
    return reader.fields[key].contents()


def test_gguf_f32_metadata_tokenizer_and_exact_tensors(model_dir, tmp_path):
    model = GPT.from_pretrained(model_dir)
    reader = _export(model_dir, tmp_path / "m.gguf", "f32")
    c = model.config
    assert _field(reader, "general.architecture") == "gpt2"
    assert _field(reader, "gpt2.block_count") == c.n_layer
    assert _field(reader, "gpt2.context_length") == c.block_size
    assert _field(reader, "gpt2.embedding_length") == c.n_embd
    assert _field(reader, "gpt2.feed_forward_length") == c.ffn_dim
    assert _field(reader, "gpt2.attention.head_count") == c.n_head
    assert _field(reader, "gpt2.attention.layer_norm_epsilon") == pytest.approx(c.layer_norm_epsilon)
    assert _field(reader, "general.file_type") == int(gguf.LlamaFileType.ALL_F32)
    # The tokenizer: GPT-2 byte-level BPE, in id order, with its merges and <|endoftext|> as bos/eos.
    tok = load_tokenizer(model_dir)
    vocab = json.loads((model_dir / "vocab.json").read_text())
    merges = [m for m in (model_dir / "merges.txt").read_text().split("\n") if m and not m.startswith("#version")]
    assert _field(reader, "tokenizer.ggml.model") == "gpt2" and _field(reader, "tokenizer.ggml.pre") == "gpt-2"
    tokens = reader.fields["tokenizer.ggml.tokens"]
    assert len(tokens.data) == 50257
    for text, i in list(vocab.items())[::997] + [("<|endoftext|>", 50256)]:
        assert tokens.contents(i) == text
    assert len(reader.fields["tokenizer.ggml.merges"].data) == len(merges) == 50000
    assert reader.fields["tokenizer.ggml.merges"].contents(0) == merges[0]
    types = reader.fields["tokenizer.ggml.token_type"]
    assert types.contents(50256) == gguf.TokenType.CONTROL and types.contents(0) == gguf.TokenType.NORMAL
    for key in ("bos_token_id", "eos_token_id"):
        assert _field(reader, f"tokenizer.ggml.{key}") == tok.eos_id
    assert _field(reader, "tokenizer.ggml.add_bos_token") is False
    # Every tensor, under llama.cpp's gpt2 names, equal to the model's (tied head: no output.weight).
    expected = _expected(model)
    got = {t.name: t for t in reader.tensors}
    assert set(got) == set(expected)
    for name, want in expected.items():
        t = got[name]
        assert t.tensor_type == gguf.GGMLQuantizationType.F32
        assert list(t.shape) == list(reversed(want.shape))  # GGUF lists dims innermost first
        np.testing.assert_array_equal(np.asarray(t.data).reshape(want.shape), want)


def test_gguf_f16_and_q8_0_types_and_values(model_dir, tmp_path):
    model = GPT.from_pretrained(model_dir)
    expected = _expected(model)
    for outtype, qtype, ftype in (
        ("f16", gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
        ("q8_0", gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
    ):
        reader = _export(model_dir, tmp_path / f"m-{outtype}.gguf", outtype)
        assert _field(reader, "general.file_type") == int(ftype)
        for t in reader.tensors:
            want = expected[t.name]
            # llama.cpp's rule: 1-D tensors, norms and position embeddings stay f32.
            keep_f32 = want.ndim == 1 or t.name.startswith("position_embd")
            assert t.tensor_type == (gguf.GGMLQuantizationType.F32 if keep_f32 else qtype), t.name
            values = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).reshape(want.shape)
            # f16 keeps ~3 significant digits; q8_0 is 8 bits per value with one scale per 32 values.
            tol = 1e-3 if outtype == "f16" else 1.0 / 127
            np.testing.assert_allclose(values, want, atol=tol * np.abs(want).max() + 1e-6, rtol=0)


def test_gguf_mup_model_exports_folded_with_untied_head(tmp_path):
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_name("debug-tiny-muP"))
    model.save_pretrained(tmp_path / "mup")
    reader = _export(tmp_path / "mup", tmp_path / "mup.gguf", "f32")
    reloaded = GPT.from_pretrained(tmp_path / "mup")
    expected = _expected(reloaded)
    got = {t.name: np.asarray(t.data) for t in reader.tensors}
    assert set(got) == set(expected) and "output.weight" in got  # μP's output multiplier unties the head
    for name, want in expected.items():
        np.testing.assert_array_equal(got[name].reshape(want.shape), want)


def test_export_refuses_to_overwrite_and_checks_suffix(model_dir, tmp_path, capsys):
    out = tmp_path / "m.gguf"
    out.write_bytes(b"keep me")
    assert export_main(["--model", str(model_dir), "--format", "gguf", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == b"keep me"
    assert export_main(["--model", str(model_dir), "--format", "gguf", "--out", str(tmp_path / "m.bin")]) == 2
    assert "*.gguf" in capsys.readouterr().err
