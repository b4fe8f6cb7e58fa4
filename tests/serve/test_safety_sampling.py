"""Fault injection, sampling: values the API accepts that underflow float32 (a tiny temperature or
top_p) give valid tokens through the sampler, the live server and the CLI; a failure in one request's
sampling ends that request alone while concurrent requests finish unchanged."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_serve_api import MODEL, LiveServer, save_tiny

from cerebras_gpt.generation import GREEDY_TEMPERATURE, SamplingParams, sample_next

# A temperature and a top_p the API accepts (> 0) that are zero or overflow in float32.
TINY_TEMPERATURE = 1e-45
TINY_TOP_P = 1e-46


def test_the_tiny_values_do_underflow_float32():
    """The failure the sampler guards against: float32 softmax of logits / 1e-45 is NaN."""
    logits = torch.tensor([[1.0, 2.0, 3.0]])
    assert torch.isnan((logits / TINY_TEMPERATURE).softmax(-1)).any()
    assert torch.tensor(TINY_TOP_P, dtype=torch.float32) == 0  # `mass >= top_p` would drop every token


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(temperature=TINY_TEMPERATURE),
        dict(temperature=GREEDY_TEMPERATURE),
        dict(top_p=TINY_TOP_P),
        dict(top_p=5e-324, temperature=2.0),
        dict(top_k=1, top_p=TINY_TOP_P, temperature=1e-3),
        dict(temperature=1e-4, repetition_penalty=10.0),
    ],
)
def test_extreme_values_pick_the_argmax(kwargs):
    torch.manual_seed(0)
    logits = torch.randn(4, 1000) * 30
    token = sample_next(logits, SamplingParams(**kwargs), torch.Generator().manual_seed(0))
    assert token.tolist() == logits.argmax(-1).tolist()


def test_infinite_logits_share_the_mass_and_nan_is_a_clear_error():
    logits = torch.zeros(1, 10)
    logits[0, [3, 7]] = float("inf")
    draws = {int(sample_next(logits, SamplingParams(), torch.Generator().manual_seed(i))) for i in range(40)}
    assert draws == {3, 7}
    logits[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN logits"):
        sample_next(logits, SamplingParams())


@pytest.mark.parametrize("where", [0, 5, 9999])
def test_greedy_raises_on_nan_anywhere_in_any_row(where):
    """Greedy checks only the logits argmax chose: argmax takes a row's NaN wherever it is, even
    beside +inf and after the largest value, with or without a repetition penalty."""
    logits = torch.randn(3, 10000)
    logits[0, 4] = float("inf")
    logits[2, 17] = 50.0
    logits[2, where] = float("nan")
    seen = torch.zeros(3, 10000, dtype=torch.bool)
    seen[2, :100] = True
    for params in (SamplingParams(temperature=0), SamplingParams(temperature=0, repetition_penalty=1.3)):
        with pytest.raises(ValueError, match="NaN logits"):
            sample_next(logits, params, seen=seen)
    logits[2, where] = 0.0
    assert sample_next(logits, SamplingParams(temperature=0)).tolist() == logits.argmax(-1).tolist()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(temperature=float("inf")), "temperature=inf must be a finite number"),
        (dict(temperature=float("nan")), "temperature=nan must be a finite number"),
        (dict(top_p=float("nan")), "top_p=nan must be a finite number"),
        (dict(repetition_penalty=float("inf")), "repetition_penalty=inf must be a finite number"),
        (dict(temperature="0.5"), "temperature='0.5' must be a number"),
    ],
)
def test_non_finite_sampling_values_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SamplingParams(**kwargs)


# Every value the HTTP schema accepts (schemas._Sampling), the smallest floats included.
_temperatures = st.one_of(
    st.just(0.0), st.floats(min_value=5e-324, max_value=2.0), st.sampled_from([1e-45, 1e-6, 1e-5])
)
_top_ps = st.one_of(st.floats(min_value=5e-324, max_value=1.0, exclude_min=False), st.sampled_from([1e-46, 1.0]))


@settings(max_examples=150, deadline=None)
@given(
    temperature=_temperatures,
    top_p=_top_ps,
    top_k=st.one_of(st.none(), st.integers(1, 70)),
    repetition_penalty=st.floats(min_value=1e-3, max_value=10.0),
    scale=st.sampled_from([1e-3, 1.0, 100.0, 1e4, 1e30]),
    seed=st.integers(0, 2**32),
)
def test_every_accepted_value_gives_a_valid_token(temperature, top_p, top_k, repetition_penalty, scale, seed):
    params = SamplingParams(temperature=temperature, top_p=top_p, top_k=top_k, repetition_penalty=repetition_penalty)
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 64, generator=generator) * scale
    seen = torch.rand(3, 64, generator=generator) < 0.3
    token = sample_next(logits, params, generator, seen)
    assert token.shape == (3,) and token.dtype == torch.long
    assert ((token >= 0) & (token < 64)).all()


# ----------------------------------------------------------------------------- the live server
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with LiveServer(save_tiny(tmp_path_factory.mktemp("tiny")), max_slots=8, max_queue=16) as s:
        yield s


def _complete(server, max_tokens: int = 8, **kwargs):
    """(text, finish_reason) of one completion, or ("error", OpenAI error body) for a 500."""
    try:
        out = server.client().completions.create(model=MODEL, prompt="The quick brown", max_tokens=max_tokens, **kwargs)
    except openai.InternalServerError as e:
        return "error", e.body
    return out.choices[0].text, out.choices[0].finish_reason


GATE_SEED, FAILING_SEED = 777, 666


def _wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def _run_in_one_batch(server, monkeypatch, requests: list[dict]) -> list:
    """Run ``requests`` so that the engine admits them all in the same step and decodes them together.

    A gate request (seed 777) holds the engine thread inside its sampler until every request is
    queued; the sampler also raises for seed 666, the injected per-request failure.
    """
    gate, inside = threading.Event(), threading.Event()
    generate_module = sys.modules["cerebras_gpt.generation"]  # the package attribute is the function
    real = generate_module.sample_next  # the engine samples through generation.RowSampler

    def gated(logits, params, generator=None, seen=None):
        if params.seed == GATE_SEED:
            inside.set()
            gate.wait(30)
        if params.seed == FAILING_SEED:
            raise RuntimeError("injected sampling failure")
        return real(logits, params, generator, seen)

    monkeypatch.setattr(generate_module, "sample_next", gated)
    with ThreadPoolExecutor(len(requests) + 1) as pool:
        held = pool.submit(_complete, server, temperature=1.0, seed=GATE_SEED, max_tokens=1)
        # Wait on the sampler itself: ``engine.running`` can still count the previous request's
        # sequence for a moment after its response has arrived, which once let the others slip in
        # beside the gate request.
        _wait_for(lambda: inside.is_set() or held.done(), "the gate request to start")
        assert not held.done(), held.result()
        futures = [pool.submit(_complete, server, **kw) for kw in requests]
        _wait_for(lambda: server.engine.waiting == len(requests), "every request to be queued")
        gate.set()
        results = [f.result() for f in futures]
        assert held.result()[1] == "length"
    monkeypatch.setattr(generate_module, "sample_next", real)
    return results


NORMAL = [dict(temperature=0.0), dict(temperature=0.9, seed=1), dict(temperature=0.7, top_p=0.9, seed=2)]


def test_extreme_values_through_the_server_with_concurrent_requests(server, monkeypatch):
    expected = [_complete(server, **kw) for kw in NORMAL]
    greedy = expected[0]
    extreme = [
        dict(temperature=TINY_TEMPERATURE),
        dict(top_p=TINY_TOP_P, seed=3),
        dict(temperature=TINY_TEMPERATURE, top_p=TINY_TOP_P, presence_penalty=2.0, logit_bias={"5": -100.0}),
    ]
    results = _run_in_one_batch(server, monkeypatch, NORMAL + extreme)
    assert results[: len(NORMAL)] == expected
    # A tiny temperature or top_p is greedy.
    assert results[len(NORMAL)] == greedy and results[len(NORMAL) + 1] == greedy
    assert all(reason == "length" for _, reason in results)
    assert server.health()["status"] == "ok"


def test_a_failing_request_ends_alone(server, monkeypatch):
    """Fault injection: sampling raises for one request of a batch; the others finish unchanged."""
    expected = [_complete(server, **kw) for kw in NORMAL]
    errors_before = server.engine.metrics.finished.get("error", 0)
    results = _run_in_one_batch(server, monkeypatch, [NORMAL[0], dict(temperature=0.5, seed=FAILING_SEED), *NORMAL[1:]])
    assert [results[0], *results[2:]] == expected
    status, body = results[1]
    assert status == "error" and body["type"] == "server_error" and "generation failed" in body["message"]
    assert server.engine.metrics.finished.get("error", 0) == errors_before + 1
    assert _complete(server, **NORMAL[1]) == expected[1]  # the server keeps serving


def test_cli_generate_with_a_tiny_temperature_and_top_p(tmp_path):
    model_dir = save_tiny(tmp_path / "model")
    args = ["--model", str(model_dir), "--prompt", "Hello", "--max-new-tokens", "6", "--no-stop-at-eos"]
    runs = [
        subprocess.run(
            [sys.executable, "-m", "cerebras_gpt", "generate", *args, *extra],
            capture_output=True,
            text=True,
            timeout=120,
        )
        for extra in (["--temperature", "0"], ["--temperature", "1e-45", "--top-p", "1e-46"])
    ]
    for out in runs:
        assert out.returncode == 0, out.stderr
        assert "Traceback" not in out.stderr
    assert runs[0].stdout == runs[1].stdout and runs[0].stdout.startswith("Hello")
