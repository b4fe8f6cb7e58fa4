"""The compiled decode step (compiled_decode.py): the same tokens and logits as the eager step at each
precision, one compilation reused across generations, weights changed in place followed, a failed
compile falling back to eager decoding with a warning, and `generate --compile` on the command line.

The production options build a C++ GEMM kernel per matmul shape (a few seconds more per test on a cold
Inductor cache), so one test compiles with them and the rest with freezing alone: the same graph and the
same plumbing (caches, guards, fallbacks), ATen's kernels instead of the C++ template."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch._dynamo.utils import counters

from cerebras_gpt import GPT, GPTConfig, compiled_decode, generate_ids, quantize
from cerebras_gpt.generation import DecodeState

PROMPTS = [[5, 6, 7, 8, 9, 10], [11, 12, 13]]
# Max |logit - fp32 eager logit| relative to the largest fp32 logit (as in test_quantize.py). The compiled
# int8 step rounds its rows to bf16 where the eager one quantizes them to 7 bits: no wider than eager int8.
TOLERANCE = {"fp32": 1e-4, "bf16": 0.02, "int8": 0.05}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GPT(GPTConfig.from_name("debug-tiny", block_size=64)).eval()


@pytest.fixture(autouse=True)
def quick_compile(request, monkeypatch):
    if "production_options" not in request.node.name:
        monkeypatch.setattr(compiled_decode, "INDUCTOR_OPTIONS", {"freezing": True})
        monkeypatch.setattr(compiled_decode, "FALLBACK_OPTIONS", {"freezing": True})


def compiled_graphs() -> int:
    return counters["stats"]["unique_graphs"]


@torch.inference_mode()
def step_logits(model: GPT, compiled: bool, rows: int) -> list[torch.Tensor]:
    """Prefill PROMPTS[:rows] (ragged when 2) and take 4 decode steps of fixed tokens; each step's logits."""
    prompts = PROMPTS[:rows]
    state = DecodeState(model, rows, 16, compiled=compiled)
    try:
        state.prefill(prompts)
        positions = torch.tensor([len(p) for p in prompts])
        out = []
        for k in range(4):
            tokens = torch.tensor([20 + k] * rows)
            pos = positions[:1] if rows == 1 else positions.unsqueeze(1)
            out.append(state.step(tokens, pos).clone())
            positions += 1
        return out
    finally:
        state.close()


@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8"])
def test_compiled_step_logits_match_eager(model, precision):
    """Batch 1 (shared position) and, in fp32, a ragged batch of 2 (a position per row): every step's
    logits close to the eager fp32 model's; fp32 to float rounding."""
    quantized = quantize(copy.deepcopy(model), precision)
    for rows in (1, 2) if precision == "fp32" else (1,):
        ref = step_logits(model, compiled=False, rows=rows)
        out = step_logits(quantized, compiled=True, rows=rows)
        for r, o in zip(ref, out):
            assert (o - r).abs().max() <= TOLERANCE[precision] * r.abs().max()
            if precision == "fp32":
                assert torch.equal(o.argmax(-1), r.argmax(-1))
    assert quantized not in compiled_decode._failed
    # A quantized model's step keeps its KV cache in bfloat16 (half the bytes read a step), fp32's in fp32.
    for step in compiled_decode._entry(quantized).steps.values():
        assert step.caches[0].k.dtype == (torch.float32 if precision == "fp32" else torch.bfloat16)


def test_production_options_give_eager_logits_and_tokens(model):
    """INDUCTOR_OPTIONS as shipped (max-autotune, the C++ GEMM template alone), fp32, batch 1."""
    assert compiled_decode.INDUCTOR_OPTIONS["max_autotune_gemm_backends"] == "CPP"
    m = copy.deepcopy(model)
    for r, o in zip(step_logits(model, compiled=False, rows=1), step_logits(m, compiled=True, rows=1)):
        assert (o - r).abs().max() <= TOLERANCE["fp32"] * r.abs().max()
    eager = generate_ids(model, PROMPTS[:1], temperature=0, max_new_tokens=6, eos_id=None)
    assert generate_ids(m, PROMPTS[:1], temperature=0, max_new_tokens=6, eos_id=None, compile=True) == eager
    assert m not in compiled_decode._failed
    (step,) = compiled_decode._entry(m).steps.values()
    assert step.options is compiled_decode.INDUCTOR_OPTIONS  # the template took every matmul


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_production_options_are_right_at_the_13b_ffn_width(precision):
    """A 20,480-wide FFN (Cerebras-GPT-13B's; K of its down-projection): the C++ GEMM template's blocking
    over a long K gives eager's logits. (Inductor's bmm template is wrong at K >= 16,384 in torch 2.13;
    the step's linears go through its mm template on frozen weights, which this keeps in check.)"""
    torch.manual_seed(0)
    wide = GPT(GPTConfig.from_name("debug-tiny", block_size=64, n_inner=20480)).eval()
    quantized = quantize(copy.deepcopy(wide), precision)
    for r, o in zip(step_logits(wide, compiled=False, rows=1), step_logits(quantized, compiled=True, rows=1)):
        assert (o - r).abs().max() <= TOLERANCE[precision] * r.abs().max()
    (step,) = compiled_decode._entry(quantized).steps.values()
    assert step.options is compiled_decode.INDUCTOR_OPTIONS  # the template took every matmul


def test_generation_reuses_the_compiled_step_and_follows_weight_updates(model):
    m = copy.deepcopy(model)
    eager = generate_ids(m, PROMPTS, temperature=0, max_new_tokens=6, eos_id=None)
    first = generate_ids(m, PROMPTS, temperature=0, max_new_tokens=6, eos_id=None, compile=True)
    assert first == eager
    graphs = compiled_graphs()
    # The same prompt lengths again, and other lengths whose cache rounds up to the same length (16).
    again = generate_ids(m, PROMPTS, temperature=0, max_new_tokens=6, eos_id=None, compile=True)
    other = generate_ids(m, [[1, 2, 3, 4], [7, 8]], temperature=0, max_new_tokens=5, eos_id=None, compile=True)
    assert again == eager
    assert other == generate_ids(m, [[1, 2, 3, 4], [7, 8]], temperature=0, max_new_tokens=5, eos_id=None)
    assert compiled_graphs() == graphs  # nothing compiled again
    # Weights are constants of the graph: an in-place update (an optimizer step) makes a new one.
    with torch.no_grad():
        m.transformer.h[0].mlp.c_fc.weight.mul_(3.0)
        m.transformer.wpe.weight.add_(0.5)
    updated = generate_ids(m, PROMPTS, temperature=0, max_new_tokens=6, eos_id=None, compile=True)
    assert updated == generate_ids(m, PROMPTS, temperature=0, max_new_tokens=6, eos_id=None)
    assert compiled_graphs() > graphs
    assert compiled_decode.release_compiled(m) and not compiled_decode.release_compiled(m)


def test_later_calls_of_a_compiled_shape_skip_dynamo(model):
    """Once compiled for some inputs, the step calls Inductor's graph itself (no Dynamo frame, no guards):
    the same tokens; inputs of another shape, dtype or grad mode still go through Dynamo."""
    m = copy.deepcopy(model)
    first = generate_ids(m, PROMPTS[:1], temperature=0, max_new_tokens=6, eos_id=None, compile=True)
    (step,) = compiled_decode._entry(m).steps.values()
    assert len(step.direct) == 1  # batch 1 at a shared position: one graph, kept
    through_dynamo = []
    dynamo_entry = step.compiled

    def recording(*args):
        through_dynamo.append(args)
        return dynamo_entry(*args)

    step.compiled = recording
    assert generate_ids(m, PROMPTS[:1], temperature=0, max_new_tokens=6, eos_id=None, compile=True) == first
    assert through_dynamo == []
    with torch.inference_mode():
        state = DecodeState(m, 1, 16, compiled=True)  # the same step, its caches attached again
        assert state.compiled_step is step
        state.prefill(PROMPTS[:1])
        direct = state.step(torch.tensor([20]), torch.tensor([6]))
        # The same token at the same position again (the same slot written), with a position per row ((1, 1)
        # rather than (1,)): another signature, which Dynamo compiles.
        per_row = state.step(torch.tensor([20]), torch.tensor([[6]]))
    state.close()
    assert len(through_dynamo) == 1 and len(step.direct) == 2
    assert torch.allclose(direct, per_row, atol=1e-5)
    assert compiled_decode.input_signature(torch.tensor([1]), torch.tensor([2])) not in step.direct  # grad mode


def broken(options: dict) -> dict:
    """``options`` with a C++ compiler that is not there (and no cached graph to hide it)."""
    return {**options, "cpp.cxx": ("/nonexistent/c++",), "fx_graph_cache": False}


def test_a_step_that_fails_with_the_first_options_compiles_with_the_fallback(model, monkeypatch):
    m = copy.deepcopy(model)
    monkeypatch.setattr(compiled_decode, "INDUCTOR_OPTIONS", broken(compiled_decode.INDUCTOR_OPTIONS))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no word of a failure: the fallback compiled
        out = generate_ids(m, PROMPTS, temperature=0, max_new_tokens=5, eos_id=None, compile=True)
    assert out == generate_ids(m, PROMPTS, temperature=0, max_new_tokens=5, eos_id=None)
    (step,) = compiled_decode._entry(m).steps.values()
    assert step.options is compiled_decode.FALLBACK_OPTIONS and m not in compiled_decode._failed


def test_a_step_that_does_not_compile_decodes_eagerly_with_one_warning(model, monkeypatch):
    """A C++ compiler that is not there: Inductor fails with both sets of options, the step warns once
    and decodes eagerly."""
    m = copy.deepcopy(model)
    monkeypatch.setattr(compiled_decode, "INDUCTOR_OPTIONS", broken(compiled_decode.INDUCTOR_OPTIONS))
    monkeypatch.setattr(compiled_decode, "FALLBACK_OPTIONS", broken(compiled_decode.FALLBACK_OPTIONS))
    with pytest.warns(UserWarning, match="compiling the decode step failed; decoding eagerly instead") as caught:
        out = generate_ids(m, PROMPTS, temperature=0, max_new_tokens=5, eos_id=None, compile=True)
    assert len([w for w in caught if "compiling the decode step failed" in str(w.message)]) == 1
    assert out == generate_ids(m, PROMPTS, temperature=0, max_new_tokens=5, eos_id=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once per model, not on every generation
        generate_ids(m, PROMPTS, temperature=0, max_new_tokens=5, eos_id=None, compile=True)


def test_an_older_torch_compile_without_isolate_recompiles_still_compiles(model, monkeypatch):
    """torch 2.11 has no ``isolate_recompiles``: the step compiles without it (and keeps Dynamo's guards)."""
    m = copy.deepcopy(model)
    older = compiled_decode._COMPILE_KEYWORDS - {"isolate_recompiles"}
    monkeypatch.setattr(compiled_decode, "_COMPILE_KEYWORDS", older)
    out = generate_ids(m, PROMPTS, temperature=0, max_new_tokens=5, eos_id=None, compile=True)
    assert out == generate_ids(m, PROMPTS, temperature=0, max_new_tokens=5, eos_id=None)
    assert m not in compiled_decode._failed


def test_a_torch_compile_that_refuses_the_call_decodes_eagerly(model, monkeypatch):
    """torch.compile itself raising (a keyword this PyTorch lacks) is a failed compile, not a crash."""
    m = copy.deepcopy(model)

    def refusing_compile(*args, **kwargs):
        raise TypeError("compile() got an unexpected keyword argument 'isolate_recompiles'")

    monkeypatch.setattr(torch, "compile", refusing_compile)
    with pytest.warns(UserWarning, match="decoding eagerly instead.*isolate_recompiles"):
        out = generate_ids(m, PROMPTS, temperature=0, max_new_tokens=5, eos_id=None, compile=True)
    assert out == generate_ids(m, PROMPTS, temperature=0, max_new_tokens=5, eos_id=None)


def test_generate_command_takes_compile(model, tmp_path, capsys):
    from cerebras_gpt.commands.generate import main

    model.save_pretrained(tmp_path / "model")
    common = ["--model", str(tmp_path / "model"), "--prompt", "Hello there", "--max-new-tokens", "6"]
    common += ["--temperature", "0"]
    assert main(common) == 0
    eager = capsys.readouterr().out
    assert main([*common, "--compile"]) == 0
    compiled = capsys.readouterr()
    assert compiled.out == eager
    assert "compiling the decode step" in compiled.err  # the wait before the first token is explained


def test_cache_length_rounds_up_by_at_most_a_quarter_or_16():
    lengths = {n: compiled_decode.cache_length(n, 2048) for n in range(1, 2049)}
    assert lengths[160] == 160 and lengths[161] == 192 and lengths[2048] == 2048
    assert all(n <= c < n + max(16, n // 4 + 1) for n, c in lengths.items())
    assert len(set(lengths.values())) < 30  # few distinct graphs over the whole context
    assert compiled_decode.cache_length(100, 64) == 64  # never past the context


def test_a_few_cache_shapes_are_kept_per_model(model):
    """Each (rows, length) keeps its compiled step and KV cache between generations; the least recently
    used goes beyond KEPT_SHAPES. (attach compiles nothing: that happens on a step's first call.)"""
    m = copy.deepcopy(model)
    first = compiled_decode.attach(m, 1, 16, torch.device("cpu"))
    assert compiled_decode.attach(m, 1, 16, torch.device("cpu")) is first
    assert m.transformer.h[0].kv_cache is first.caches[0]
    for rows in range(2, 2 + compiled_decode.KEPT_SHAPES):
        compiled_decode.attach(m, rows, 16, torch.device("cpu"))
    kept = compiled_decode._entry(m).steps
    assert len(kept) == compiled_decode.KEPT_SHAPES and (1, 16, "cpu") not in kept
    assert compiled_decode.attach(m, 1, 16, torch.device("cpu")) is not first
    assert compiled_decode.release_compiled(m)
