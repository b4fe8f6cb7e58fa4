"""Fine-tuning data: records → token ids with a loss mask → padded or packed rows → batches for `train`.

Records (one JSON object per line of a ``.jsonl`` file, or plain text):
- ``{"prompt": str, "completion": str}``: loss on the completion (and the EOS that ends it) only;
- ``{"messages": [{"role", "content"}, ...]}``: the plain-text chat template shared with the server
  (`cerebras_gpt.chat.render_segments`), loss on the assistant answers only;
- ``{"text": str}``, or a ``.txt`` file whose documents are separated by blank lines: loss on every token.

Prompt and completion are tokenized separately, exactly as generation later sees them (the prompt
encoded alone, the answer continuing it). A record longer than ``seq_len + 1`` tokens keeps its last
``seq_len + 1`` (the answer sits at the end); one left with no target token is dropped and counted.

Rows: ``pad`` puts each record in its own row (padded to the longest row of the micro-batch, padding
ignored by the loss), so no record ever sees another; ``pack`` fills rows of up to ``seq_len + 1`` tokens
with whole records (never split across rows, each ending in EOS), fewer rows for short records. A packed
row is run with document masking (its batch carries ``segment_ids``, see `cerebras_gpt.train.batch`):
each record attends only to itself and its positions start at 0, so it gets exactly the logits it would
get alone (as torchtitan's document masking does, the boundaries are read from the EOS that ends each
record; a record whose text itself holds ``<|endoftext|>`` is split there). The loss mask counts each
record's own targets, as in ``pad``.

`FinetuneLoader` is the training loop's loader protocol (see `cerebras_gpt.train.loop`): an endless stream
of micro-batches ``(inputs (B, T), targets (B, T))`` with -100 for ignored targets (packed rows: a
`cerebras_gpt.train.batch.Batch` with their ``segment_ids`` too), reshuffled each epoch,
sharded by rank, resumable exactly from ``state_dict()``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cerebras_gpt import chat, jsonl

log = logging.getLogger(__name__)

IGNORE = -100


@dataclass
class Example:
    """One record as tokens: ``ids`` and ``mask`` (True where the token is a training target)."""

    ids: list[int]
    mask: list[bool]


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Records of a ``.jsonl`` file (``file:line`` in errors) or a ``.txt`` file (``{"text"}`` per document)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"data file {str(path)!r} does not exist")
    if path.suffix in (".txt", ".md"):
        docs = [d.strip() for d in path.read_text(encoding="utf-8").split("\n\n")]
        records = [{"text": d} for d in docs if d]
    else:
        records = []
        for where, record in jsonl.iterate(path):
            check_record(record, where)
            records.append(record)
    if not records:
        raise ValueError(f"data file {str(path)!r} holds no records")
    return records


def check_record(record: Any, where: str) -> None:
    """Raise a ValueError naming ``where`` unless ``record`` is one of the three record shapes."""
    if isinstance(record, dict):
        if isinstance(record.get("prompt"), str) and isinstance(record.get("completion"), str):
            return
        if isinstance(record.get("messages"), list):
            try:
                chat._check(record["messages"])
            except ValueError as e:
                raise ValueError(f"{where}: {e}") from e
            if not any(m["role"] == "assistant" for m in record["messages"]):
                raise ValueError(f"{where}: messages has no assistant turn, so nothing to learn")
            return
        if isinstance(record.get("text"), str):
            return
    raise ValueError(
        f"{where}: expected {{'prompt': str, 'completion': str}}, {{'messages': [...]}} or "
        f"{{'text': str}}, got {str(record)[:80]!r}"
    )


def encode_record(record: dict[str, Any], tokenizer) -> Example:
    """Token ids and loss mask of one record (see the module docstring)."""
    eos = tokenizer.eos_id
    if "prompt" in record and "completion" in record:
        prompt, completion = tokenizer.encode(record["prompt"]), tokenizer.encode(record["completion"]) + [eos]
        return Example(prompt + completion, [False] * len(prompt) + [True] * len(completion))
    if "messages" in record:
        ids: list[int] = []
        mask: list[bool] = []
        for text, is_answer in chat.render_segments(record["messages"]):
            piece = tokenizer.encode(text)
            ids += piece
            mask += [is_answer] * len(piece)
        return Example(ids + [eos], mask + [True])
    ids = tokenizer.encode(record["text"]) + [eos]
    return Example(ids, [True] * len(ids))


def build_examples(records: Sequence[dict[str, Any]], tokenizer, seq_len: int) -> list[Example]:
    """Encode records, keeping each one's last ``seq_len + 1`` tokens; drop those with no target left."""
    examples, truncated, dropped = [], 0, 0
    for record in records:
        ex = encode_record(record, tokenizer)
        if len(ex.ids) > seq_len + 1:
            truncated += 1
            ex = Example(ex.ids[-(seq_len + 1) :], ex.mask[-(seq_len + 1) :])
        if not any(ex.mask[1:]):  # the first token of a row is never a target
            dropped += 1
            continue
        examples.append(ex)
    if truncated or dropped:
        log.warning(
            "%d records longer than %d tokens kept their last %d tokens; %d left with no target token were dropped",
            truncated,
            seq_len + 1,
            seq_len + 1,
            dropped,
        )
    if not examples:
        raise ValueError(f"no record has a target token within seq_len={seq_len}; raise --seq-len")
    return examples


def pack_examples(examples: Sequence[Example], seq_len: int) -> list[Example]:
    """Whole examples concatenated into rows of at most ``seq_len + 1`` tokens, in order (greedy)."""
    rows: list[Example] = []
    ids: list[int] = []
    mask: list[bool] = []
    for ex in examples:
        if ids and len(ids) + len(ex.ids) > seq_len + 1:
            rows.append(Example(ids, mask))
            ids, mask = [], []
        ids, mask = ids + ex.ids, mask + ex.mask
    if ids:
        rows.append(Example(ids, mask))
    return rows


def collate(rows: Sequence[Example], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs (B, T), targets (B, T)) with T the longest row minus one; targets -100 off the mask and on padding."""
    T = max(len(r.ids) for r in rows) - 1
    x = torch.full((len(rows), T), pad_id, dtype=torch.long)
    y = torch.full((len(rows), T), IGNORE, dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r.ids) - 1
        ids = torch.tensor(r.ids, dtype=torch.long)
        x[i, :n] = ids[:-1]
        y[i, :n] = torch.where(torch.tensor(r.mask[1:]), ids[1:], IGNORE)
    return x, y


def document_ids(inputs: torch.Tensor, eos_id: int) -> torch.Tensor:
    """Segment ids (B, T) of packed rows: a record runs up to and including the EOS that ends it."""
    ends = inputs == eos_id
    return ends.cumsum(1) - ends.long()  # EOS tokens strictly before each position


def _batch(rows: Sequence[Example], pad_id: int, packed: bool):
    """The micro-batch of ``rows``: (inputs, targets), or for packed rows a `Batch` whose ``segment_ids``
    make each record attend only to itself (the EOS ending each record is ``pad_id``)."""
    x, y = collate(rows, pad_id)
    if not packed:
        return x, y
    from cerebras_gpt.train.batch import Batch

    return Batch(x, y, document_ids(x, pad_id))


class FinetuneLoader:
    """Endless micro-batches of rows for the training loop: shuffled per epoch, sharded by rank, resumable.

    The rows form one stream, epoch after epoch, each epoch a fresh permutation (seeded by ``seed`` and the
    epoch). Micro-batch ``m`` of rank ``r`` holds stream positions ``[(m·W + r)·B, (m·W + r + 1)·B)``, so
    the state is one number, ``batch`` (micro-batches read per rank), and a global batch never depends on
    the rank count.
    """

    def __init__(
        self,
        rows: Sequence[Example],
        batch_size: int,
        pad_id: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        packed: bool = False,
    ) -> None:
        if not rows:
            raise ValueError("no training rows")
        self.rows, self.batch_size, self.pad_id, self.seed = list(rows), batch_size, pad_id, seed
        self.packed = packed
        self.rank, self.world_size = rank, world_size
        self.batch = 0
        self._perm: tuple[int, list[int]] | None = None

    def __len__(self) -> int:
        """Micro-batches per rank in one epoch."""
        return math.ceil(len(self.rows) / (self.batch_size * self.world_size))

    def _row(self, position: int) -> Example:
        epoch, index = divmod(position, len(self.rows))
        if self._perm is None or self._perm[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = (epoch, torch.randperm(len(self.rows), generator=g).tolist())
        return self.rows[self._perm[1][index]]

    def __iter__(self) -> Iterator[Any]:
        while True:
            start = (self.batch * self.world_size + self.rank) * self.batch_size
            rows = [self._row(p) for p in range(start, start + self.batch_size)]
            self.batch += 1
            yield _batch(rows, self.pad_id, self.packed)

    def state_dict(self) -> dict[str, int]:
        return {
            "batch": self.batch,
            "batch_size": self.batch_size,
            "world_size": self.world_size,
            "seed": self.seed,
            "rows": len(self.rows),
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state.get("rows", len(self.rows)) != len(self.rows):
            raise ValueError(
                f"the checkpoint was trained on {state['rows']} rows, this data has {len(self.rows)}; "
                "resume with the same --data, --val-fraction, --seq-len and --packing"
            )
        self.batch = int(state["batch"])


def val_batches(
    rows: Sequence[Example], batch_size: int, pad_id: int, rank: int = 0, world_size: int = 1, packed: bool = False
):
    """A zero-argument callable giving this rank's validation micro-batches (rows ``rank::world_size``;
    ``packed``: as `FinetuneLoader`'s)."""
    mine = list(rows)[rank::world_size]

    def batches() -> Iterator[Any]:
        for i in range(0, len(mine), batch_size):
            yield _batch(mine[i : i + batch_size], pad_id, packed)

    return batches


def split_records(records: Sequence[dict], val_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, val): a seeded random ``val_fraction`` of the records (at least one when there are two or more)."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction={val_fraction!r} must be in [0, 1)")
    n_val = 0 if val_fraction == 0 or len(records) < 2 else max(1, round(len(records) * val_fraction))
    order = torch.randperm(len(records), generator=torch.Generator().manual_seed(seed)).tolist()
    val = sorted(order[:n_val])
    train = sorted(order[n_val:])
    return [records[i] for i in train], [records[i] for i in val]


__all__ = [
    "Example",
    "FinetuneLoader",
    "build_examples",
    "check_record",
    "collate",
    "document_ids",
    "encode_record",
    "pack_examples",
    "read_records",
    "split_records",
    "val_batches",
]
