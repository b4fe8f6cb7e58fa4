"""Fuzzing the live server: schemathesis generates requests (valid and invalid) from the app's own
OpenAPI schema, and hypothesis throws arbitrary JSON at the two POST routes; no response may be a 5xx,
and the server keeps answering afterwards."""

from __future__ import annotations

import json

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_serve_api import MODEL, LiveServer, save_tiny


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    with LiveServer(save_tiny(tmp_path_factory.mktemp("fuzz")), max_slots=8, max_queue=64) as s:
        yield s


@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode), ids=lambda m: m.value)
def test_openapi_schema_fuzz_no_server_errors(fuzz_server, mode):
    """Each operation of /openapi.json, with schema-conforming (positive) or violating (negative) data."""
    schema = schemathesis.openapi.from_url(fuzz_server.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/completions", "/v1/chat/completions", "/v1/models"}
    if mode == schemathesis.GenerationMode.NEGATIVE:  # GET routes take no input to violate
        operations = [op for op in operations if op.method.upper() == "POST"]
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case) -> None:
            response = case.call(base_url=fuzz_server.url, timeout=60)
            assert response.status_code < 500, (case.path, case.body, response.status_code, response.text[:500])
            if response.status_code >= 400:
                assert set(response.json()["error"]) == {"message", "type", "param", "code"}

        check()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
# Bodies close to valid ones (the right keys, wild values) reach deeper than random objects.
fields = st.sampled_from(
    [
        "model",
        "prompt",
        "messages",
        "max_tokens",
        "temperature",
        "top_p",
        "top_k",
        "n",
        "stop",
        "seed",
        "logprobs",
        "echo",
        "stream",
        "logit_bias",
        "presence_penalty",
        "top_logprobs",
        "frequency_penalty",
        "repetition_penalty",
        "stream_options",
        "max_completion_tokens",
    ]
)
near_valid = st.fixed_dictionaries(
    {
        "model": st.just(MODEL),
        "prompt": st.text(max_size=30),
        "messages": st.just([{"role": "user", "content": "hi"}]),
        "max_tokens": st.integers(-2, 40),
    }
).flatmap(lambda base: st.dictionaries(fields, json_values, max_size=4).map(lambda extra: {**base, **extra}))


@given(route=st.sampled_from(["/v1/completions", "/v1/chat/completions"]), body=near_valid | json_values)
@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_arbitrary_json_bodies_never_5xx(fuzz_server, route, body):
    # json.dumps writes NaN/Infinity literals, which Python's JSON parser (hence the server's) accepts.
    response = httpx.post(
        fuzz_server.url + route, content=json.dumps(body), timeout=60, headers={"content-type": "application/json"}
    )
    # 404: a fuzzed "model" names no served model (model_not_found, as OpenAI and vLLM answer).
    assert response.status_code in (200, 400, 404, 429), (body, response.status_code, response.text[:500])
    if response.status_code in (400, 404):
        assert response.json()["error"]["type"] == "invalid_request_error"


def test_server_still_healthy_after_fuzzing(fuzz_server):
    assert httpx.get(fuzz_server.url + "/health").json()["status"] == "ok"
    r = httpx.post(fuzz_server.url + "/v1/completions", json={"model": MODEL, "prompt": "ok", "max_tokens": 2})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 2
