"""Inference precisions (quantization.py): logits near fp32, greedy tokens mostly equal, generation and the
KV cache unchanged in use, save/load without re-quantizing, `--quantize` on generate/eval/serve, and a
canary for the deprecated PyTorch entry points the int8 kernel needs."""

from __future__ import annotations

import copy
import json
import platform
import subprocess
import sys

import pytest
import torch

from cerebras_gpt import GPT, GPTConfig, generate_ids, quantize
from cerebras_gpt.quantization import (
    BF16Linear,
    Int8Linear,
    check_precision,
    fbgemm_available,
    native_bf16_cpu,
    precision_of,
)

# Max |logit - fp32 logit| relative to the largest fp32 logit, on the trained-free debug-tiny model:
# bf16 keeps 8 mantissa bits (~0.4% per weight), int8 ~1/254 of each row's range plus 7-bit inputs.
TOLERANCE = {"bf16": 0.02, "int8": 0.05}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GPT(GPTConfig.from_name("debug-tiny", block_size=64)).eval()


@pytest.fixture(scope="module")
def model_dir(model, tmp_path_factory):
    directory = tmp_path_factory.mktemp("quantize_model")
    model.save_pretrained(directory)
    return directory


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_logits_close_to_fp32_and_greedy_tokens_mostly_equal(model, precision):
    ids = torch.randint(0, model.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(ids)
        q = quantize(copy.deepcopy(model), precision)
        out = q(ids)
    assert out.dtype == torch.float32
    assert (out - ref).abs().max() <= TOLERANCE[precision] * ref.abs().max()
    assert (out.argmax(-1) == ref.argmax(-1)).float().mean() >= 0.85
    # Every linear swapped, the tied head included; embeddings, LayerNorms and the KV cache stay fp32.
    cls = {"bf16": BF16Linear, "int8": Int8Linear}[precision]
    assert not [n for n, m in q.named_modules() if type(m) is torch.nn.Linear]
    assert isinstance(q.lm_head, cls) and q.transformer.wte.weight.dtype == torch.float32
    assert precision_of(q) == precision


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_cached_generation_equals_uncached_forward(model, precision):
    """generate_ids (KV cache, decode fast paths, prefill of many rows) picks the argmax of the same
    quantized model's full forward at every step, batch 1 and a ragged batch."""
    q = quantize(copy.deepcopy(model), precision)
    prompts = [[5, 6, 7, 8, 9, 10], [11, 12, 13]]
    for batch in ([prompts[0]], prompts):
        outs = generate_ids(q, batch, temperature=0, max_new_tokens=6, eos_id=None)
        for prompt, new in zip(batch, outs):
            seq = list(prompt)
            for token in new:
                with torch.no_grad():
                    expected = int(q(torch.tensor([seq]))[0, -1].argmax())
                # FBGEMM's per-call input scale covers the rows quantized together: allow a near tie.
                if token != expected:
                    with torch.no_grad():
                        logits = q(torch.tensor([seq]))[0, -1]
                    assert logits[expected] - logits[token] < 0.05 * logits.abs().max()
                seq.append(token)


@pytest.mark.skipif(not native_bf16_cpu(), reason="this CPU has no native bf16 (AVX512-BF16/AMX): F.linear is used")
def test_bf16_packed_layout_matches_plain_and_keeps_one_plain_state_dict():
    """Where oneDNN's packed bf16 layout is used, it gives F.linear's result at every row count a decode
    step or a prefill has, holds the weight once, and the state dict, loading and moving see the plain W."""
    torch.manual_seed(0)
    dense = torch.nn.Linear(96, 200)
    layer = BF16Linear.from_weight(dense.weight, dense.bias)
    plain_w = layer.weight.detach().clone()
    for rows in (1, 5, 64):
        x = torch.randn(2, rows, 96)
        want = torch.nn.functional.linear(x.bfloat16(), plain_w, layer.bias).float()
        got = layer(x)
        assert got.shape == want.shape and torch.allclose(got, want, rtol=1e-2, atol=1e-2)
    assert layer._packed is not None and layer.weight is None  # packed in place of the plain tensor
    state = layer.state_dict()
    assert list(state) == ["weight", "bias"] and torch.equal(state["weight"], plain_w)
    other = BF16Linear(96, 200)
    other.load_state_dict(state)
    assert torch.equal(other(x), layer(x))
    layer.load_state_dict({"weight": torch.zeros_like(plain_w), "bias": state["bias"]})  # new weights: repacked
    assert torch.equal(layer(x), state["bias"].float().expand(2, 64, 200))
    layer.to(torch.device("cpu"))
    assert layer._packed is None and layer.weight is not None  # moved as the plain tensor


def test_int8_weights_and_scales_are_per_output_channel(model):
    linear = model.transformer.h[0].mlp.c_fc
    q = Int8Linear.from_weight(linear.weight, linear.bias)
    assert q.weight_int8.dtype == torch.int8 and q.weight_scale.shape == (linear.out_features,)
    assert q.weight_int8.abs().amax(dim=1).eq(127).all()  # each row's largest weight uses the full range
    dequantized = q.weight_int8.float() * q.weight_scale[:, None]
    assert (dequantized - linear.weight).abs().max() <= q.weight_scale.max() / 2 + 1e-7


def test_bad_precisions_have_clear_errors(model):
    with pytest.raises(ValueError, match="int4' is not supported"):
        check_precision("int4")
    with pytest.raises(ValueError, match="choose one of none, bf16, int8"):
        check_precision("fp8")
    assert check_precision("none") == "fp32" and check_precision(None) == "fp32"
    q = quantize(copy.deepcopy(model), "int8")
    assert quantize(q, "int8") is q  # already there: unchanged
    with pytest.raises(ValueError, match="already int8"):
        quantize(q, "bf16")


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_save_load_round_trip_gives_identical_logits(model, precision, tmp_path):
    q = quantize(copy.deepcopy(model), precision)
    q.save_pretrained(tmp_path / "q")
    meta = json.loads((tmp_path / "q" / "config.json").read_text())
    assert meta["cerebras_gpt_precision"] == precision
    loaded = GPT.from_pretrained(tmp_path / "q")  # no re-quantizing: the stored int8/bf16 tensors
    assert precision_of(loaded) == precision
    ids = torch.arange(20).view(1, 20)
    with torch.no_grad():
        assert torch.equal(loaded(ids), q(ids))
    from safetensors import safe_open

    with safe_open(str(tmp_path / "q" / "model.safetensors"), framework="pt") as f:
        dtypes = {key: f.get_slice(key).get_dtype() for key in f.keys()}
    want = {"bf16": "BF16", "int8": "I8"}[precision]
    suffix = "weight_int8" if precision == "int8" else "weight"
    assert dtypes[f"lm_head.{suffix}"] == want and dtypes[f"transformer.h.1.mlp.c_proj.{suffix}"] == want
    assert dtypes["transformer.wte.weight"] == "F32"  # lookups stay exact


def test_deprecated_int8_kernel_api_is_still_there():
    """Canary: the int8 path needs FBGEMM's prepacked dynamic linear, which sits beside PyTorch's deprecated
    quantized tensors. If this fails after a PyTorch upgrade, int8 falls back to the slow dequantizing matmul:
    move quantize.Int8Linear to the replacement (torchao) and re-measure bench/generate.py --quantize."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("FBGEMM is an x86 backend")
    assert fbgemm_available(), "torch.backends.quantized has no fbgemm engine / torch.ops.quantized.linear_dynamic"
    for name in ("linear_prepack", "linear_dynamic"):
        assert hasattr(torch.ops.quantized, name), f"torch.ops.quantized.{name} is gone"
    assert hasattr(torch, "_make_per_channel_quantized_tensor"), "torch._make_per_channel_quantized_tensor is gone"
    layer = Int8Linear.from_weight(torch.randn(16, 8), torch.randn(16))
    x = torch.randn(3, 8)
    fast = layer(x)
    slow = (x @ (layer.weight_int8.float() * layer.weight_scale[:, None]).T) + layer.bias
    assert torch.allclose(fast, slow, atol=0.05 * slow.abs().max())


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "cerebras_gpt", *args], capture_output=True, text=True, timeout=120)


def test_generate_and_eval_take_quantize(model, model_dir, tmp_path):
    from cerebras_gpt import load_tokenizer

    out = run_cli(
        "generate",
        "--model",
        str(model_dir),
        "--prompt",
        "Hello",
        "--max-new-tokens",
        "6",
        "--temperature",
        "0",
        "--quantize",
        "int8",
    )
    assert out.returncode == 0, out.stderr
    tokenizer = load_tokenizer()
    ids = generate_ids(
        quantize(copy.deepcopy(model), "int8"), [tokenizer.encode("Hello")], temperature=0, max_new_tokens=6
    )[0]
    assert out.stdout.rstrip("\n") == "Hello" + tokenizer.decode(ids)

    text = tmp_path / "t.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 20)
    report = tmp_path / "r.json"
    out = run_cli("eval", "--model", str(model_dir), "--data", str(text), "--quantize", "bf16", "--output", str(report))
    assert out.returncode == 0, out.stderr
    result = json.loads(report.read_text())
    assert result["quantize"] == "bf16"

    for command in (["generate", "--prompt", "x"], ["eval", "--data", str(text)], ["serve"]):
        out = run_cli(command[0], "--model", str(model_dir), *command[1:], "--quantize", "int4")
        assert out.returncode == 2 and "int4' is not supported" in out.stderr, out.stderr


def test_serve_quantize_shows_in_models(model_dir, monkeypatch):
    """`serve --quantize int8` (through the command's run) serves the int8 model and says so in /v1/models."""
    pytest.importorskip("uvicorn")
    import uvicorn
    from fastapi.testclient import TestClient

    from cerebras_gpt.commands import serve

    apps = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: apps.append(app))
    assert serve.main(["--model", str(model_dir), "--quantize", "int8", "--device", "cpu"]) == 0
    with TestClient(apps[0]) as client:
        models = client.get("/v1/models").json()["data"]
        assert models[0]["quantization"] == "int8"
        reply = client.post(
            "/v1/completions", json={"model": str(model_dir), "prompt": "Hi", "max_tokens": 4, "temperature": 0}
        )
        assert reply.status_code == 200, reply.text
