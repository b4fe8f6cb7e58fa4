"""The playground page in a real headless browser (Debian's chromium, driven by Playwright): type a
prompt, set temperature and max tokens, press Generate, and watch the streamed text arrive; it must be
exactly what the API returns for the same request. Chat mode keeps a multi-turn history; seed, top-k and
stop strings reach the API."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_serve_api import MODEL, LiveServer, save_tiny

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="Debian's chromium is not installed at /usr/bin/chromium (make browser, or apt-get install chromium)",
    ),
]


@pytest.fixture(scope="module")
def page_server(tmp_path_factory):
    with LiveServer(save_tiny(tmp_path_factory.mktemp("page")), api_key="pg-key", max_slots=4) as s:
        yield s


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield b
        b.close()


def test_playground_streams_the_api_completion(page_server, browser):
    expected = (
        page_server.client("pg-key")
        .completions.create(model=MODEL, prompt="The playground says", max_tokens=24, temperature=0)
        .choices[0]
        .text
    )
    chunks = page_server.client("pg-key").completions.create(
        model=MODEL, prompt="The playground says", max_tokens=24, temperature=0, stream=True
    )
    assert sum(1 for c in chunks if c.choices[0].text) > 1  # the text arrives in several pieces

    page = browser.new_page()
    page.goto(page_server.url + "/")
    page.fill("#api-key", "pg-key")
    page.fill("#prompt", "The playground says")
    page.fill("#temperature", "0")
    page.fill("#max-tokens", "24")
    page.select_option("#mode", "completion")
    with page.expect_response(lambda r: r.url.endswith("/v1/completions")) as response:
        page.click("#generate")
    assert response.value.status == 200
    assert response.value.headers["content-type"].startswith("text/event-stream")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('done')", timeout=60_000)
    assert page.text_content("#generated") == expected
    assert page.inner_text("#output .prompt") == "The playground says"
    status = page.inner_text("#status")
    assert "24 tokens" in status and "finish_reason length" in status
    assert MODEL in page.inner_text("#model")
    page.close()


def test_playground_chat_mode_and_errors(page_server, browser):
    page = browser.new_page()
    page.goto(page_server.url + "/")
    page.fill("#prompt", "Hello there")
    page.select_option("#mode", "chat")
    page.fill("#temperature", "0")
    page.fill("#max-tokens", "8")
    page.click("#generate")  # no API key yet: the server's 401 message is shown
    page.wait_for_function("document.getElementById('status').className === 'error'", timeout=60_000)
    assert "API key" in page.inner_text("#status")
    page.fill("#api-key", "pg-key")
    page.click("#generate")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('done')", timeout=60_000)
    expected = page_server.client("pg-key").chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hello there"}], max_tokens=8, temperature=0
    )
    assert page.text_content("#generated") == expected.choices[0].message.content
    page.close()


def _wait_done(page) -> None:
    page.wait_for_function("document.getElementById('status').textContent.startsWith('done')", timeout=60_000)


def test_playground_multi_turn_chat_sends_the_history(page_server, browser):
    client = page_server.client("pg-key")
    page = browser.new_page()
    page.goto(page_server.url + "/")
    page.fill("#api-key", "pg-key")
    page.select_option("#mode", "chat")
    assert page.is_visible("#new-chat") and page.is_visible("#system")
    page.fill("#temperature", "0")
    page.fill("#max-tokens", "6")
    page.fill("#prompt", "Hello there")
    page.click("#generate")
    _wait_done(page)
    first_reply = page.text_content("#generated")
    assert (
        first_reply
        == client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hello there"}], max_tokens=6, temperature=0
        )
        .choices[0]
        .message.content
    )
    assert page.input_value("#prompt") == ""  # ready for the next turn

    page.fill("#prompt", "Tell me more")
    with page.expect_request(lambda r: r.url.endswith("/v1/chat/completions")) as request:
        page.click("#generate")
    messages = [
        {"role": "user", "content": "Hello there"},
        {"role": "assistant", "content": first_reply},
        {"role": "user", "content": "Tell me more"},
    ]
    assert request.value.post_data_json["messages"] == messages
    _wait_done(page)
    expected = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=6, temperature=0)
    assert page.text_content("#generated") == expected.choices[0].message.content
    assert page.locator("#output .turn").count() == 4
    assert page.locator("#output .turn.user").all_inner_texts()[1].endswith("Tell me more")

    page.click("#new-chat")
    assert page.text_content("#output") == ""
    page.fill("#system", "Be brief.")
    page.fill("#prompt", "Hi again")
    with page.expect_request(lambda r: r.url.endswith("/v1/chat/completions")) as request:
        page.click("#generate")
    assert request.value.post_data_json["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi again"},
    ]
    _wait_done(page)
    page.close()


def test_playground_seed_top_k_and_stop_strings(page_server, browser):
    client = page_server.client("pg-key")
    prompt, sampling = "Once upon a time", dict(max_tokens=24, temperature=1.0, seed=7, extra_body={"top_k": 5})
    free = client.completions.create(model=MODEL, prompt=prompt, **sampling).choices[0].text
    # A stop string taken from the middle of the unconstrained completion: the stopped one ends before it.
    start = next(i for i in range(len(free) // 2, len(free) - 1) if not set(free[i : i + 2]) & {"\n", "\\"})
    stop = free[start : start + 2]
    expected = client.completions.create(model=MODEL, prompt=prompt, stop=[stop], **sampling).choices[0]
    assert expected.finish_reason == "stop" and len(expected.text) < len(free)

    page = browser.new_page()
    page.goto(page_server.url + "/")
    page.fill("#api-key", "pg-key")
    page.select_option("#mode", "completion")
    page.fill("#prompt", prompt)
    page.fill("#temperature", "1")
    page.fill("#max-tokens", "24")
    page.fill("#seed", "7")
    page.fill("#top-k", "5")
    page.fill("#stop-strings", stop + "\n\\n")  # a second stop string: the two characters backslash-n = newline
    with page.expect_request(lambda r: r.url.endswith("/v1/completions")) as request:
        page.click("#generate")
    body = request.value.post_data_json
    assert (body["seed"], body["top_k"], body["stop"]) == (7, 5, [stop, "\n"])
    _wait_done(page)
    assert "finish_reason stop" in page.inner_text("#status")
    with_newline = client.completions.create(model=MODEL, prompt=prompt, stop=[stop, "\n"], **sampling).choices[0]
    assert page.text_content("#generated") == with_newline.text
    # The same seed twice: the same completion.
    page.click("#generate")
    _wait_done(page)
    assert page.text_content("#generated") == with_newline.text
    page.close()
