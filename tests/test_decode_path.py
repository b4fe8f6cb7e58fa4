"""One decode path: the serving engine decodes what `stream_tokens` / a single-row `RowSampler` loop
decodes for the same requests (every sampling option, seeded; ragged batches; stop strings), and the
model's cache-row operations (copy, reset, truncate) leave a row as good as a fresh cache."""

from __future__ import annotations

import pytest
import torch
from conftest import engine_tokens
from conftest import run_engine as run_requests

from cerebras_gpt import GPT, GPTConfig, load_tokenizer
from cerebras_gpt.generation import (
    RowSampler,
    SamplingParams,
    generate,
    generate_ids,
    greedy_tokens,
    plain_greedy_tokens,
)
from cerebras_gpt.serve.engine import Engine, EngineConfig, SeqRequest


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GPT(GPTConfig.from_name("debug-tiny")).eval()


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def run_engine(model, tokenizer, requests: list[SeqRequest], max_slots: int = 4) -> list[list]:
    """All requests submitted before the engine starts, so they share batches (ragged prefills)."""
    return run_requests(Engine(model, tokenizer, EngineConfig(max_slots=max_slots)), requests)


@torch.inference_mode()
def reference_decode(model, req: SeqRequest, eos_id: int) -> tuple[list[int], list]:
    """One sequence alone: prefill, then one `RowSampler` step at a time through a one-row cache."""
    sampler = RowSampler(
        req.params,
        req.prompt,
        model.config.vocab_size,
        "cpu",
        req.presence_penalty,
        req.frequency_penalty,
        req.logit_bias,
        req.logprobs,
    )
    model.setup_kv_cache(1, len(req.prompt) + req.max_tokens)
    try:
        ids = torch.tensor([req.prompt])
        logits = model(ids, torch.arange(ids.shape[1]))[0, -1]
        out, logprobs = [], []
        for step in range(req.max_tokens):
            token, lp, top = sampler.sample(logits)
            out.append(token)
            logprobs.append((lp, top))
            if req.params.stop_at_eos and token == eos_id:
                break
            logits = model(torch.tensor([[token]]), torch.tensor([len(req.prompt) + step]))[0, -1]
    finally:
        model.clear_kv_cache()
    return out, logprobs


PROMPTS = ["Hello world", "The quick brown fox jumps over the lazy", "a", "Once upon a time there"]


def test_greedy_ragged_engine_batch_equals_stream_tokens_batch(model, tokenizer):
    prompts = [tokenizer.encode(p) for p in PROMPTS]
    params = SamplingParams(max_new_tokens=12, temperature=0, stop_at_eos=False)
    expected = generate_ids(model, prompts, params)
    events = run_engine(model, tokenizer, [SeqRequest(p, 12, params) for p in prompts])
    assert [engine_tokens(e) for e in events] == expected


@pytest.mark.parametrize(
    "sampling",
    [
        dict(temperature=0.8),
        dict(temperature=1.3, top_k=7),
        dict(temperature=0.9, top_p=0.6),
        dict(temperature=1.0, repetition_penalty=1.4),
        dict(temperature=0.7, top_k=20, top_p=0.9, repetition_penalty=1.2),
    ],
)
def test_seeded_sampling_engine_equals_stream_tokens(model, tokenizer, sampling):
    prompts = [tokenizer.encode(p) for p in PROMPTS]
    requests = [
        SeqRequest(p, 10, SamplingParams(max_new_tokens=10, seed=100 + i, stop_at_eos=False, **sampling))
        for i, p in enumerate(prompts)
    ]
    # stream_tokens on a one-prompt batch draws from the same seeded generator the engine gives the row.
    expected = [generate_ids(model, [r.prompt], r.params)[0] for r in requests]
    events = run_engine(model, tokenizer, requests)
    assert [engine_tokens(e) for e in events] == expected


def test_openai_options_engine_equals_single_row_decode(model, tokenizer):
    prompts = [tokenizer.encode(p) for p in PROMPTS]
    requests = [
        SeqRequest(prompts[0], 9, SamplingParams(max_new_tokens=9, seed=1, stop_at_eos=False), presence_penalty=1.5),
        SeqRequest(
            prompts[1],
            9,
            SamplingParams(max_new_tokens=9, seed=2, stop_at_eos=False),
            frequency_penalty=0.8,
            logprobs=3,
        ),
        SeqRequest(
            prompts[2],
            9,
            SamplingParams(max_new_tokens=9, temperature=0, stop_at_eos=False),
            logit_bias={11: 5.0, 13: 4.0},
            logprobs=0,
        ),
        SeqRequest(
            prompts[3],
            9,
            SamplingParams(max_new_tokens=9, seed=4, top_k=5, stop_at_eos=False),
            presence_penalty=0.5,
            frequency_penalty=0.5,
            logit_bias={262: -100.0},
            logprobs=2,
        ),
    ]
    events = run_engine(model, tokenizer, requests)
    for req, evs in zip(requests, events):
        tokens, logprobs = reference_decode(model, req, tokenizer.eos_id)
        assert engine_tokens(evs) == tokens
        got = [(e.logprob, e.top_logprobs) for e in evs if e.token is not None]
        if req.logprobs is None:
            assert all(lp is None for lp, _ in got)
        else:
            for (lp, top), (ref_lp, ref_top) in zip(got, logprobs):
                assert lp == pytest.approx(ref_lp, abs=1e-4)
                assert (top is None) == (ref_top is None)
                if top:
                    assert [t for t, _ in top] == [t for t, _ in ref_top]


def test_plain_greedy_rows_batched_beside_other_rows_equal_single_row_decode(model, tokenizer):
    # The engine picks the plain greedy rows with one argmax; rows that sample, penalise or report
    # log probabilities still go through their own sampler in the same step.
    prompts = [tokenizer.encode(p) for p in PROMPTS]
    greedy = SamplingParams(max_new_tokens=8, temperature=0, stop_at_eos=False)
    requests = [
        SeqRequest(prompts[0], 8, greedy),
        SeqRequest(prompts[1], 8, SamplingParams(max_new_tokens=8, seed=3, stop_at_eos=False)),
        SeqRequest(prompts[2], 8, greedy, logprobs=1),
        SeqRequest(prompts[3], 8, SamplingParams(max_new_tokens=8, temperature=0, repetition_penalty=1.3)),
    ]
    events = run_engine(model, tokenizer, requests)
    for req, evs in zip(requests, events):
        assert engine_tokens(evs) == reference_decode(model, req, tokenizer.eos_id)[0]


def test_plain_greedy_tokens_picks_only_plain_rows_and_leaves_nan_to_the_row():
    vocab = 7
    plain = RowSampler(SamplingParams(temperature=0), [1], vocab, "cpu")
    sampled = RowSampler(SamplingParams(temperature=0.7, seed=0), [1], vocab, "cpu")
    reported = RowSampler(SamplingParams(temperature=0), [1], vocab, "cpu", logprobs=0)
    assert plain.plain_greedy and not sampled.plain_greedy and not reported.plain_greedy
    logits = torch.randn(4, vocab)
    picked = plain_greedy_tokens([plain, sampled, reported, plain], logits)
    assert picked == {0: int(logits[0].argmax()), 3: int(logits[3].argmax())}
    logits[3, 2] = float("nan")  # that row's own sampler raises, for that row alone
    assert plain_greedy_tokens([plain, sampled, reported, plain], logits) == {}
    with pytest.raises(ValueError, match="NaN logits"):
        plain.sample(logits[3])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_greedy_tokens_are_torch_argmax_ties_and_all(dtype):
    """`greedy_tokens` (NumPy's argmax on the CPU, torch's for other dtypes): torch.argmax's tokens for logits
    rounded to bf16 (tied maxima: the first), rows all equal, a column slice (strided rows); NaN raises."""
    torch.manual_seed(0)
    logits = (torch.randn(6, 50257) * 3).to(torch.bfloat16).to(dtype)
    logits[1] = 0.5  # every token tied
    logits[2, 100] = logits[2, 7000] = logits[2].max() + 1  # two tied maxima
    for block in (logits, logits[:, 1000:3000], logits[3:4]):
        assert torch.equal(greedy_tokens(block), block.argmax(dim=-1))
    logits[4, 123] = float("nan")
    with pytest.raises(ValueError, match="NaN logits"):
        greedy_tokens(logits)


def test_stop_strings_engine_text_equals_generate(model, tokenizer):
    params = SamplingParams(max_new_tokens=16, temperature=0, stop_at_eos=False)
    full = generate(model, tokenizer, PROMPTS[1], params)
    stop = full[3:5]  # a string the greedy continuation is known to contain
    assert stop
    stopped = SamplingParams(max_new_tokens=16, temperature=0, stop_at_eos=False, stop=[stop])
    expected = generate(model, tokenizer, PROMPTS[1], stopped)
    assert stop not in expected and full.startswith(expected)
    events = run_engine(model, tokenizer, [SeqRequest(tokenizer.encode(PROMPTS[1]), 16, stopped)])[0]
    assert "".join(e.text for e in events) == expected
    assert events[-1].finish_reason == "stop"


@torch.inference_mode()
def test_cache_row_methods_reuse_a_row_like_a_fresh_cache(model):
    a, b = torch.tensor([[5, 6, 7, 8, 9]]), torch.tensor([[40, 41, 42]])
    model.setup_kv_cache(1, 16)
    fresh = model(b, torch.arange(3))[0]
    model.setup_kv_cache(3, 16)
    try:
        model(a, torch.arange(5), cache_rows=torch.tensor([1]))  # row 1 holds a longer, other sequence
        model.reset_cache_rows([1])
        for k in model._caches():
            assert not k.k[1].any() and not k.v[1].any()
        reused = model(b, torch.arange(3), cache_rows=torch.tensor([1]))[0]
        torch.testing.assert_close(reused, fresh)
        # Moving a row elsewhere carries its tokens: decoding the next token there gives the same logits.
        next_here = model(torch.tensor([[43]]), torch.tensor([3]), cache_rows=torch.tensor([1]))[0]
        model.truncate_cache_rows([1], 3)  # forget token 43 again
        model.copy_cache_rows([2], [1], length=3)
        next_there = model(torch.tensor([[43]]), torch.tensor([3]), cache_rows=torch.tensor([2]))[0]
        torch.testing.assert_close(next_there, next_here)
        assert model.kv_cache_shape == (3, 16)
        with pytest.raises(ValueError, match="dst has 2 rows but src has 1"):
            model.copy_cache_rows([0, 1], [2])
    finally:
        model.clear_kv_cache()
    with pytest.raises(ValueError, match="setup_kv_cache"):
        model.reset_cache_rows()
