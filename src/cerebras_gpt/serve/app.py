"""The HTTP server: OpenAI-compatible routes over the continuous-batching engine, plus the playground.

Routes: `POST /v1/completions`, `POST /v1/chat/completions` (both with ``stream: true`` as
server-sent events in OpenAI's chunk format), `GET /v1/models`, `GET /health`, `GET /metrics`
(Prometheus text), and `GET /` (the playground page in ``static/index.html``).

Every error is OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``: 400 for any bad
request (malformed JSON, wrong types, out-of-range values, unknown model, a prompt or ``max_tokens``
beyond the context), 401 for a missing or wrong API key (``--api-key``), 429 with ``Retry-After`` when
the engine's queue is full. A client that disconnects has its sequences dropped at the next step.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

from cerebras_gpt.extras import missing_extra, require_extra

try:
    from fastapi import APIRouter, Depends, FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException
except ModuleNotFoundError as e:
    raise missing_extra("serve", e) from None

from cerebras_gpt import chat
from cerebras_gpt.generation import SamplingParams
from cerebras_gpt.quantization import precision_of
from cerebras_gpt.serve.engine import Engine, Event, QueueFull, SeqRequest
from cerebras_gpt.serve.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from cerebras_gpt.serve.schemas import ChatCompletionRequest, CompletionRequest

log = logging.getLogger(__name__)

_ENDPOINTS = {"/", "/health", "/metrics", "/v1/models", "/v1/completions", "/v1/chat/completions"}


class APIError(Exception):
    """An HTTP error with OpenAI's error body."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers

    def response(self) -> JSONResponse:
        return JSONResponse(
            error_body(self.message, self.type, self.param, self.code), status_code=self.status, headers=self.headers
        )


def error_body(
    message: str, type: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class _ClientGone(Exception):
    """The client disconnected while a non-streaming request was being generated."""


class EventStream(StreamingResponse):
    """Server-sent events whose generator is closed as soon as the response ends, however it ends,
    so a disconnected client's sequences are cancelled at once (not when the generator is collected)."""

    media_type = "text/event-stream"

    async def stream_response(self, send) -> None:
        try:
            await super().stream_response(send)
        finally:
            await self.body_iterator.aclose()


class _CountRequests:
    """ASGI middleware: counts responses by endpoint and status for /metrics."""

    def __init__(self, app, metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            path = scope.get("path", "")
            self.metrics.requests[(path if path in _ENDPOINTS else "other", status)] += 1


def _sse(data: Any) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


class _Service:
    """What the routes share: the engine, the tokenizer and the served name."""

    def __init__(self, engine: Engine, model_name: str, aliases: tuple[str, ...]) -> None:
        self.engine, self.tokenizer = engine, engine.tokenizer
        self.model_name = model_name
        self.names = {model_name, *aliases}
        self.created = int(time.time())

    # ----- validation -------------------------------------------------------------------
    def check_model(self, name: str) -> None:
        if name not in self.names:
            # 404 with code model_not_found, as OpenAI and vLLM answer (the openai client raises NotFoundError).
            raise APIError(
                404,
                f"The model {name!r} does not exist on this server; it serves "
                f"{self.model_name!r} (see GET /v1/models).",
                param="model",
                code="model_not_found",
            )

    def check_prompt(self, ids: list[int], max_tokens: int | None, i: int = 0) -> int:
        """The number of tokens to generate for a prompt, or a 400 when it does not fit."""
        limit = self.engine.max_seq_len
        if max_tokens is None:
            if len(ids) >= limit:
                raise APIError(
                    400,
                    f"This model's maximum context length is {limit} tokens, but prompt {i} has "
                    f"{len(ids)} tokens. Please shorten the prompt.",
                    param="prompt",
                    code="context_length_exceeded",
                )
            return limit - len(ids)
        if len(ids) + max_tokens > limit:
            raise APIError(
                400,
                f"This model's maximum context length is {limit} tokens. However, you requested "
                f"{len(ids) + max_tokens} tokens ({len(ids)} in prompt {i}, {max_tokens} for the "
                "completion). Please reduce the prompt or max_tokens.",
                param="max_tokens",
                code="context_length_exceeded",
            )
        return max_tokens

    def logit_bias(self, bias: dict[str, float] | None) -> dict[int, float] | None:
        if not bias:
            return None
        out = {}
        for key, value in bias.items():
            try:
                token = int(key)
            except ValueError:
                token = -1
            if not 0 <= token < self.engine.vocab:
                raise APIError(
                    400, f"logit_bias key {key!r} is not a token id in [0, {self.engine.vocab})", param="logit_bias"
                )
            out[token] = value
        return out

    def seq_requests(
        self,
        body,
        prompts: list[list[int]],
        max_tokens: list[int],
        stop: list[str],
        logprobs: int | None,
        prompt_logprobs: bool,
    ) -> list[SeqRequest]:
        total = len(prompts) * body.n
        capacity = self.engine.config.max_slots + self.engine.config.max_queue
        if total > capacity:
            raise APIError(
                400,
                f"{len(prompts)} prompt(s) x n={body.n} is {total} sequences; this server holds at "
                f"most {capacity}. Send fewer prompts or a smaller n.",
                param="n",
            )
        bias = self.logit_bias(body.logit_bias)
        top_k = body.top_k if body.top_k and body.top_k > 0 else None
        out = []
        for ids, limit in zip(prompts, max_tokens):
            for c in range(body.n):
                seed = None if body.seed is None else (body.seed + c) % 2**64
                params = SamplingParams(
                    max_new_tokens=max(1, limit),
                    temperature=body.temperature,
                    top_k=top_k,
                    top_p=body.top_p,
                    repetition_penalty=body.repetition_penalty,
                    stop=stop,
                    seed=seed,
                    stop_at_eos=not body.ignore_eos,
                )
                out.append(
                    SeqRequest(
                        prompt=ids,
                        max_tokens=limit,
                        params=params,
                        presence_penalty=body.presence_penalty,
                        frequency_penalty=body.frequency_penalty,
                        logit_bias=bias,
                        logprobs=logprobs,
                        prompt_logprobs=prompt_logprobs,
                    )
                )
        return out

    def encode(self, text: str) -> list[int]:
        # An empty prompt starts from <|endoftext|>, as GPT-2's unconditional samples do.
        return self.tokenizer.encode(text) or [self.tokenizer.eos_id]

    # ----- running ----------------------------------------------------------------------
    def submit(self, reqs: list[SeqRequest]):
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Event] = asyncio.Queue()

        def sink(event: Event) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, event)

        try:
            handle = self.engine.submit(reqs, sink)
        except QueueFull as e:
            raise APIError(
                429,
                f"The server is at capacity ({self.engine.config.max_slots} running, "
                f"{self.engine.config.max_queue} queued); retry after {e.retry_after} s.",
                type="requests",
                code="rate_limit_exceeded",
                headers={"Retry-After": str(e.retry_after)},
            ) from e
        except ValueError as e:
            raise APIError(400, str(e), param="prompt") from e
        return handle, queue

    async def events(self, request: Request, handle, queue: asyncio.Queue, total: int) -> AsyncIterator[Event]:
        """A request's events until all its sequences finish; cancels them if the client goes away."""
        finished = 0
        try:
            while finished < total:
                try:
                    event = await asyncio.wait_for(queue.get(), timeout=1.0)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        raise _ClientGone() from None
                    continue
                if event.finish_reason is not None:
                    finished += 1
                yield event
        finally:
            self.engine.cancel(handle)

    def token_text(self, token: int) -> str:
        return self.tokenizer.decode([token])


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _engine_error() -> APIError:
    return APIError(500, "generation failed on the server; see its log", type="server_error", code="engine_error")


# ----------------------------------------------------------------------------- completions
class _CompletionChoice:
    """Text and log probabilities of one completion choice, built from engine events."""

    def __init__(self, svc: _Service, with_logprobs: bool) -> None:
        self.svc, self.with_logprobs = svc, with_logprobs
        self.text = ""
        self.offset = 0
        self.lp: dict[str, list] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        self.finish_reason: str | None = None

    def add_token(
        self, token: int, logprob: float | None, top: list[tuple[int, float]] | None, into: dict[str, list]
    ) -> None:
        text = self.svc.token_text(token)
        into["tokens"].append(text)
        into["token_logprobs"].append(logprob)
        into["top_logprobs"].append(None if top is None else {self.svc.token_text(t): v for t, v in top})
        into["text_offset"].append(self.offset)
        self.offset += len(text)

    def add(self, event: Event, echo_text: str | None = None) -> tuple[str, dict | None]:
        """Fold in one event; returns (new text, new logprobs) for a stream chunk."""
        piece: dict[str, list] = {k: [] for k in self.lp}
        text = ""
        if echo_text is not None:
            text += echo_text
        if event.prompt_logprobs is not None:
            for token, logprob, top in event.prompt_logprobs:
                self.add_token(token, logprob, top if logprob is not None else None, piece)
        if event.token is not None and self.with_logprobs:
            self.add_token(event.token, event.logprob, event.top_logprobs or [], piece)
        text += event.text
        self.text += text
        for k in self.lp:
            self.lp[k].extend(piece[k])
        if event.finish_reason is not None:
            self.finish_reason = event.finish_reason
        return text, (piece if self.with_logprobs and piece["tokens"] else None)


async def _completions(svc: _Service, body: CompletionRequest, request: Request) -> Response:
    svc.check_model(body.model)
    if body.suffix:
        raise APIError(400, "suffix (insertion) is not supported by this model; leave it out", param="suffix")
    if body.best_of is not None and body.best_of != body.n:
        raise APIError(
            400, f"best_of={body.best_of} is not supported; leave it out or set it equal to n", param="best_of"
        )
    prompt = body.prompt
    if isinstance(prompt, str):
        texts: list[str | None] = [prompt]
        prompts = [svc.encode(prompt)]
    elif not prompt:
        raise APIError(400, "prompt is an empty list; give a string, a list of strings or token ids", param="prompt")
    elif isinstance(prompt[0], str):
        texts, prompts = list(prompt), [svc.encode(p) for p in prompt]
    elif isinstance(prompt[0], int):
        texts, prompts = [None], [list(prompt) or [svc.tokenizer.eos_id]]
    else:
        texts, prompts = [None] * len(prompt), [list(p) or [svc.tokenizer.eos_id] for p in prompt]
    for i, ids in enumerate(prompts):
        if min(ids) < 0 or max(ids) >= svc.engine.vocab:
            raise APIError(400, f"prompt {i} has token ids outside [0, {svc.engine.vocab})", param="prompt")
    limits = [svc.check_prompt(ids, body.max_tokens, i) for i, ids in enumerate(prompts)]
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    echo_lp = body.echo and body.logprobs is not None
    reqs = svc.seq_requests(body, prompts, limits, stop, body.logprobs, prompt_logprobs=echo_lp)
    echoes = [(t if t is not None else svc.tokenizer.decode(ids)) for t, ids in zip(texts, prompts)]
    handle, queue = svc.submit(reqs)
    rid, created, n = f"cmpl-{uuid.uuid4().hex}", int(time.time()), body.n
    prompt_tokens = sum(len(p) for p in prompts)
    choices = [_CompletionChoice(svc, body.logprobs is not None) for _ in reqs]

    def chunk(index: int, text: str, logprobs, finish_reason) -> dict:
        return {
            "id": rid,
            "object": "text_completion",
            "created": created,
            "model": svc.model_name,
            "choices": [{"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}],
        }

    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)

        async def stream() -> AsyncIterator[str]:
            if body.echo and not echo_lp:
                for i, c in enumerate(choices):
                    c.text = echoes[i // n]
                    yield _sse(chunk(i, c.text, None, None))
            completion_tokens, left = 0, len(reqs)
            async for ev in svc.events(request, handle, queue, len(reqs)):
                if ev.finish_reason == "error":
                    yield _sse(error_body("generation failed on the server; see its log", "server_error"))
                    break
                echo = echoes[ev.index // n] if echo_lp and ev.prompt_logprobs is not None else None
                text, lp = choices[ev.index].add(ev, echo)
                if ev.finish_reason is None and not text and lp is None:
                    continue  # text held back (a stop string may be forming): nothing to show yet
                data = chunk(ev.index, text, lp, ev.finish_reason)
                if ev.finish_reason is not None:
                    completion_tokens += ev.completion_tokens
                    left -= 1
                    if left == 0 and not include_usage:
                        data["usage"] = _usage(prompt_tokens, completion_tokens)
                yield _sse(data)
            if include_usage:
                yield _sse(
                    {
                        "id": rid,
                        "object": "text_completion",
                        "created": created,
                        "model": svc.model_name,
                        "choices": [],
                        "usage": _usage(prompt_tokens, completion_tokens),
                    }
                )
            yield "data: [DONE]\n\n"

        return EventStream(stream())

    if body.echo and not echo_lp:
        for i, c in enumerate(choices):
            c.text = echoes[i // n]
    completion_tokens = 0
    try:
        async for ev in svc.events(request, handle, queue, len(reqs)):
            if ev.finish_reason == "error":
                raise _engine_error()
            echo = echoes[ev.index // n] if echo_lp and ev.prompt_logprobs is not None else None
            choices[ev.index].add(ev, echo)
            completion_tokens += ev.completion_tokens
    except _ClientGone:
        return Response(status_code=499)
    return JSONResponse(
        {
            "id": rid,
            "object": "text_completion",
            "created": created,
            "model": svc.model_name,
            "choices": [
                {
                    "index": i,
                    "text": c.text,
                    "logprobs": c.lp if body.logprobs is not None else None,
                    "finish_reason": c.finish_reason,
                }
                for i, c in enumerate(choices)
            ],
            "usage": _usage(prompt_tokens, completion_tokens),
        }
    )


# ----------------------------------------------------------------------------- chat
def _render_chat(body: ChatCompletionRequest) -> str:
    messages = []
    for m in body.messages:
        if isinstance(m.content, list):
            content = "".join(part.text for part in m.content)
        else:
            content = m.content or ""
        # OpenAI's "developer" role is the newer name of "system".
        messages.append({"role": "system" if m.role == "developer" else m.role, "content": content})
    return chat.render_prompt(messages)


class _ChatChoice:
    def __init__(self, svc: _Service, with_logprobs: bool) -> None:
        self.svc, self.with_logprobs = svc, with_logprobs
        self.content = ""
        self.started = False  # the answer follows "Assistant:": its leading whitespace is dropped
        self.logprobs: list[dict] = []
        self.finish_reason: str | None = None

    def _entry(self, token: int, logprob: float) -> dict:
        text = self.svc.token_text(token)
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

    def add(self, event: Event) -> tuple[str, list[dict] | None]:
        text = event.text
        if not self.started:
            text = text.lstrip()
            self.started = bool(text)
        self.content += text
        piece = None
        if self.with_logprobs and event.token is not None:
            entry = self._entry(event.token, event.logprob)
            entry["top_logprobs"] = [self._entry(t, v) for t, v in (event.top_logprobs or [])]
            piece = [entry]
            self.logprobs.append(entry)
        if event.finish_reason is not None:
            self.finish_reason = event.finish_reason
        return text, piece


async def _chat(svc: _Service, body: ChatCompletionRequest, request: Request) -> Response:
    svc.check_model(body.model)
    if body.tools:
        raise APIError(400, "tools are not supported: Cerebras-GPT is a base model without tool calling", param="tools")
    prompt_ids = svc.encode(_render_chat(body))
    max_tokens = body.max_completion_tokens or body.max_tokens
    limit = svc.check_prompt(prompt_ids, max_tokens)
    stop = list(chat.STOP) + ([body.stop] if isinstance(body.stop, str) else list(body.stop or []))
    logprobs = (body.top_logprobs or 0) if body.logprobs else None
    reqs = svc.seq_requests(body, [prompt_ids], [limit], stop, logprobs, prompt_logprobs=False)
    handle, queue = svc.submit(reqs)
    rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    choices = [_ChatChoice(svc, body.logprobs) for _ in reqs]

    def chunk(index: int, delta: dict, logprobs, finish_reason) -> dict:
        return {
            "id": rid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": svc.model_name,
            "choices": [
                {
                    "index": index,
                    "delta": delta,
                    "logprobs": None if logprobs is None else {"content": logprobs},
                    "finish_reason": finish_reason,
                }
            ],
        }

    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)

        async def stream() -> AsyncIterator[str]:
            for i in range(len(reqs)):
                yield _sse(chunk(i, {"role": "assistant", "content": ""}, None, None))
            completion_tokens, left = 0, len(reqs)
            async for ev in svc.events(request, handle, queue, len(reqs)):
                if ev.finish_reason == "error":
                    yield _sse(error_body("generation failed on the server; see its log", "server_error"))
                    break
                text, lp = choices[ev.index].add(ev)
                if ev.finish_reason is None:
                    if text or lp is not None:
                        yield _sse(chunk(ev.index, {"content": text}, lp, None))
                    continue
                if text or lp is not None:
                    yield _sse(chunk(ev.index, {"content": text}, lp, None))
                completion_tokens += ev.completion_tokens
                left -= 1
                data = chunk(ev.index, {}, None, ev.finish_reason)
                if left == 0 and not include_usage:
                    data["usage"] = _usage(len(prompt_ids), completion_tokens)
                yield _sse(data)
            if include_usage:
                yield _sse(
                    {
                        "id": rid,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": svc.model_name,
                        "choices": [],
                        "usage": _usage(len(prompt_ids), completion_tokens),
                    }
                )
            yield "data: [DONE]\n\n"

        return EventStream(stream())

    completion_tokens = 0
    try:
        async for ev in svc.events(request, handle, queue, len(reqs)):
            if ev.finish_reason == "error":
                raise _engine_error()
            choices[ev.index].add(ev)
            completion_tokens += ev.completion_tokens
    except _ClientGone:
        return Response(status_code=499)
    return JSONResponse(
        {
            "id": rid,
            "object": "chat.completion",
            "created": created,
            "model": svc.model_name,
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": c.content},
                    "logprobs": {"content": c.logprobs} if body.logprobs else None,
                    "finish_reason": c.finish_reason,
                }
                for i, c in enumerate(choices)
            ],
            "usage": _usage(len(prompt_ids), completion_tokens),
        }
    )


# ----------------------------------------------------------------------------- the app
def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "invalid request", None
    first = errors[0]
    if first.get("type") == "json_invalid":
        return f"The request body is not valid JSON: {first.get('msg')}", None
    loc = [str(x) for x in first.get("loc", ()) if x != "body"]
    param = ".".join(loc) or None
    where = f"{param}: " if param else "request body: "
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return f"{where}{first.get('msg')}{more}", param


def create_app(engine: Engine, model_name: str, api_key: str | None = None, aliases: tuple[str, ...] = ()) -> FastAPI:
    """The FastAPI app serving ``engine``; its lifespan starts and stops the engine.

    Args:
        engine: the continuous-batching engine (not yet started).
        model_name: the name clients pass as ``model`` and `GET /v1/models` lists.
        api_key: when set, every /v1 route needs ``Authorization: Bearer <api_key>`` (401 otherwise).
        aliases: other names accepted as ``model`` (e.g. the path the model was loaded from).
    """
    svc = _Service(engine, model_name, aliases)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        engine.start()
        try:
            yield
        finally:
            await asyncio.get_running_loop().run_in_executor(None, engine.stop)

    from cerebras_gpt import __version__

    app = FastAPI(
        title="cerebras-gpt",
        version=__version__,
        lifespan=lifespan,
        description="OpenAI-compatible completions and chat for Cerebras-GPT models.",
    )
    app.add_middleware(_CountRequests, metrics=engine.metrics)

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        return JSONResponse(error_body(message, param=param), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return JSONResponse(
            error_body(str(exc.detail), code=code), status_code=exc.status_code, headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return JSONResponse(error_body("internal server error; see the server log", "server_error"), status_code=500)

    async def require_key(request: Request) -> None:
        if api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            raise APIError(
                401,
                "Incorrect or missing API key: send the header 'Authorization: Bearer <key>' "
                "with the key the server was started with (--api-key).",
                code="invalid_api_key",
            )

    page = (resources.files("cerebras_gpt.serve") / "static" / "index.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def playground() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/health")
    async def health() -> dict:
        """Liveness and load: running and waiting sequences."""
        return {
            "status": "ok",
            "model": model_name,
            "running": engine.running,
            "waiting": engine.waiting,
            "slots": engine.config.max_slots,
        }

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        """Prometheus metrics: requests, tokens, queue depth, time to first token, tokens/s."""
        return PlainTextResponse(engine.metrics.render(), media_type=METRICS_CONTENT_TYPE)

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_key)])

    @v1.get("/models")
    async def models() -> dict:
        """The one served model."""
        return {
            "object": "list",
            "data": [
                {
                    "id": model_name,
                    "object": "model",
                    "created": svc.created,
                    "owned_by": "cerebras-gpt",
                    "max_model_len": engine.max_seq_len,
                    "quantization": precision_of(engine.model),
                }
            ],
        }

    @v1.post("/completions")
    async def completions(body: CompletionRequest, request: Request) -> Response:
        """Text completion (OpenAI's legacy completions API)."""
        return await _completions(svc, body, request)

    @v1.post("/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        """Chat completion through the plain-text template of `cerebras_gpt.chat`."""
        return await _chat(svc, body, request)

    app.include_router(v1)
    return app


def run_server(
    model: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    model_name: str | None = None,
    engine_config=None,
    device: str = "auto",
    dtype: str = "auto",
    log_level: str = "info",
    quantize: str = "none",
) -> None:
    """Load ``model`` (directory, training checkpoint or hub id), put its weights at ``quantize`` precision
    (see quantization.py) and serve it with uvicorn until interrupted."""
    import ipaddress

    require_extra("serve", "uvicorn", "prometheus_client")  # before the model loads, not after
    import uvicorn

    from cerebras_gpt.hf import load_model_and_tokenizer
    from cerebras_gpt.quantization import apply_quantize
    from cerebras_gpt.runtime import resolve_device_dtype

    dev, dt = resolve_device_dtype(device, dtype)
    net, tok = load_model_and_tokenizer(model, device=dev, dtype=dt)
    net = apply_quantize(net, quantize)
    engine = Engine(net, tok, engine_config)
    name = model_name or model
    app = create_app(engine, name, api_key=api_key, aliases=(model,))
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback and api_key is None:
        log.warning("serving on %s without --api-key: anyone who can reach this address can use the model", host)
    log.info("serving %r on http://%s:%d (playground at /, API at /v1)", name, host, port)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
