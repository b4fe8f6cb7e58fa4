"""Loss, perplexity and bits per byte of a model on raw text or prepared token shards.

Two kinds of input:

- documents (plain-text files, one document each, or ``.jsonl`` files with one ``text`` per line): every
  document is scored on its own, with `<|endoftext|>` as the context of its first token (as lm-eval's
  ``loglikelihood_rolling`` does), so every token of the text is predicted once and bits per byte cover
  every byte. A document longer than the context is scored with a sliding window: windows of ``context``
  tokens that advance by ``stride``, each scoring only the tokens the previous window did not (the
  Hugging Face perplexity recipe, huggingface.co/docs/transformers/perplexity), so each token sees at
  least ``context - stride`` tokens of context. ``stride = context`` gives disjoint windows (fastest);
  smaller strides give lower, better-conditioned perplexity at ``context / stride`` times the cost.
- a prepared data directory (``cerebras-gpt prepare``): the windows of a split as the trainer sees them
  (`cerebras_gpt.data.loader.iter_validation`, ``T + 1`` tokens with stride ``T``), every target scored.
  Bytes are counted by decoding the target tokens, so bits per byte are exact here too.

Loss is the mean negative log-likelihood in nats per token, perplexity ``exp(loss)``, bits per byte
``sum NLL / (ln 2 * bytes)`` (tokenizer-independent, comparable across vocabularies).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from cerebras_gpt import jsonl
from cerebras_gpt.model import GPT
from cerebras_gpt.runtime import autocast_context

log = logging.getLogger(__name__)


@dataclass
class Window:
    """Tokens fed to the model and how many of the last ones are scored: targets ``tokens[-score:]``
    are predicted from ``tokens[:-1]``."""

    tokens: list[int]
    score: int


def sliding_windows(ids: Sequence[int], context: int, stride: int) -> Iterator[Window]:
    """Windows that score tokens ``1..n-1`` of ``ids`` exactly once (token 0 is the context of the first).

    The first window scores tokens ``1..context``; each next one advances the end by ``stride`` and scores
    only the new tokens, with up to ``context`` tokens of input before them (the Hugging Face recipe). With
    ``stride == context`` the windows are disjoint but for one token of context, as in lm-eval's
    ``loglikelihood_rolling``.

    Args:
        ids: the token ids of one document, (n,), usually starting with EOS.
        context: most tokens fed to the model per window (at most its block size).
        stride: new tokens per window after the first, ``1 <= stride <= context``.
    """
    if not 1 <= stride <= context:
        raise ValueError(f"stride={stride} must be between 1 and the context ({context})")
    n = len(ids)
    scored_to, end = 1, min(1 + context, n)  # position 0 is never a target
    while scored_to < n:
        yield Window(list(ids[max(0, end - context - 1) : end]), end - scored_to)
        scored_to, end = end, min(end + stride, n)


@dataclass
class Totals:
    """Running sums over scored tokens."""

    nll: float = 0.0
    tokens: int = 0
    bytes: int = 0
    windows: int = 0

    def add(self, other: Totals) -> None:
        self.nll += other.nll
        self.tokens += other.tokens
        self.bytes += other.bytes
        self.windows += other.windows

    def metrics(self) -> dict[str, float | int]:
        loss = self.nll / self.tokens if self.tokens else math.nan
        return {
            "loss": loss,
            "perplexity": math.exp(loss) if self.tokens else math.nan,
            "bits_per_token": loss / math.log(2) if self.tokens else math.nan,
            "bits_per_byte": self.nll / (math.log(2) * self.bytes) if self.bytes else math.nan,
            "tokens": self.tokens,
            "bytes": self.bytes,
            "windows": self.windows,
            "nll_sum": self.nll,
        }


@torch.inference_mode()
def score_windows(model: GPT, windows: Sequence[Window], device: torch.device | None = None) -> list[float]:
    """Summed NLL (nats) of the scored targets of each window, run as one right-padded batch.

    Padding sits after each row's last token, so causal attention never lets a real token see it.

    Returns:
        one float per window.
    """
    device = device or model.transformer.wte.weight.device
    B, T = len(windows), max(len(w.tokens) for w in windows)
    inputs = torch.zeros(B, T - 1, dtype=torch.long)
    targets = torch.full((B, T - 1), -100, dtype=torch.long)
    for row, w in enumerate(windows):
        n = len(w.tokens)
        ids = torch.tensor(w.tokens)
        inputs[row, : n - 1] = ids[:-1]
        targets[row, n - 1 - w.score : n - 1] = ids[n - w.score :]
    inputs, targets = inputs.to(device), targets.to(device)
    with autocast_context(device):
        logits = model(inputs)  # (B, T-1, V)
    nll = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="none")
    return nll.view(B, T - 1).sum(dim=1).tolist()


def read_documents(path: str | Path, text_key: str = "text") -> Iterator[str]:
    """Documents of a raw-text input: a text file is one document; ``.jsonl`` has one per line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--data {str(path)!r}: no such file or prepared data directory")
    if path.suffix in (".jsonl", ".ndjson"):
        for where, row in jsonl.iterate(path):
            if not isinstance(row.get(text_key), str):
                raise ValueError(f"{where}: no string field {text_key!r}; set --text-key")
            yield row[text_key]
        return
    try:
        yield path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(
            f"--data {str(path)!r} is not UTF-8 text ({e}); for binary or compressed corpora run "
            "`cerebras-gpt prepare` and pass the prepared directory"
        ) from e


@dataclass
class EvalResult:
    """Metrics over all inputs plus one entry per input."""

    metrics: dict[str, Any]
    per_input: dict[str, dict[str, Any]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**self.metrics, "inputs": self.per_input, "settings": self.settings}


def _batched(items: Iterable, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def evaluate_texts(
    model: GPT,
    tokenizer,
    texts: Iterable[str],
    context: int | None = None,
    stride: int | None = None,
    batch_size: int = 8,
    progress=None,
    max_batches: int | None = None,
) -> Totals:
    """Sliding-window NLL over documents (each prefixed with EOS as the first token's context).

    Args:
        model: the model (eval mode).
        tokenizer: its tokenizer (``encode``, ``eos_id``).
        texts: the documents.
        context: tokens per window; default the model's block size.
        stride: window advance; default ``context`` (disjoint windows).
        batch_size: windows per forward pass.
        progress: a tqdm bar to advance by scored tokens, or None.
        max_batches: stop after this many batches (bytes then count the scored tokens' bytes).
    """
    context = context or model.config.block_size
    if not 2 <= context <= model.config.block_size:
        raise ValueError(f"context={context} must be between 2 and the model's block size ({model.config.block_size})")
    stride = stride or context
    totals = Totals()
    texts = list(texts)

    def windows() -> Iterator[Window]:
        for text in texts:
            totals.bytes += len(text.encode("utf-8"))
            yield from sliding_windows([tokenizer.eos_id, *tokenizer.encode(text)], context, stride)

    scored_bytes = 0  # of the scored targets alone: the byte count when the texts are cut short
    for number, batch in enumerate(_batched(windows(), batch_size)):
        if max_batches is not None and number >= max_batches:
            totals.bytes = scored_bytes
            break
        if max_batches is not None:
            scored_bytes += sum(len(tokenizer.decode_bytes(w.tokens[-w.score :])) for w in batch)
        nll = score_windows(model, batch)
        scored = sum(w.score for w in batch)
        totals.nll += sum(nll)
        totals.tokens += scored
        totals.windows += len(batch)
        if progress is not None:
            progress.update(scored)
    return totals


def evaluate_prepared(
    model: GPT,
    tokenizer,
    data_dir: str | Path,
    split: str = "val",
    context: int | None = None,
    batch_size: int = 8,
    max_batches: int | None = None,
    progress=None,
) -> Totals:
    """NLL over every window of a prepared split, as `iter_validation` yields them ((B, T + 1) LongTensors).

    Args:
        model: the model (eval mode).
        tokenizer: decodes the targets to count their bytes (None: bytes are not counted).
        data_dir: a directory written by `cerebras-gpt prepare`.
        split: ``"val"`` or ``"train"``.
        context: T; default the model's block size.
        batch_size: windows per forward pass.
        max_batches: stop after this many batches.
        progress: a tqdm bar to advance by scored tokens, or None.
    """
    from cerebras_gpt.data.loader import iter_validation

    T = context or model.config.block_size
    if not 1 <= T <= model.config.block_size:
        raise ValueError(f"context={T} must be between 1 and the model's block size ({model.config.block_size})")
    totals = Totals()
    device = model.transformer.wte.weight.device
    for batch in iter_validation(data_dir, T, batch_size, max_batches=max_batches, split=split):
        x, y = batch[:, :-1].to(device), batch[:, 1:].to(device)
        with torch.inference_mode(), autocast_context(device):
            logits = model(x)
        totals.nll += float(F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="sum"))
        totals.tokens += y.numel()
        totals.windows += len(batch)
        if tokenizer is not None:
            totals.bytes += sum(len(tokenizer.decode_bytes(row.tolist())) for row in batch[:, 1:])
        if progress is not None:
            progress.update(y.numel())
    if totals.tokens == 0:
        raise ValueError(
            f"split {split!r} of {str(data_dir)!r} has no window of {T + 1} tokens; "
            "lower --context or prepare more data"
        )
    return totals


def is_prepared_dir(path: str | Path) -> bool:
    return (Path(path) / "meta.json").is_file()


def evaluate_perplexity(
    model: GPT,
    tokenizer,
    inputs: Sequence[str | Path],
    context: int | None = None,
    stride: int | None = None,
    batch_size: int = 8,
    split: str = "val",
    max_batches: int | None = None,
    text_key: str = "text",
    show_progress: bool = True,
) -> EvalResult:
    """Loss, perplexity and bits per byte over text files and/or prepared data directories.

    Args:
        model: the model (put in eval mode here).
        tokenizer: the model's tokenizer.
        inputs: text files (``.txt``, ``.jsonl``) and prepared data directories.
        context: tokens per window (default the model's block size).
        stride: sliding-window advance for text (default ``context``).
        batch_size: windows per forward pass.
        split: the split of prepared directories.
        max_batches: cap per input (a quick look; bits per byte then cover only part of a text).
        text_key: the text field of ``.jsonl`` files.
        show_progress: show a tqdm bar (tokens, rate, ETA).
    """
    from tqdm.auto import tqdm

    if not inputs:
        raise ValueError("no --data given: pass text files and/or prepared data directories")
    model.eval()
    total, per_input = Totals(), {}
    start = time.perf_counter()
    for item in inputs:
        bar = tqdm(
            desc=f"eval {Path(item).name}",
            unit="tok",
            unit_scale=True,
            disable=not show_progress,
            total=_expected_tokens(item, split, context or model.config.block_size),
        )
        with bar:
            if is_prepared_dir(item):
                part = evaluate_prepared(model, tokenizer, item, split, context, batch_size, max_batches, bar)
            else:
                part = evaluate_texts(
                    model, tokenizer, read_documents(item, text_key), context, stride, batch_size, bar, max_batches
                )
        per_input[str(item)] = part.metrics()
        total.add(part)
    seconds = time.perf_counter() - start
    metrics = {
        **total.metrics(),
        "seconds": round(seconds, 3),
        "tokens_per_second": round(total.tokens / seconds, 1) if seconds else None,
    }
    ctx = context or model.config.block_size
    settings = {"context": ctx, "stride": stride or ctx, "batch_size": batch_size, "split": split}
    return EvalResult(metrics, per_input, settings)


def _expected_tokens(item: str | Path, split: str, context: int) -> int | None:
    """Tokens the bar will count, when cheap to know (prepared data: from meta.json)."""
    if not is_prepared_dir(item):
        return None
    from cerebras_gpt.data.loader import WindowSource

    try:
        return len(WindowSource(item, split, context)) * context
    except (ValueError, KeyError, FileNotFoundError):
        return None


__all__ = [
    "Window",
    "sliding_windows",
    "score_windows",
    "evaluate_texts",
    "evaluate_prepared",
    "evaluate_perplexity",
    "EvalResult",
    "Totals",
    "read_documents",
    "is_prepared_dir",
]
