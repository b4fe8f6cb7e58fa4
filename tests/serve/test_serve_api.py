"""The OpenAI-compatible server, driven by the official `openai` client against a live uvicorn server
on loopback: completions, chat, streaming, parameters, errors in OpenAI's shape, the API key,
concurrent streams equal to the same requests one at a time, disconnects, and queue-full 429s."""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
import torch

from cerebras_gpt import GPT, GPTConfig, chat
from cerebras_gpt.generation import generate
from cerebras_gpt.hf import load_model_and_tokenizer

MODEL = "tiny"


class LiveServer:
    """A uvicorn server in a thread on a free loopback port, serving a model directory."""

    def __init__(self, model_dir: Path, api_key: str | None = None, **engine) -> None:
        import uvicorn

        from cerebras_gpt.serve.app import create_app
        from cerebras_gpt.serve.engine import Engine, EngineConfig

        model, tokenizer = load_model_and_tokenizer(model_dir)
        self.engine = Engine(model, tokenizer, EngineConfig(**engine))
        app = create_app(self.engine, MODEL, api_key=api_key)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()

    def client(self, api_key: str = "unused") -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=api_key, max_retries=0, timeout=60)

    def health(self) -> dict:
        return httpx.get(self.url + "/health").json()


def save_tiny(directory: Path, block_size: int = 128) -> Path:
    torch.manual_seed(0)
    GPT(GPTConfig.from_name("debug-tiny", block_size=block_size)).eval().save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def server(model_dir):
    with LiveServer(model_dir, max_slots=4, max_queue=16) as s:
        yield s


@pytest.fixture(scope="module")
def reference(model_dir):
    """The model run directly through the core generation API (what the server must reproduce)."""
    return load_model_and_tokenizer(model_dir)


def test_models_health_metrics_and_page(server):
    models = server.client().models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert server.health()["status"] == "ok"
    metrics = httpx.get(server.url + "/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    for name in (
        "requests_total",
        "generation_tokens_total",
        "queue_depth",
        "time_to_first_token_seconds_bucket",
        "generation_tokens_per_second",
    ):
        assert f"cerebras_gpt_{name}" in metrics.text
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and "<textarea" in page.text


def test_completion_equals_core_generate(server, reference):
    model, tok = reference
    client = server.client()
    for prompt, n_tokens in (("The meaning of life is", 24), ("Hello", 5), ("", 8)):
        out = client.completions.create(model=MODEL, prompt=prompt, max_tokens=n_tokens, temperature=0)
        expected = generate(model, tok, prompt or "<|endoftext|>", max_new_tokens=n_tokens, temperature=0)
        assert out.choices[0].text == expected
        assert out.usage.prompt_tokens == max(1, len(tok.encode(prompt)))
        assert out.usage.completion_tokens == n_tokens and out.choices[0].finish_reason == "length"
        assert out.usage.total_tokens == out.usage.prompt_tokens + n_tokens


def test_completion_stream_equals_non_stream(server):
    client = server.client()
    kwargs = dict(model=MODEL, prompt="Streaming test:", max_tokens=20, temperature=0.9, seed=123)
    full = client.completions.create(**kwargs)
    chunks = list(client.completions.create(stream=True, **kwargs))
    assert "".join(c.choices[0].text for c in chunks) == full.choices[0].text
    assert chunks[-1].choices[0].finish_reason == "length"
    assert chunks[-1].usage.completion_tokens == 20
    usage_chunks = list(client.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs))
    assert usage_chunks[-1].choices == [] and usage_chunks[-1].usage.completion_tokens == 20


def test_chat_equals_template_and_streams(server, reference):
    model, tok = reference
    client = server.client()
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a colour."}]
    out = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=16, temperature=0)
    expected = generate(model, tok, chat.render_prompt(messages), max_new_tokens=16, temperature=0, stop=chat.STOP)
    assert out.choices[0].message.role == "assistant"
    assert out.choices[0].message.content == expected.lstrip()
    assert out.usage.prompt_tokens == len(tok.encode(chat.render_prompt(messages)))
    stream = list(
        client.chat.completions.create(
            model=MODEL,
            messages=messages,
            max_tokens=16,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert stream[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == out.choices[0].message.content
    assert stream[-1].usage.completion_tokens == out.usage.completion_tokens


def test_sampling_parameters(server, reference):
    model, tok = reference
    client = server.client()
    base = dict(model=MODEL, prompt="Once upon a time", max_tokens=30)
    a = client.completions.create(temperature=1.0, seed=7, n=3, **base)
    b = client.completions.create(temperature=1.0, seed=7, n=3, **base)
    assert [c.text for c in a.choices] == [c.text for c in b.choices] and [c.index for c in a.choices] == [0, 1, 2]
    assert len({c.text for c in a.choices}) > 1  # each choice samples with its own generator
    assert a.usage.completion_tokens == 90
    # top_k=1 is greedy whatever the temperature.
    greedy = client.completions.create(temperature=0, **base).choices[0].text
    assert client.completions.create(temperature=1.5, extra_body={"top_k": 1}, seed=3, **base).choices[0].text == greedy
    # A stop string cuts the text before it and ends with finish_reason "stop".
    stop = greedy[10:14]
    cut = client.completions.create(temperature=0, stop=[stop], **base)
    assert cut.choices[0].text == greedy[: greedy.index(stop)] and cut.choices[0].finish_reason == "stop"
    # Log probabilities: the chosen token's and the top alternatives, from the model's distribution.
    lp = client.completions.create(temperature=0, logprobs=3, echo=True, **dict(base, max_tokens=4))
    lps = lp.choices[0].logprobs
    n_prompt = len(tok.encode(base["prompt"]))
    assert lp.choices[0].text.startswith(base["prompt"]) and len(lps.tokens) == n_prompt + 4
    assert lps.token_logprobs[0] is None
    ids = tok.encode(lp.choices[0].text)
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids]))[0], dim=-1)
    for t in range(1, len(ids)):
        assert lps.token_logprobs[t] == pytest.approx(float(logp[t - 1, ids[t]]), abs=1e-4)
        assert len(lps.top_logprobs[t]) == 3
    # Penalties and logit_bias are accepted; a huge bias forces a token.
    forced = client.completions.create(temperature=0, logit_bias={"198": 100}, **dict(base, max_tokens=3))
    assert forced.choices[0].text == "\n\n\n"
    pen = client.completions.create(
        temperature=0, frequency_penalty=2.0, presence_penalty=2.0, extra_body={"repetition_penalty": 1.5}, **base
    )
    assert pen.usage.completion_tokens == 30


@pytest.mark.parametrize(
    "body, param",
    [
        ({"model": MODEL, "prompt": "word " * 200}, "max_tokens"),
        ({"model": MODEL, "prompt": "x", "max_tokens": 500}, "max_tokens"),
        ({"model": MODEL, "prompt": "x", "temperature": 3.0}, "temperature"),
        ({"model": MODEL, "prompt": "x", "top_p": 0}, "top_p"),
        ({"model": MODEL, "prompt": "x", "max_tokens": "10"}, "max_tokens"),
        ({"model": MODEL, "prompt": "x", "n": True}, "n"),
        ({"model": MODEL, "prompt": [1, 2, 99999999]}, "prompt"),
        ({"model": MODEL, "prompt": "x", "logit_bias": {"abc": 1}}, "logit_bias"),
        ({"model": MODEL, "prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"model": MODEL}, "prompt"),
    ],
)
def test_bad_requests_get_400_in_openai_shape(server, body, param):
    r = httpx.post(server.url + "/v1/completions", json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    assert error["param"] is not None and error["param"].split(".")[0] == param


def test_unknown_model_is_404_model_not_found_like_openai_and_vllm(server):
    client = server.client()
    for create in (
        lambda: client.completions.create(model="no-such-model", prompt="x", max_tokens=2),
        lambda: client.chat.completions.create(
            model="no-such-model", max_tokens=2, messages=[{"role": "user", "content": "hi"}]
        ),
    ):
        with pytest.raises(openai.NotFoundError) as e:
            create()
        assert e.value.status_code == 404
        assert e.value.body["code"] == "model_not_found" and e.value.body["param"] == "model"
        assert e.value.body["type"] == "invalid_request_error" and "no-such-model" in e.value.body["message"]


def test_errors_through_the_openai_client_and_server_keeps_serving(server):
    client = server.client()
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], temperature=-1)
    assert e.value.status_code == 400 and e.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=[])
    for raw in (b"{not json", b"[1, 2]", b'"text"', b""):
        r = httpx.post(server.url + "/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 400 and "message" in r.json()["error"]
    missing = httpx.get(server.url + "/v1/nothing-here")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    ok = client.completions.create(model=MODEL, prompt="still alive", max_tokens=2)
    assert ok.usage.completion_tokens == 2


def test_api_key(model_dir):
    with LiveServer(model_dir, api_key="sesame", max_slots=2) as s:
        with pytest.raises(openai.AuthenticationError) as e:
            s.client("wrong").models.list()
        assert e.value.status_code == 401 and e.value.body["code"] == "invalid_api_key"
        assert httpx.post(s.url + "/v1/completions", json={"model": MODEL, "prompt": "x"}).status_code == 401
        out = s.client("sesame").completions.create(model=MODEL, prompt="x", max_tokens=3)
        assert out.usage.completion_tokens == 3
        assert httpx.get(s.url + "/health").status_code == 200


def test_concurrent_streams_equal_sequential(server):
    client = server.client()
    requests = [
        dict(prompt=f"Request {i}: the", max_tokens=12 + 3 * i, temperature=0 if i % 2 else 0.8, seed=i)
        for i in range(8)
    ]

    def run(kwargs) -> str:
        return "".join(c.choices[0].text for c in client.completions.create(model=MODEL, stream=True, **kwargs))

    sequential = [run(kw) for kw in requests]
    with ThreadPoolExecutor(len(requests)) as pool:
        concurrent = list(pool.map(run, requests))
    assert concurrent == sequential


@pytest.fixture(scope="module")
def long_model_dir(tmp_path_factory) -> Path:
    """A tiny model with an 8192-token context: generations long enough (seconds) to interrupt."""
    return save_tiny(tmp_path_factory.mktemp("tiny-long"), block_size=8192)


def _finished(server, reason: str) -> int:
    return server.engine.metrics.finished.get(reason, 0)


def test_disconnect_frees_the_slot(long_model_dir):
    with LiveServer(long_model_dir, max_slots=2) as s:
        body = {"model": MODEL, "prompt": "Go on:", "max_tokens": 8000, "stream": True, "ignore_eos": True}
        with httpx.stream("POST", s.url + "/v1/completions", json=body) as r:
            lines = r.iter_lines()
            assert next(line for line in lines if line.startswith("data: "))
            assert s.health()["running"] == 1
        # The client is gone: its slot is free long before 8000 tokens could have been generated.
        deadline = time.monotonic() + 30
        while s.health()["running"] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert s.health()["running"] == 0
        assert _finished(s, "cancelled") == 1 and s.engine.metrics.generation_tokens < 8000


def test_queue_full_gives_429_with_retry_after(long_model_dir):
    with LiveServer(long_model_dir, max_slots=1, max_queue=1) as s:
        long = {"model": MODEL, "prompt": "Go on:", "max_tokens": 8000, "stream": True, "ignore_eos": True}
        with httpx.stream("POST", s.url + "/v1/completions", json=long) as r:
            lines = r.iter_lines()  # kept referenced: closing the iterator would hang up
            next(line for line in lines if line.startswith("data: "))  # running in the only slot
            with ThreadPoolExecutor(1) as pool:
                queued = pool.submit(s.client().completions.create, model=MODEL, prompt="queued", max_tokens=3)
                deadline = time.monotonic() + 30
                while s.health()["waiting"] < 1 and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert s.health()["waiting"] == 1
                refused = httpx.post(s.url + "/v1/completions", json={"model": MODEL, "prompt": "x", "max_tokens": 3})
                assert refused.status_code == 429
                assert int(refused.headers["retry-after"]) >= 1
                assert refused.json()["error"]["code"] == "rate_limit_exceeded"
                with pytest.raises(openai.RateLimitError):
                    s.client().completions.create(model=MODEL, prompt="x", max_tokens=3)
                r.close()  # hang up: the queued request gets the slot and completes
                assert queued.result(timeout=60).usage.completion_tokens == 3
