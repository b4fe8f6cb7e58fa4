"""The continuous-batching engine: many sequences decode together, joining and leaving at every step.

One background thread owns the model. The model's KV cache has ``max_slots`` rows (`setup_kv_cache`
once); a running sequence holds one row, and rows ``0..n-1`` are always the n running sequences:
when one leaves, the last one's cache is moved into its row (one row copy, once per finished request).
Every step then:

1. drops cancelled (client gone) and timed-out sequences, freeing their rows at once;
2. admits waiting sequences into free rows and prefills them in one ragged batch (right-padded:
   a row only attends to its own slots ``0..position``, so padding written past a prompt is never
   read before the decode step that overwrites it; see `model.KVCache`);
3. decodes every running sequence in one call, each at its own position.

Keeping the running rows a prefix is what makes decoding cheap: a batch of n rows with no
``cache_rows`` attends to a view of the cache's first n rows, while arbitrary ``cache_rows`` gather
those rows (all their positions, every layer) at every step. Prefills name their rows (``cache_rows``)
and pay that gather once, for the new rows only.

Each sequence samples with its own `generation.RowSampler` (own generator and `SamplingParams`),
so a request's tokens do not depend on what else is running: concurrent outputs equal the same
requests run one at a time (up to float rounding of batched matmuls). A failure in one sequence's own
processing (sampling, log probabilities) ends that sequence alone with finish_reason "error"; only a
failed model call ends the whole running batch. Text goes through
`generation.TextStreamer` (whole UTF-8 characters, stop strings cut). Model calls and cache rows go through
`generation.DecodeState`, the same one `stream_tokens` decodes with.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from cerebras_gpt.decode_linear import decode_linears
from cerebras_gpt.generation import DecodeState, RowSampler, SamplingParams, TextStreamer, plain_greedy_tokens
from cerebras_gpt.model import GPT
from cerebras_gpt.serve.metrics import ServerMetrics
from cerebras_gpt.validation import finite_range_problem

log = logging.getLogger(__name__)


@dataclass
class EngineConfig:
    """Capacity and limits of the serving engine."""

    max_slots: int = 16
    """Sequences decoded together (KV cache rows); more wait in the queue."""
    max_seq_len: int | None = None
    """Positions per cache row, prompt + completion (default: the model's context). The cache takes
    2 x layers x max_slots x max_seq_len x width values: lower it to save memory."""
    max_queue: int = 64
    """Sequences that may wait for a free slot; beyond that requests get 429 with Retry-After."""
    request_timeout: float = 600.0
    """Seconds a request may take (waiting included); then it ends with finish_reason "length"."""
    max_prefill_tokens: int = 4096
    """Most prompt tokens (padded) prefilled in one step, so new long prompts do not stall decoding."""

    def __post_init__(self) -> None:
        problems = []
        if self.max_slots < 1:
            problems.append(f"max_slots={self.max_slots} must be >= 1")
        if self.max_seq_len is not None and self.max_seq_len < 2:
            problems.append(f"max_seq_len={self.max_seq_len} must be >= 2 (or unset for the model's context)")
        if self.max_queue < 0:
            problems.append(f"max_queue={self.max_queue} must be >= 0")
        timeout_problem = finite_range_problem("request_timeout", self.request_timeout, 0, lo_open=True)
        if timeout_problem:
            problems.append(timeout_problem + " seconds")
        if self.max_prefill_tokens < 1:
            problems.append(f"max_prefill_tokens={self.max_prefill_tokens} must be >= 1")
        if problems:
            raise ValueError("invalid engine settings: " + "; ".join(problems))


@dataclass
class SeqRequest:
    """One sequence to generate (one choice of one prompt)."""

    prompt: list[int]
    """Prompt token ids (at least one)."""
    max_tokens: int
    """Most tokens to generate (0: only score the prompt, with ``prompt_logprobs``)."""
    params: SamplingParams = field(default_factory=SamplingParams)
    """Temperature, top-k/p, repetition penalty, stop strings, seed, stop_at_eos."""
    presence_penalty: float = 0.0
    """OpenAI presence penalty: subtract this from the logit of every token already generated."""
    frequency_penalty: float = 0.0
    """OpenAI frequency penalty: subtract this times the token's count in the output so far."""
    logit_bias: dict[int, float] | None = None
    """Added to the logits of these token ids before sampling."""
    logprobs: int | None = None
    """Report the chosen token's log probability and the ``logprobs`` most likely ones (None: off)."""
    prompt_logprobs: bool = False
    """Also report the log probability of every prompt token (``echo`` with ``logprobs``)."""


@dataclass
class Event:
    """What the engine tells a request's sink: a token (with its text) or the end of a sequence."""

    index: int
    """Which sequence of the request (the order given to `Engine.submit`)."""
    text: str = ""
    """New text that is safe to show (whole characters; may be empty while a stop string could form)."""
    token: int | None = None
    logprob: float | None = None
    top_logprobs: list[tuple[int, float]] | None = None
    prompt_logprobs: list[tuple[int, float | None, list[tuple[int, float]]]] | None = None
    """(token, logprob or None for the first, top alternatives) per prompt token."""
    finish_reason: str | None = None
    """Set on the last event of a sequence: "stop" (EOS or a stop string), "length", or "error"."""
    prompt_tokens: int = 0
    completion_tokens: int = 0


class QueueFull(Exception):
    """The engine holds as many sequences as it may; retry after ``retry_after`` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the server is at capacity; retry after {retry_after} s")
        self.retry_after = retry_after


class _Seq:
    """A sequence's state inside the engine."""

    def __init__(
        self,
        req: SeqRequest,
        index: int,
        sink: Callable[[Event], None],
        deadline: float,
        tokenizer,
        vocab: int,
        device: torch.device,
    ) -> None:
        self.req, self.index, self.sink, self.deadline = req, index, sink, deadline
        self.arrival = time.monotonic()
        self.first_token_at: float | None = None
        self.row = -1
        self.pos = 0  # where the pending token goes in the cache
        self.pending = 0
        self.n_out = 0
        self.cancelled = False
        self.done = False
        self.streamer = TextStreamer(tokenizer, req.params.stop)
        self.sampler = RowSampler(
            req.params,
            req.prompt,
            vocab,
            device,
            req.presence_penalty,
            req.frequency_penalty,
            req.logit_bias,
            req.logprobs,
        )


class Handle:
    """The sequences of one submitted request; `Engine.cancel` takes it."""

    def __init__(self, seqs: list[_Seq]) -> None:
        self.seqs = seqs


class Engine:
    """Continuous batching over one model in a background thread.

    Args:
        model: a GPT (eval mode, on its device); the engine owns its KV cache while running.
        tokenizer: the model's tokenizer (``decode_bytes``, ``eos_id``).
        config: capacity and limits.
        metrics: where to count requests, tokens and latencies (a fresh one by default).
    """

    def __init__(
        self, model: GPT, tokenizer, config: EngineConfig | None = None, metrics: ServerMetrics | None = None
    ) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.config = config or EngineConfig()
        self.max_seq_len = self.config.max_seq_len or model.config.block_size
        if self.max_seq_len > model.config.block_size:
            raise ValueError(
                f"max_seq_len={self.max_seq_len} exceeds the model's context ({model.config.block_size}); lower it"
            )
        self.metrics = metrics or ServerMetrics()
        self.metrics.slots_total = self.config.max_slots
        self.device = model.transformer.wte.weight.device
        self.vocab = model.config.vocab_size
        self._cv = threading.Condition()
        self._waiting: deque[_Seq] = deque()
        self._active: list[_Seq] = []  # index == cache row
        self._thread: threading.Thread | None = None
        self._state: DecodeState | None = None  # the KV cache while the thread runs
        self._stopping = False

    # ----- lifecycle --------------------------------------------------------------------
    def start(self) -> None:
        """Allocate the KV cache and start the decoding thread (idempotent)."""
        if self._thread is not None:
            return
        self._state = DecodeState(self.model, self.config.max_slots, self.max_seq_len)
        c = self.model.config
        size = (
            2
            * c.n_layer
            * self.config.max_slots
            * self.max_seq_len
            * c.n_embd
            * self.model.transformer.wte.weight.element_size()
        )
        log.info(
            "engine: %d slots x %d positions, KV cache %.1f MB on %s",
            self.config.max_slots,
            self.max_seq_len,
            size / 1e6,
            self.device,
        )
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="cerebras-gpt-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread; sequences still running end with finish_reason "error"."""
        if self._thread is None:
            return
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        self._thread.join()
        self._thread = None
        for seq in list(self._active) + list(self._waiting):
            self._finish(seq, "error")
        self._active.clear()
        self._waiting.clear()
        self._state.close()

    @property
    def running(self) -> int:
        return len(self._active)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    # ----- requests ---------------------------------------------------------------------
    def submit(self, requests: list[SeqRequest], sink: Callable[[Event], None]) -> Handle:
        """Queue sequences; ``sink`` gets their events, called from the engine thread.

        Raises:
            ValueError: a prompt is empty, has ids outside the vocabulary, or does not fit with its
                ``max_tokens`` in ``max_seq_len``.
            QueueFull: the engine already holds ``max_slots + max_queue`` sequences.
        """
        for i, r in enumerate(requests):
            if not r.prompt:
                raise ValueError(f"sequence {i}: the prompt is empty; give at least one token")
            if min(r.prompt) < 0 or max(r.prompt) >= self.vocab:
                raise ValueError(f"sequence {i}: prompt token ids must be in [0, {self.vocab})")
            if r.max_tokens < 0 or len(r.prompt) + r.max_tokens > self.max_seq_len:
                raise ValueError(
                    f"sequence {i}: {len(r.prompt)} prompt tokens + max_tokens={r.max_tokens} "
                    f"exceed the {self.max_seq_len}-token context"
                )
        deadline = time.monotonic() + self.config.request_timeout
        seqs = [_Seq(r, i, sink, deadline, self.tokenizer, self.vocab, self.device) for i, r in enumerate(requests)]
        with self._cv:
            held = len(self._active) + len(self._waiting)
            if held + len(seqs) > self.config.max_slots + self.config.max_queue:
                self.metrics.rejected += 1
                raise QueueFull(retry_after=1)
            self._waiting.extend(seqs)
            self.metrics.queue_depth = len(self._waiting)
            self._cv.notify_all()
        return Handle(seqs)

    def cancel(self, handle: Handle) -> None:
        """Drop a request's unfinished sequences (client gone); their slots free at the next step."""
        with self._cv:
            for seq in handle.seqs:
                if not seq.done:
                    seq.cancelled = True
            self._cv.notify_all()

    # ----- the loop ---------------------------------------------------------------------
    def _run(self) -> None:
        # On CPU, decode steps take the fast paths of decode_linear.py (oneDNN-packed weights for
        # several rows), swapped in for as long as the engine thread runs.
        with torch.inference_mode(), decode_linears(self.model, max_rows=self.config.max_slots):
            while True:
                with self._cv:
                    while not self._stopping and not self._waiting and not self._active:
                        self._cv.wait()
                    if self._stopping:
                        return
                try:
                    self._step()
                except Exception:  # a failed step must not kill the server: fail the running sequences
                    log.exception("engine step failed; ending the running sequences with an error")
                    for seq in list(self._active):
                        self._finish(seq, "error")
                    self._active.clear()

    def _step(self) -> None:
        now = time.monotonic()
        for seq in [s for s in self._active if s.cancelled or now > s.deadline]:
            self._remove(seq, None if seq.cancelled else "length")
        new = self._admit(now)
        if new:
            self._prefill(new)
        if self._active:
            self._decode()
        self.metrics.running = len(self._active)

    def _admit(self, now: float) -> list[_Seq]:
        new: list[_Seq] = []
        longest = 0
        with self._cv:
            while self._waiting and len(self._active) + len(new) < self.config.max_slots:
                seq = self._waiting[0]
                if seq.cancelled or now > seq.deadline:
                    self._waiting.popleft()
                    self._finish(seq, None if seq.cancelled else "length")
                    continue
                longest_if = max(longest, len(seq.req.prompt))
                if new and longest_if * (len(new) + 1) > self.config.max_prefill_tokens:
                    break
                longest = longest_if
                new.append(self._waiting.popleft())
            self.metrics.queue_depth = len(self._waiting)
        return new

    def _prefill(self, new: list[_Seq]) -> None:
        for seq in new:
            seq.row = len(self._active)
            self._active.append(seq)
            self.metrics.prompt_tokens += len(seq.req.prompt)
        # Sequences that want log probabilities of their prompt need logits at every position.
        plain = [s for s in new if not s.req.prompt_logprobs]
        if plain:  # one ragged batch, right-padded; only the last prompt position's logits are needed
            logits = self._state.prefill([s.req.prompt for s in plain], rows=[s.row for s in plain])
            for k, s in enumerate(plain):
                s.pos = len(s.req.prompt)
                self._first(s, logits[k])
        for s in new:
            if s.req.prompt_logprobs:
                logits = self._state.prefill_all(s.req.prompt, s.row)  # (T, V)
                s.pos = len(s.req.prompt)
                self._per_sequence(s, self._emit_prompt_logprobs, s, logits)
                if not s.done:
                    self._first(s, logits[-1])
        for s in [s for s in new if s.done]:
            self._remove(s, None)

    def _first(self, seq: _Seq, logits: torch.Tensor) -> None:
        if seq.req.max_tokens == 0:
            self._finish(seq, "length")
            return
        self._per_sequence(seq, self._sample, seq, logits)

    def _decode(self) -> None:
        tokens = torch.tensor([s.pending for s in self._active], device=self.device)
        positions = torch.tensor([[s.pos] for s in self._active], device=self.device)
        logits = self._state.step(tokens, positions)  # (n, V)
        greedy = plain_greedy_tokens([s.sampler for s in self._active], logits)  # one argmax for those rows
        for i, seq in enumerate(list(self._active)):
            seq.pos += 1
            self._per_sequence(seq, self._sample, seq, logits[i], greedy.get(i))
        for seq in [s for s in self._active if s.done]:
            self._remove(seq, None)

    def _per_sequence(self, seq: _Seq, work: Callable, *args) -> None:
        """Run one sequence's own processing; if it fails, that sequence alone ends with "error"."""
        try:
            work(*args)
        except Exception:
            log.exception("sequence %d of a request failed; ending it alone with an error", seq.index)
            self._finish(seq, "error")

    def _sample(self, seq: _Seq, logits: torch.Tensor, chosen: int | None = None) -> None:
        """Pick the next token of ``seq`` from its logits (V,), emit it, and finish it if it is done.

        ``chosen``: the token `plain_greedy_tokens` already picked for this row (its sampler has
        nothing to record), or None to sample here."""
        req, params = seq.req, seq.req.params
        if chosen is None:
            token, logprob, top = seq.sampler.sample(logits)
        else:
            token, logprob, top = chosen, None, None
        seq.n_out += 1
        self.metrics.add_generated(1)
        if seq.first_token_at is None:
            seq.first_token_at = time.monotonic()
            self.metrics.ttft.observe(seq.first_token_at - seq.arrival)
        event = Event(index=seq.index, token=token, logprob=logprob, top_logprobs=top)
        eos = params.stop_at_eos and token == self.tokenizer.eos_id
        reason = None
        if eos:
            event.text = seq.streamer.flush()
            reason = "stop"
        else:
            event.text = seq.streamer.push(token)
            if seq.streamer.stopped:
                reason = "stop"
            elif seq.n_out >= req.max_tokens or seq.pos >= self.max_seq_len:
                event.text += seq.streamer.flush()
                reason = "length"
        if reason is None:
            seq.pending = token
            self._send(seq, event)
        else:
            self._finish(seq, reason, event)

    def _emit_prompt_logprobs(self, seq: _Seq, logits: torch.Tensor) -> None:
        logp = torch.log_softmax(logits.float(), dim=-1)  # (T, V): row t predicts token t+1
        ids = seq.req.prompt
        k = seq.req.logprobs or 0
        out: list[tuple[int, float | None, list[tuple[int, float]]]] = [(ids[0], None, [])]
        for t in range(1, len(ids)):
            top = []
            if k > 0:
                values, indices = torch.topk(logp[t - 1], k)
                top = list(zip(indices.tolist(), values.tolist()))
            out.append((ids[t], float(logp[t - 1, ids[t]]), top))
        self._send(seq, Event(index=seq.index, prompt_logprobs=out))

    # ----- bookkeeping ------------------------------------------------------------------
    def _send(self, seq: _Seq, event: Event) -> None:
        if seq.cancelled:
            return
        try:
            seq.sink(event)
        except Exception:  # the client's event loop is gone: treat as a disconnect
            seq.cancelled = True

    def _finish(self, seq: _Seq, reason: str | None, event: Event | None = None) -> None:
        """Mark ``seq`` done; ``reason`` None means cancelled (nothing is sent)."""
        if seq.done:
            return
        seq.done = True
        if reason is None or seq.cancelled:
            self.metrics.finished["cancelled"] += 1
            return
        self.metrics.finished[reason] += 1
        self.metrics.latency.observe(time.monotonic() - seq.arrival)
        if event is None:
            event = Event(index=seq.index, text="" if reason == "error" else seq.streamer.flush())
        event.finish_reason = reason
        event.prompt_tokens, event.completion_tokens = len(seq.req.prompt), seq.n_out
        self._send(seq, event)

    def _remove(self, seq: _Seq, reason: str | None) -> None:
        """Take ``seq`` out of the running batch, moving the last row into its place."""
        self._finish(seq, reason)
        i, last = seq.row, self._active[-1]
        if last is not seq:
            # Cache slots 0..pos-1 hold the last row's tokens.
            self._state.move_row(i, last.row, length=last.pos)
            self._active[i] = last
            last.row = i
        self._active.pop()
        seq.row = -1
