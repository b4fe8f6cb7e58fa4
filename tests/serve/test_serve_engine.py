"""The continuous-batching engine on its own: sequences joining and leaving a running batch decode
exactly what they decode alone (and what transformers' generate() decodes), sampling parameters,
log probabilities, time limits and capacity."""

from __future__ import annotations

import pytest
import torch
from conftest import engine_tokens as tokens
from conftest import run_engine as run

from cerebras_gpt import GPT, GPTConfig, load_tokenizer
from cerebras_gpt.generation import SamplingParams, generate_ids
from cerebras_gpt.serve.engine import Engine, EngineConfig, QueueFull, SeqRequest


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GPT(GPTConfig.from_name("debug-tiny")).eval()


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def test_batch_with_joins_and_leaves_equals_sequential_and_transformers(model, tokenizer, tmp_path):
    prompts = [
        tokenizer.encode(t)
        for t in (
            "Hello world",
            "The quick brown fox jumps over",
            "a",
            "Once upon a time",
            "x y z",
            "In 1905, Einstein published",
        )
    ]
    lengths = [12, 30, 5, 21, 40, 17]  # different lengths: sequences leave at different steps, others join
    greedy = [
        SeqRequest(p, n, SamplingParams(max_new_tokens=n, temperature=0, stop_at_eos=False))
        for p, n in zip(prompts, lengths)
    ]
    sampled = [
        SeqRequest(
            p, n, SamplingParams(max_new_tokens=n, temperature=0.9, top_k=40, top_p=0.95, seed=i, stop_at_eos=False)
        )
        for i, (p, n) in enumerate(zip(prompts, lengths))
    ]
    events = run(Engine(model, tokenizer, EngineConfig(max_slots=4)), greedy + sampled)
    for r, ev in zip(greedy + sampled, events):
        alone = generate_ids(model, [r.prompt], r.params, eos_id=None)[0]
        assert tokens(ev) == alone
        assert ev[-1].finish_reason == "length" and ev[-1].completion_tokens == r.max_tokens
        assert "".join(e.text for e in ev) == tokenizer.decode(alone)
    # The peer: transformers' greedy generate() on the same weights.
    transformers = pytest.importorskip("transformers")
    model.save_pretrained(tmp_path)
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    for r, ev in zip(greedy, events):
        ids = torch.tensor([r.prompt])
        out = hf.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=r.max_tokens,
            do_sample=False,
            min_new_tokens=r.max_tokens,
            pad_token_id=50256,
        )
        assert tokens(ev) == out[0, len(r.prompt) :].tolist()


def test_repetition_penalty_equals_transformers(model, tokenizer, tmp_path):
    transformers = pytest.importorskip("transformers")
    prompt = tokenizer.encode("the the the cat sat on the mat and the")
    req = SeqRequest(
        prompt, 20, SamplingParams(max_new_tokens=20, temperature=0, repetition_penalty=1.3, stop_at_eos=False)
    )
    (ev,) = run(Engine(model, tokenizer, EngineConfig(max_slots=2)), [req])
    model.save_pretrained(tmp_path)
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    ids = torch.tensor([prompt])
    out = hf.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=20,
        min_new_tokens=20,
        do_sample=False,
        repetition_penalty=1.3,
        pad_token_id=50256,
    )
    assert tokens(ev) == out[0, len(prompt) :].tolist()


def test_presence_frequency_penalties_and_logit_bias(model, tokenizer):
    """OpenAI's formula: logit - frequency * count - presence * (count > 0), over generated tokens."""
    prompt = tokenizer.encode("Repeat after me:")
    freq, pres, bias = 0.7, 0.4, {464: 3.0, 262: -5.0}
    req = SeqRequest(
        prompt,
        25,
        SamplingParams(max_new_tokens=25, temperature=0, stop_at_eos=False),
        presence_penalty=pres,
        frequency_penalty=freq,
        logit_bias=bias,
    )
    (ev,) = run(Engine(model, tokenizer, EngineConfig(max_slots=2)), [req])
    ids, counts, expected = list(prompt), torch.zeros(model.config.vocab_size), []
    with torch.no_grad():
        for _ in range(25):
            logits = model(torch.tensor([ids]))[0, -1] - freq * counts - pres * (counts > 0)
            logits[list(bias)] += torch.tensor(list(bias.values()))
            t = int(logits.argmax())
            expected.append(t)
            ids.append(t)
            counts[t] += 1
    assert tokens(ev) == expected


def test_stop_strings_eos_and_logprobs(model, tokenizer):
    prompt = tokenizer.encode("Stop here:")
    params = SamplingParams(max_new_tokens=30, temperature=0, stop_at_eos=False)
    (free,) = run(Engine(model, tokenizer), [SeqRequest(prompt, 30, params)])
    text = "".join(e.text for e in free)
    stop = text[8:11]
    stopped_params = SamplingParams(max_new_tokens=30, temperature=0, stop=[stop], stop_at_eos=False)
    stopped, lp, scored = run(
        Engine(model, tokenizer),
        [
            SeqRequest(prompt, 30, stopped_params),
            SeqRequest(prompt, 6, SamplingParams(max_new_tokens=6, temperature=0, stop_at_eos=False), logprobs=3),
            SeqRequest(prompt, 0, params, logprobs=2, prompt_logprobs=True),
        ],
    )
    assert "".join(e.text for e in stopped) == text[: text.index(stop)] and stopped[-1].finish_reason == "stop"
    ids = prompt + tokens(lp)
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids]))[0], dim=-1)
    for k, e in enumerate(e for e in lp if e.token is not None):
        pos = len(prompt) - 1 + k
        assert e.logprob == pytest.approx(float(logp[pos, e.token]), abs=1e-5)
        assert [t for t, _ in e.top_logprobs] == torch.topk(logp[pos], 3).indices.tolist()
    # max_tokens=0 with prompt log probabilities: scoring only, no token generated.
    (prompt_event,) = [e for e in scored if e.prompt_logprobs is not None]
    assert [t for t, _, _ in prompt_event.prompt_logprobs] == prompt
    assert prompt_event.prompt_logprobs[0][1] is None
    for t in range(1, len(prompt)):
        assert prompt_event.prompt_logprobs[t][1] == pytest.approx(float(logp[t - 1, prompt[t]]), abs=1e-5)
    assert scored[-1].finish_reason == "length" and scored[-1].completion_tokens == 0
    # A token taken as EOS (a tokenizer whose EOS is the 5th greedy token) ends the sequence there.
    eos = tokens(free)[4]
    (ended,) = run(
        Engine(model, SimpleEOS(tokenizer, eos)),
        [SeqRequest(prompt, 30, SamplingParams(max_new_tokens=30, temperature=0))],
    )
    first = tokens(free).index(eos)
    assert tokens(ended) == tokens(free)[: first + 1] and ended[-1].finish_reason == "stop"


class SimpleEOS:
    """The real tokenizer with a different EOS id (to end a greedy sequence at a known step)."""

    def __init__(self, tokenizer, eos_id: int) -> None:
        self._tok, self.eos_id = tokenizer, eos_id

    def __getattr__(self, name):
        return getattr(self._tok, name)


def test_time_limit_ends_a_request_with_length(tokenizer):
    torch.manual_seed(0)
    long_model = GPT(GPTConfig.from_name("debug-tiny", block_size=8192)).eval()
    req = SeqRequest(
        tokenizer.encode("Go"), 8000, SamplingParams(max_new_tokens=8000, temperature=0, stop_at_eos=False)
    )
    (ev,) = run(Engine(long_model, tokenizer, EngineConfig(request_timeout=0.3)), [req])
    assert ev[-1].finish_reason == "length" and 0 < ev[-1].completion_tokens < 8000


def test_bad_requests_and_capacity(model, tokenizer):
    engine = Engine(model, tokenizer, EngineConfig(max_slots=2, max_queue=1))
    sink = lambda ev: None  # noqa: E731
    for bad, match in (([], "empty"), ([50257], r"\[0, 50257\)"), ([1] * 100, "exceed")):
        with pytest.raises(ValueError, match=match):
            engine.submit([SeqRequest(bad, 40)], sink)
    engine.submit([SeqRequest([1], 4), SeqRequest([2], 4)], sink)
    engine.submit([SeqRequest([3], 4)], sink)
    with pytest.raises(QueueFull) as e:
        engine.submit([SeqRequest([4], 4)], sink)
    assert e.value.retry_after >= 1
    with pytest.raises(ValueError, match="max_slots"):
        EngineConfig(max_slots=0)
    with pytest.raises(ValueError, match="exceeds the model's context"):
        Engine(model, tokenizer, EngineConfig(max_seq_len=4096))
