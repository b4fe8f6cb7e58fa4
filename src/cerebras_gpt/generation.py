"""Text generation: sampling, the streaming token iterator, and batched generation.

Layers, after litgpt's `generate/base.py`:
- `sample_next` turns a batch of logits into token ids (repetition penalty → temperature → top-k →
  top-p, the order Hugging Face's logits processors apply them);
- `DecodeState` owns a batch's KV cache and the two model calls (prefill rows, decode one step);
  `RowSampler` is one sequence's sampler with the server's extra options (OpenAI penalties, logit
  bias, log probabilities);
- `stream_tokens` is the iterator: ragged prompts are prefilled into the KV cache in one pass, then
  one token per row per step, through a `DecodeState`. The CLI and `generate()` decode through it; the
  server's continuous-batching engine drives the same `DecodeState` one step at a time, sampling each
  row with a `RowSampler`;
- `stream_text` / `generate` add the tokenizer: UTF-8-safe incremental text and stop strings.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from cerebras_gpt import compiled_decode
from cerebras_gpt.decode_linear import decode_linears
from cerebras_gpt.model import GPT
from cerebras_gpt.validation import finite_range_problem

# Below this temperature sampling is greedy (vLLM's _SAMPLING_EPS): with logits a few units apart,
# exp(Δ/T) already exceeds float32 at T = 1e-3, so smaller values pick the argmax in all but ties.
GREEDY_TEMPERATURE = 1e-5


@dataclass
class SamplingParams:
    """How to pick each next token. ``temperature=0`` (or below 1e-5) is greedy."""

    max_new_tokens: int = 64
    """Most tokens to generate per prompt."""
    temperature: float = 1.0
    """Softmax temperature; 0 (or below 1e-5) picks the most likely token (greedy)."""
    top_k: int | None = None
    """Sample among the k most likely tokens only (None: all)."""
    top_p: float = 1.0
    """Nucleus sampling: the smallest set of tokens whose probability reaches top_p."""
    repetition_penalty: float = 1.0
    """>1 discourages tokens already in the prompt or output (CTRL / HF semantics)."""
    stop: list[str] = field(default_factory=list)
    """Strings that end generation; they are not included in the output (on the command line `\\n`, `\\t` and
    `\\\\` mean a newline, a tab and a backslash)."""
    seed: int | None = None
    """Seed for sampling; the same seed and prompt give the same text."""
    stop_at_eos: bool = True
    """End a sequence at <|endoftext|>."""
    truncate_prompt: bool = False
    """Keep the last tokens of a prompt that does not fit instead of raising an error."""

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            problems.append(f"max_new_tokens={self.max_new_tokens!r} must be an integer >= 1")
        problems.append(finite_range_problem("temperature", self.temperature, 0))
        if self.top_k is not None and (not isinstance(self.top_k, int) or self.top_k < 1):
            problems.append(f"top_k={self.top_k!r} must be a positive integer or None")
        problems.append(finite_range_problem("top_p", self.top_p, 0, 1, lo_open=True))
        problems.append(finite_range_problem("repetition_penalty", self.repetition_penalty, 0, lo_open=True))
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        if any(not isinstance(s, str) or not s for s in self.stop):
            problems.append(f"stop={self.stop!r} must be non-empty strings")
        problems = [p for p in problems if p]
        if problems:
            raise ValueError("invalid sampling parameters: " + "; ".join(problems))

    @property
    def greedy(self) -> bool:
        """Temperatures this small sample the argmax anyway; dividing by them only overflows."""
        return self.temperature < GREEDY_TEMPERATURE


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """Divide positive / multiply negative logits of tokens in ``seen`` (B, V bool) by ``penalty``."""
    penalized = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalized, logits)


NAN_LOGITS = (
    "the model produced NaN logits; its weights are probably corrupt (check the model files, or load in float32)"
)


def _check_no_nan(logits: torch.Tensor) -> None:
    if torch.isnan(logits).any():
        raise ValueError(NAN_LOGITS)


def greedy_tokens(logits: torch.Tensor) -> torch.Tensor:
    """Each row's most likely token (B,) from logits (B, V): `torch.argmax` (the first of tied maxima);
    NaN logits raise `ValueError`.

    On the CPU through NumPy, whose argmax is vectorized where ATen's CPU argmax is a scalar loop: over
    50,257 float32 logits 9 µs against 49 with the NaN check (a 111M int8 decode step takes ~4 ms;
    BENCHMARKS.md). Both take
    the first maximum, and a row's first NaN where it has one, so only the chosen logits need the NaN check.
    """
    if logits.device.type == "cpu" and logits.dtype in (torch.float32, torch.float64):
        rows = logits.detach().numpy()
        chosen = rows.argmax(axis=-1)
        if np.isnan(rows[np.arange(len(chosen)), chosen]).any():
            raise ValueError(NAN_LOGITS)
        return torch.from_numpy(chosen)
    tokens = logits.argmax(dim=-1)
    _check_no_nan(logits.gather(-1, tokens.unsqueeze(-1)))
    return tokens


def sample_next(
    logits: torch.Tensor,
    params: SamplingParams,
    generator: torch.Generator | None = None,
    seen: torch.Tensor | None = None,
) -> torch.Tensor:
    """Next token ids (B,) from logits (B, V), for every value `SamplingParams` accepts.

    The normalisation runs in float64 log space, so a tiny temperature or top_p cannot underflow the
    probabilities to NaN; top-k and top-p always keep the most likely token; a row whose logits hold
    +inf samples among its +inf tokens. NaN logits (a broken model) raise `ValueError`.
    """
    if params.repetition_penalty != 1.0 and seen is not None:
        logits = apply_repetition_penalty(logits.double(), seen, params.repetition_penalty)
    if params.greedy:
        # float32 -> float64 is exact and keeps the order: unpenalized logits need no copy for the argmax.
        return greedy_tokens(logits)
    _check_no_nan(logits)
    logits = logits.double()  # no copy where the penalty already made them float64
    # Tokens at +inf (an overflowed logit): they share all the mass, the others none.
    infinite = logits == float("inf")
    has_inf = infinite.any(dim=-1, keepdim=True)
    logits = torch.where(has_inf, torch.where(infinite, 0.0, float("-inf")), logits)
    logits = logits / params.temperature  # T >= GREEDY_TEMPERATURE: finite float32 logits stay finite
    if params.top_k is not None and params.top_k < logits.shape[-1]:
        kth = torch.topk(logits, params.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        sorted_probs = sorted_logits.softmax(dim=-1)
        # Drop tokens once the mass *before* them reaches top_p; the top token always stays, even
        # when top_p is below the smallest representable probability.
        drop_sorted = (sorted_probs.cumsum(dim=-1) - sorted_probs) >= params.top_p
        drop_sorted[:, 0] = False
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    probs = logits.log_softmax(dim=-1).exp()
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


class DecodeState:
    """The KV cache of a batch being decoded and the two model calls that advance it.

    `stream_tokens` and the server's engine both decode through this: ``prefill`` writes prompts into
    cache rows (ragged, right-padded: a row attends to its own slots ``0..position`` only, so padding
    is never read before it is overwritten) and ``step`` decodes one token per row at its own position.
    Row bookkeeping (moving a finished row's successor into its place) goes through the model's
    cache-row methods.

    Args:
        model: the GPT (eval mode).
        rows: cache rows to allocate.
        max_seq_len: positions per row.
        compiled: decode steps through the model's compiled step (`cerebras_gpt.compiled_decode`): the
            cache length is rounded up by `compiled_decode.cache_length` (the step attends over all of it,
            and similar lengths then share one graph); a step that does not compile runs eagerly.
    """

    def __init__(self, model: GPT, rows: int, max_seq_len: int, compiled: bool = False) -> None:
        self.model = model
        self.device = model.transformer.wte.weight.device
        self.compiled_step: compiled_decode.CompiledStep | None = None
        if compiled:
            max_seq_len = compiled_decode.cache_length(max_seq_len, model.config.block_size)
            self.compiled_step = compiled_decode.attach(model, rows, max_seq_len, self.device)
        else:
            model.setup_kv_cache(rows, max_seq_len, device=self.device)

    def prefill(self, prompts: Sequence[Sequence[int]], rows: Sequence[int] | None = None) -> torch.Tensor:
        """Write ``prompts`` into cache rows ``rows`` (default 0..n-1); logits of each last token (n, V)."""
        lengths = torch.tensor([len(p) for p in prompts], device=self.device)
        tokens = torch.zeros(len(prompts), int(lengths.max()), dtype=torch.long, device=self.device)
        for k, ids in enumerate(prompts):
            tokens[k, : len(ids)] = torch.tensor(list(ids), device=self.device)
        cache_rows = None if rows is None else torch.tensor(list(rows), device=self.device)
        positions = torch.arange(tokens.shape[1], device=self.device)
        return self.model(tokens, positions, logits_index=lengths - 1, cache_rows=cache_rows)[:, -1]

    def prefill_all(self, prompt: Sequence[int], row: int) -> torch.Tensor:
        """Write one prompt into cache row ``row``; logits at every prompt position (T, V)."""
        ids = torch.tensor([list(prompt)], device=self.device)
        return self.model(
            ids, torch.arange(ids.shape[1], device=self.device), cache_rows=torch.tensor([row], device=self.device)
        )[0]

    def step(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Decode ``tokens`` (n,) into cache rows 0..n-1 at ``positions``; logits (n, V).

        ``positions`` is (n, 1), one position per row, or (1,) when every row is at the same position,
        which lets the model skip the attention mask (the common batch-1 case).
        """
        if self.compiled_step is not None:
            logits = self.compiled_step(tokens, positions)
            if logits is not None:
                return logits
        return self.model(tokens.unsqueeze(1), positions)[:, -1]

    def move_row(self, dst: int, src: int, length: int) -> None:
        """Copy positions ``0..length-1`` of cache row ``src`` into row ``dst``."""
        self.model.copy_cache_rows([dst], [src], length=length)

    def close(self) -> None:
        """Free the cache."""
        self.model.clear_kv_cache()


class RowSampler:
    """One sequence's sampler: its `SamplingParams`, its own generator and its token history.

    Holds what the server's OpenAI options add on top of `sample_next`: presence/frequency penalties
    (subtracted from the logits, OpenAI semantics), a logit bias, and the chosen token's log
    probability with the ``logprobs`` most likely alternatives (from the raw logits, as OpenAI reports
    them). Sampling itself is `sample_next` on a one-row batch, so the float64 safety of that function
    holds here too, and a seeded row draws exactly what `stream_tokens` draws for a one-prompt batch.

    Args:
        params: temperature, top-k/p, repetition penalty, seed (None: a random seed).
        prompt: the prompt's token ids (the repetition penalty counts them as seen).
        vocab: vocabulary size.
        device: where the logits live.
        presence_penalty / frequency_penalty: OpenAI penalties on tokens generated so far.
        logit_bias: token id -> value added to its logit.
        logprobs: report this many top alternatives with each token (None: no log probabilities).
    """

    def __init__(
        self,
        params: SamplingParams,
        prompt: Sequence[int],
        vocab: int,
        device: torch.device | str,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        logit_bias: dict[int, float] | None = None,
        logprobs: int | None = None,
    ) -> None:
        self.params, self.logprobs = params, logprobs
        self.presence_penalty, self.frequency_penalty = presence_penalty, frequency_penalty
        seed = params.seed if params.seed is not None else secrets.randbits(63)
        self.generator = None if params.greedy else torch.Generator(device=device).manual_seed(seed)
        self.seen = None
        if params.repetition_penalty != 1.0:
            self.seen = torch.zeros(1, vocab, dtype=torch.bool, device=device)
            self.seen[0, list(prompt)] = True
        self.counts = None
        if presence_penalty or frequency_penalty:
            self.counts = torch.zeros(vocab, device=device)
        self.bias = None
        if logit_bias:
            self.bias = torch.zeros(vocab, device=device)
            self.bias[list(logit_bias)] = torch.tensor(list(logit_bias.values()), device=device)

    @property
    def plain_greedy(self) -> bool:
        """Greedy with nothing to add, record or report: its token is the argmax of the raw logits."""
        return (
            self.params.greedy
            and self.seen is None
            and self.counts is None
            and self.bias is None
            and self.logprobs is None
        )

    def sample(self, logits: torch.Tensor) -> tuple[int, float | None, list[tuple[int, float]] | None]:
        """Pick the next token from this row's logits (V,) and record it.

        Returns (token, its log probability or None, the top alternatives as (id, logprob) or None).
        """
        raw = logits.float()
        x = raw
        if self.counts is not None:
            x = x - self.frequency_penalty * self.counts - self.presence_penalty * (self.counts > 0)
        if self.bias is not None:
            x = x + self.bias
        token = int(sample_next(x.unsqueeze(0), self.params, self.generator, self.seen)[0])
        if self.seen is not None:
            self.seen[0, token] = True
        if self.counts is not None:
            self.counts[token] += 1
        logprob = top = None
        if self.logprobs is not None:
            logp = torch.log_softmax(raw, dim=-1)
            logprob = float(logp[token])
            if self.logprobs > 0:
                values, indices = torch.topk(logp, self.logprobs)
                top = list(zip(indices.tolist(), values.tolist()))
        return token, logprob, top


def plain_greedy_tokens(samplers: Sequence[RowSampler], logits: torch.Tensor) -> dict[int, int]:
    """Tokens of the rows whose sampler is `RowSampler.plain_greedy`, from one argmax over their
    logits (n, V) instead of one small call per row. Rows are left out (to their own sampler, which
    raises for that row alone) when any of them has NaN logits."""
    rows = [i for i, sampler in enumerate(samplers) if sampler.plain_greedy]
    if not rows:
        return {}
    block = logits[rows] if len(rows) < len(samplers) else logits
    try:
        tokens = greedy_tokens(block)
    except ValueError:  # some row's logits are NaN
        return {}
    return dict(zip(rows, tokens.tolist()))


def check_prompt_lengths(prompts: list[list[int]], params: SamplingParams, block_size: int) -> list[list[int]]:
    """Validate (or, with ``truncate_prompt``, left-truncate) prompts to fit the context."""
    room = block_size - params.max_new_tokens
    if room < 1:
        raise ValueError(
            f"max_new_tokens={params.max_new_tokens} leaves no room for a prompt in the "
            f"{block_size}-token context; lower max_new_tokens"
        )
    out = []
    for i, ids in enumerate(prompts):
        if not ids:
            raise ValueError(f"prompt {i} is empty; give at least one token")
        if len(ids) > room:
            if not params.truncate_prompt:
                raise ValueError(
                    f"prompt {i} has {len(ids)} tokens; with max_new_tokens={params.max_new_tokens} at most "
                    f"{room} fit the {block_size}-token context: shorten it, lower max_new_tokens, "
                    "or truncate (--truncate / truncate_prompt=True keeps the last tokens)"
                )
            ids = ids[-room:]
        out.append(list(ids))
    return out


@torch.inference_mode()
def stream_tokens(
    model: GPT,
    prompts: Sequence[Sequence[int]],
    params: SamplingParams,
    eos_id: int | None = 50256,
    *,
    compile: bool = False,
) -> Iterator[list[int | None]]:
    """Yield, per decoding step, one new token id per prompt (None once that row has finished).

    Prompts may differ in length: each row is written to the KV cache at its own positions, so no
    padding token ever enters attention. ``compile`` decodes through the model's compiled step
    (`cerebras_gpt.compiled_decode`: fastest on CPU once compiled; the first call compiles for tens of
    seconds, later processes reuse Inductor's on-disk cache).
    """
    prompts = check_prompt_lengths([list(p) for p in prompts], params, model.config.block_size)
    device = model.transformer.wte.weight.device
    B = len(prompts)
    lengths = torch.tensor([len(p) for p in prompts], device=device)
    max_len = int(lengths.max())
    generator = None
    if params.seed is not None:
        generator = torch.Generator(device=device).manual_seed(params.seed)
    seen = None
    if params.repetition_penalty != 1.0:
        seen = torch.zeros(B, model.config.vocab_size, dtype=torch.bool, device=device)
        for row, ids in enumerate(prompts):
            seen[row, ids] = True

    state = DecodeState(model, B, min(max_len + params.max_new_tokens, model.config.block_size), compiled=compile)
    ends_at_eos = eos_id is not None and params.stop_at_eos
    # On CPU, eager decode steps take the fast paths of decode_linear.py (one row split over the cores,
    # 2-32 rows through oneDNN-packed weights); a compiled step needs the model's own linears.
    with contextlib.nullcontext() if compile else decode_linears(model, max_rows=B):
        try:
            token = sample_next(state.prefill(prompts), params, generator, seen)
            finished = [False] * B  # (Python lists: a few small tensor ops a token cost more than the loop)
            next_pos = lengths.clone()
            uniform = bool((lengths == lengths[0]).all())
            for produced in range(1, params.max_new_tokens + 1):
                out = token.tolist()
                yield [None if done else t for done, t in zip(finished, out)]
                if ends_at_eos:
                    finished = [done or t == eos_id for done, t in zip(finished, out)]
                if produced == params.max_new_tokens or all(finished):
                    return  # (no step for logits nobody samples)
                if seen is not None:
                    seen[torch.arange(B, device=device), token] = True
                # Rows in step share one position when the prompts had equal lengths.
                positions = next_pos[:1] if uniform else next_pos.unsqueeze(1)
                token = sample_next(state.step(token, positions), params, generator, seen)
                next_pos += 1
        finally:
            state.close()


def generate_ids(
    model: GPT,
    prompts: Sequence[Sequence[int]],
    params: SamplingParams | None = None,
    eos_id: int | None = 50256,
    *,
    compile: bool = False,
    **sampling,
) -> list[list[int]]:
    """New token ids for each prompt (EOS not included); ``compile`` as in `stream_tokens`."""
    params = params or SamplingParams(**sampling)
    outputs: list[list[int]] = [[] for _ in prompts]
    for step in stream_tokens(model, prompts, params, eos_id, compile=compile):
        for row, token in enumerate(step):
            if token is not None and not (params.stop_at_eos and token == eos_id):
                outputs[row].append(token)
    return outputs


class TextStreamer:
    """Turns a stream of token ids into text chunks: whole UTF-8 characters only, stop strings cut."""

    def __init__(self, tokenizer, stop: Sequence[str] = ()) -> None:
        self.tokenizer, self.stop = tokenizer, list(stop)
        self.ids: list[int] = []
        self.emitted = 0  # characters of the decoded text already handed out
        self.stopped = False

    def push(self, token: int) -> str:
        """Add a token; return the text that is now safe to show (may be empty)."""
        if self.stopped:
            return ""
        self.ids.append(token)
        raw = self.tokenizer.decode_bytes(self.ids)
        text = raw.decode("utf-8", errors="ignore") if _incomplete_utf8(raw) else raw.decode("utf-8", errors="replace")
        for s in self.stop:
            cut = text.find(s, max(0, self.emitted - len(s)))
            if cut != -1:
                self.stopped = True
                chunk, self.emitted = text[self.emitted : cut], cut
                return chunk
        # Hold back a tail that could still grow into a stop string.
        hold = max((_overlap(text, s) for s in self.stop), default=0)
        safe = len(text) - hold
        chunk = text[self.emitted : safe] if safe > self.emitted else ""
        self.emitted = max(self.emitted, safe)
        return chunk

    def flush(self) -> str:
        """Text still held back when the stream ends without a stop string."""
        if self.stopped:
            return ""
        text = self.tokenizer.decode(self.ids)
        chunk, self.emitted = text[self.emitted :], len(text)
        return chunk


def _incomplete_utf8(raw: bytes) -> bool:
    """True when ``raw`` ends inside a multi-byte UTF-8 character."""
    for back in range(1, min(4, len(raw)) + 1):
        byte = raw[-back]
        if byte & 0xC0 != 0x80:  # a lead byte (or ASCII): does the character need more bytes?
            need = (
                1
                if byte < 0x80
                else 2
                if byte >> 5 == 0b110
                else 3
                if byte >> 4 == 0b1110
                else 4
                if byte >> 3 == 0b11110
                else 1
            )
            return need > back
    return False


def _overlap(text: str, stop: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``stop``."""
    for n in range(min(len(stop) - 1, len(text)), 0, -1):
        if text.endswith(stop[:n]):
            return n
    return 0


def stream_text(
    model: GPT, tokenizer, prompt: str, params: SamplingParams | None = None, *, compile: bool = False, **sampling
) -> Iterator[str]:
    """Yield text chunks as they are generated for one prompt; ``compile`` as in `stream_tokens`."""
    params = params or SamplingParams(**sampling)
    streamer = TextStreamer(tokenizer, params.stop)
    for (token,) in stream_tokens(model, [tokenizer.encode(prompt)], params, tokenizer.eos_id, compile=compile):
        if token is None or (params.stop_at_eos and token == tokenizer.eos_id):
            break
        chunk = streamer.push(token)
        if chunk:
            yield chunk
        if streamer.stopped:
            return
    tail = streamer.flush()
    if tail:
        yield tail


def generate(
    model: GPT,
    tokenizer,
    prompt: str | Sequence[str],
    params: SamplingParams | None = None,
    *,
    compile: bool = False,
    **sampling,
) -> str | list[str]:
    """Generated text (without the prompt) for one prompt or a batch of prompts; ``compile`` as in `stream_tokens`."""
    params = params or SamplingParams(**sampling)
    single = isinstance(prompt, str)
    prompts = [prompt] if single else list(prompt)
    streamers = [TextStreamer(tokenizer, params.stop) for _ in prompts]
    texts = ["" for _ in prompts]
    for step in stream_tokens(model, [tokenizer.encode(p) for p in prompts], params, tokenizer.eos_id, compile=compile):
        for row, token in enumerate(step):
            if token is None or streamers[row].stopped or (params.stop_at_eos and token == tokenizer.eos_id):
                continue
            texts[row] += streamers[row].push(token)
        if all(s.stopped for s in streamers):
            break
    texts = [t + s.flush() for t, s in zip(texts, streamers)]
    return texts[0] if single else texts
