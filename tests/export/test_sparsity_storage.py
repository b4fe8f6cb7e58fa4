"""Sparse storage round trip and sparse inference kernels on a sparse tiny model."""

from __future__ import annotations

import json

import pytest
import torch

from cerebras_gpt import GPT, GPTConfig
from cerebras_gpt.export.sparse import load_sparse, save_sparse
from cerebras_gpt.generation import SamplingParams, generate_ids
from cerebras_gpt.sparse_kernels import CSRLinear, is_2to4, prune_2to4, sparsify_for_inference
from cerebras_gpt.sparsity import Sparsifier, SparsityConfig, measure_sparsity


def _sparse_model(name: str = "debug-tiny", sparsity: float = 0.9, **overrides) -> GPT:
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_name(name, **overrides)).eval()
    Sparsifier(SparsityConfig(sparsity=sparsity), model, 1).apply(model)
    return model


@pytest.mark.parametrize("name", ["debug-tiny", "debug-tiny-muP"])
def test_sparse_storage_round_trip_is_bit_exact(tmp_path, name):
    model = _sparse_model(name)
    with torch.no_grad():  # a negative zero and a dense matrix must survive too
        model.transformer.h[0].mlp.c_fc.weight[0, 0] = -0.0
    sizes = save_sparse(model, tmp_path / "sparse")
    loaded = load_sparse(tmp_path / "sparse")
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype
        assert torch.equal(a[key].view(torch.int32), b[key].view(torch.int32)), key  # bit patterns
    assert loaded.lm_head.weight is loaded.transformer.wte.weight
    tokens = torch.randint(0, 50257, (2, 16))
    assert torch.equal(model(tokens), loaded(tokens))
    meta = json.loads((tmp_path / "sparse" / "config.json").read_text())
    encodings = {k: v["encoding"] for k, v in meta["tensors"].items()}
    assert encodings["transformer.h.1.attn.c_attn.weight"] == "bitmask"
    assert encodings["transformer.wte.weight"] == "dense"
    assert sizes["stored"] < sizes["dense"]


def test_sparse_storage_size_of_sparse_matrices(tmp_path):
    # Without the embeddings, a 90%-sparse model stores its matrices in ~13% of the dense bytes
    # (4 bytes per nonzero + 1 bit per entry).
    model = _sparse_model("debug-small", vocab_size=64, block_size=8)
    sizes = save_sparse(model, tmp_path / "s")
    assert sizes["stored"] < 0.25 * sizes["dense"]


def test_storage_names_still_import_from_sparsity():
    from cerebras_gpt import sparsity

    assert sparsity.save_sparse is save_sparse and sparsity.load_sparse is load_sparse  # moved to export.sparse
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        sparsity.nothing  # noqa: B018


def test_load_sparse_rejects_a_plain_model_dir(tmp_path):
    model = _sparse_model()
    model.save_pretrained(tmp_path / "hf")
    with pytest.raises(ValueError, match="sparse model directory"):
        load_sparse(tmp_path / "hf")
    # The default model directory stays plain Hugging Face, zeros included.
    again = GPT.from_pretrained(tmp_path / "hf")
    assert min(measure_sparsity(again).values()) >= 0.9 - 1e-3


def test_csr_kernels_match_dense_logits_and_generation():
    model = _sparse_model()
    tokens = torch.randint(0, 50257, (2, 24))
    want = model(tokens)
    prompts = [[1, 2, 3, 4], [5, 6]]
    want_ids = generate_ids(model, prompts, SamplingParams(max_new_tokens=6, temperature=0.0))
    choices = sparsify_for_inference(model, mode="always")
    assert len(choices) == 8 and all(c.kernel == "csr" for c in choices)
    assert isinstance(model.transformer.h[0].mlp.c_fc, CSRLinear)
    torch.testing.assert_close(model(tokens), want, rtol=1e-5, atol=1e-5)
    assert generate_ids(model, prompts, SamplingParams(max_new_tokens=6, temperature=0.0)) == want_ids


def test_auto_mode_measures_and_keeps_dense_below_threshold():
    model = _sparse_model(sparsity=0.3)
    assert all(c.kernel == "dense" and c.dense_ms is None for c in sparsify_for_inference(model, min_sparsity=0.5))
    model = _sparse_model()
    choices = sparsify_for_inference(model, mode="auto", calib_tokens=64, repeats=3)
    for c in choices:
        assert c.dense_ms is not None and c.sparse_ms is not None
        assert (c.kernel == "csr") == (c.sparse_ms < c.dense_ms)
    with pytest.raises(ValueError, match="auto, always or off"):
        sparsify_for_inference(model, mode="fast")


def test_prune_2to4_pattern():
    model = _sparse_model(sparsity=0.0)
    prune_2to4(model)
    w = model.transformer.h[0].attn.c_attn.weight
    assert is_2to4(w) and float((w == 0).float().mean()) == pytest.approx(0.5)
    assert not is_2to4(torch.ones(4, 8))


@pytest.mark.cuda
@pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] < 8,
    reason="2:4 semi-structured kernels need an Ampere or newer GPU",
)
def test_2to4_kernels_on_cuda():
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_name("debug-medium")).to("cuda", torch.float16).eval()
    prune_2to4(model)
    tokens = torch.randint(0, 50257, (4, 128), device="cuda")
    want = model(tokens)
    choices = sparsify_for_inference(model, mode="always")
    assert {c.kernel for c in choices} == {"2:4"}
    torch.testing.assert_close(model(tokens), want, rtol=2e-2, atol=2e-2)
