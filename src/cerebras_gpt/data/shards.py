"""The prepared-data format: flat token shards per split plus ``meta.json``, and how to read them.

A prepared directory holds, for each split (``train``, ``val``), shards ``<split>_00000.bin``,
``<split>_00001.bin``, ... Each shard is a headerless array of token ids (``uint16`` while the vocabulary
fits in 16 bits, ``uint32`` otherwise) in native little-endian order, the same flat file nanoGPT's
``prepare.py`` writes and ``np.memmap`` reads. Documents are packed back to back, each followed by the EOS
token, and a shard always ends at a document boundary. The split's token stream is the shards concatenated
in order; training windows may straddle shard boundaries.

``meta.json`` records everything needed to trust and read the shards: the tokenizer identity, dtype, EOS
id, the documents and tokens of every shard and split, sha256 checksums, the sequence length the data was
prepared for, the command line and the package version. ``format`` is ``"bin"`` for these shards or
``"hdf5"`` for the ModelZoo layout (see ``cerebras_gpt.data.hdf5``).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

META_NAME = "meta.json"
FORMAT_VERSION = 1
SPLITS = ("train", "val")


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    """``uint16`` while every id fits (vocab_size <= 65536), else ``uint32``."""
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def shard_name(split: str, index: int) -> str:
    return f"{split}_{index:05d}.bin"


def sha256_file(path: str | Path, chunk: int = 1 << 24) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_meta(data_dir: str | Path) -> dict:
    """The ``meta.json`` of a prepared directory, with a clear error when it is not one."""
    data_dir = Path(data_dir)
    path = data_dir / META_NAME
    if not path.is_file():
        hint = (
            " (an interrupted `cerebras-gpt prepare` run: run the same command again to finish it)"
            if (data_dir / ".prepare").is_dir()
            else " (make one with `cerebras-gpt prepare INPUTS --out DIR`)"
        )
        raise ValueError(f"{str(data_dir)!r} is not a prepared data directory: no {META_NAME}{hint}")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e}); prepare the data again") from e
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"{path}: format_version {meta['format_version']} is newer than this package reads "
            f"({FORMAT_VERSION}); upgrade cerebras-gpt"
        )
    return meta


def write_json_atomic(path: Path, obj: dict) -> None:
    """Write JSON to a temporary name, fsync, then rename: a crash never leaves a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@dataclass
class ShardInfo:
    """One shard as ``meta.json`` lists it."""

    file: str
    documents: int = 0
    tokens: int = 0
    sha256: str | None = None


@dataclass
class SplitWriter:
    """Appends documents (token arrays already ending in EOS) to the shards of one split.

    A shard is closed, and its checksum computed, once it holds at least ``shard_tokens`` tokens, so shards
    end at document boundaries and their contents depend only on the sequence of documents. The writer's
    state (``state()``/``from_state``) is plain data: an interrupted run truncates the open shard back to
    the committed size and carries on.
    """

    directory: Path
    split: str
    dtype: str
    shard_tokens: int
    shards: list[ShardInfo] = field(default_factory=list)
    _file: object = None

    def append(self, tokens: np.ndarray, lengths: np.ndarray) -> None:
        """Append documents: ``tokens`` (1-D, this split's dtype) is their concatenation, ``lengths`` (1-D)
        their token counts. The split into shards depends only on the documents, not on how they arrive."""
        start = 0
        while len(lengths):
            if not self.shards or self._full():
                self._open_next()
            shard = self.shards[-1]
            # Take documents until the shard reaches shard_tokens (the last one may overshoot).
            ends = np.cumsum(lengths)
            k = min(int(np.searchsorted(ends, self.shard_tokens - shard.tokens, side="left")) + 1, len(lengths))
            n = int(ends[k - 1])
            tokens[start : start + n].tofile(self._file)
            shard.tokens += n
            shard.documents += k
            start, lengths = start + n, lengths[k:]

    def _full(self) -> bool:
        return self.shards[-1].tokens >= self.shard_tokens

    def _open_next(self) -> None:
        self._close_current()
        self.shards.append(ShardInfo(file=shard_name(self.split, len(self.shards))))
        self._file = open(self.directory / self.shards[-1].file, "wb")

    def _close_current(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self.shards and self.shards[-1].sha256 is None and self._full():
            self.shards[-1].sha256 = sha256_file(self.directory / self.shards[-1].file)

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())

    def finish(self) -> list[ShardInfo]:
        """Close the last shard and checksum every shard that lacks one."""
        if self._file is not None:
            self._file.close()
            self._file = None
        for shard in self.shards:
            if shard.sha256 is None:
                shard.sha256 = sha256_file(self.directory / shard.file)
        return self.shards

    def state(self) -> dict:
        return {"shards": [vars(s).copy() for s in self.shards]}

    @classmethod
    def from_state(cls, directory: Path, split: str, dtype: str, shard_tokens: int, state: dict) -> SplitWriter:
        """Reopen after an interruption: drop bytes written past the committed state, append from there."""
        writer = cls(directory, split, dtype, shard_tokens, [ShardInfo(**s) for s in state["shards"]])
        itemsize = np.dtype(dtype).itemsize
        # Shards opened after the last commit hold uncommitted tokens only.
        index = len(writer.shards)
        while (directory / shard_name(split, index)).exists():
            (directory / shard_name(split, index)).unlink()
            index += 1
        if writer.shards:
            last = writer.shards[-1]
            path = directory / last.file
            with open(path, "r+b") as f:
                f.truncate(last.tokens * itemsize)
            if not writer._full():
                writer._file = open(path, "ab")
        return writer


class TokenStream:
    """The concatenated token stream of one split, memory-mapped shard by shard (read-only).

    ``read(start, length)`` returns tokens ``[start, start + length)`` of the concatenation as an array of
    the shards' dtype; a read crossing a shard boundary is stitched from both shards.
    """

    def __init__(self, data_dir: str | Path, split: str, meta: dict | None = None) -> None:
        data_dir = Path(data_dir)
        meta = meta or read_meta(data_dir)
        if meta.get("format", "bin") != "bin":
            raise ValueError(f"{str(data_dir)!r} holds {meta.get('format')!r} data; TokenStream reads 'bin' shards")
        splits = meta.get("splits", {})
        if split not in splits:
            raise ValueError(f"{str(data_dir)!r} has no split {split!r}; it has {sorted(splits)}")
        self.dtype = np.dtype(meta["dtype"])
        self.eos_id = int(meta["eos_id"])
        self.arrays: list[np.ndarray] = []
        for shard in splits[split]["shards"]:
            path = data_dir / shard["file"]
            if not path.is_file():
                raise ValueError(f"{path}: shard listed in {META_NAME} is missing; prepare the data again")
            expected = shard["tokens"] * self.dtype.itemsize
            if path.stat().st_size != expected:
                raise ValueError(
                    f"{path}: {path.stat().st_size} bytes, but {META_NAME} says {expected}; "
                    "the shard is damaged or from another run: prepare the data again"
                )
            if shard["tokens"]:
                self.arrays.append(np.memmap(path, dtype=self.dtype, mode="r"))
        sizes = np.array([a.size for a in self.arrays], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.num_tokens = int(self.offsets[-1])

    def __len__(self) -> int:
        return self.num_tokens

    def read(self, start: int, length: int) -> np.ndarray:
        """Tokens ``[start, start + length)``; shape ``(length,)``."""
        if start < 0 or start + length > self.num_tokens:
            raise IndexError(f"tokens [{start}, {start + length}) outside a stream of {self.num_tokens}")
        i = int(np.searchsorted(self.offsets, start, side="right")) - 1
        local = start - int(self.offsets[i])
        array = self.arrays[i]
        if local + length <= array.size:
            return np.asarray(array[local : local + length])
        parts, need = [], length
        while need:
            take = min(need, self.arrays[i].size - local)
            parts.append(np.asarray(self.arrays[i][local : local + take]))
            need -= take
            i, local = i + 1, 0
        return np.concatenate(parts)
