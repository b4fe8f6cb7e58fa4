"""Checks on a prepared data directory before training reads it: sizes, checksums, token ids.

`verify_prepared(data_dir, vocab_size)` compares every shard listed in ``meta.json`` with the file on disk:
its size always; its sha256 and its largest token id once, then cached in ``.verified.json`` keyed by the
file's size and modification time (so a changed file is hashed again). A token id at or above the model's
vocabulary is reported here, naming the shard, instead of as an IndexError from the embedding. A data
directory that is not writable is verified on every run (nothing can be cached).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from cerebras_gpt import atomic
from cerebras_gpt.data.shards import META_NAME, read_meta

log = logging.getLogger("cerebras_gpt.data")

STAMP_NAME = ".verified.json"
CHUNK_TOKENS = 1 << 22


def _hash_and_max(path: Path, dtype: np.dtype) -> tuple[str, int]:
    """sha256 of the file and its largest token id (-1 when empty), in one pass."""
    h = hashlib.sha256()
    largest = -1
    with path.open("rb") as f:
        while block := f.read(CHUNK_TOKENS * dtype.itemsize):
            h.update(block)
            tokens = np.frombuffer(block, dtype=dtype)
            if tokens.size:
                largest = max(largest, int(tokens.max()))
    return h.hexdigest(), largest


def _read_stamp(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def verify_prepared(data_dir: str | Path, vocab_size: int | None = None) -> dict[str, int]:
    """Check the shards of ``data_dir`` against its meta.json (and ``vocab_size``); returns file -> max token id.

    Raises ValueError naming the shard and the fix for a missing, resized, altered or out-of-vocabulary shard.
    """
    data_dir = Path(data_dir)
    meta = read_meta(data_dir)
    if meta.get("format", "bin") != "bin":
        return {}  # ModelZoo HDF5: its reader checks its own layout
    dtype = np.dtype(meta["dtype"])
    stamp_path = data_dir / STAMP_NAME
    stamp = _read_stamp(stamp_path)
    fresh: dict[str, dict] = {}
    largest: dict[str, int] = {}
    for info in meta.get("splits", {}).values():
        for shard in info.get("shards", []):
            path = data_dir / shard["file"]
            if not path.is_file():
                raise ValueError(f"{path}: shard listed in {META_NAME} is missing; prepare the data again")
            stat = path.stat()
            expected = int(shard["tokens"]) * dtype.itemsize
            if stat.st_size != expected:
                raise ValueError(
                    f"{path}: {stat.st_size} bytes, but {META_NAME} says {expected}; the shard is "
                    "damaged or from another run: prepare the data again"
                )
            key = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": shard.get("sha256")}
            cached = stamp.get(shard["file"])
            if cached is not None and all(cached.get(k) == v for k, v in key.items()):
                fresh[shard["file"]] = cached
                largest[shard["file"]] = int(cached["max_token"])
                continue
            digest, max_token = _hash_and_max(path, dtype)
            if shard.get("sha256") and digest != shard["sha256"]:
                raise ValueError(
                    f"{path}: sha256 {digest[:12]}... differs from {META_NAME}'s "
                    f"{shard['sha256'][:12]}...; the shard was altered or damaged: prepare the data again"
                )
            fresh[shard["file"]] = dict(key, max_token=max_token)
            largest[shard["file"]] = max_token
    if vocab_size is not None:
        for file, max_token in largest.items():
            if max_token >= vocab_size:
                raise ValueError(
                    f"{data_dir / file}: token id {max_token} is outside the model's vocabulary "
                    f"({vocab_size} ids); prepare the data with the model's tokenizer or pick a model "
                    f"with vocab_size > {max_token}"
                )
    if fresh != stamp:
        try:
            atomic.write_json(stamp_path, fresh)
        except OSError as e:  # a read-only data directory: verified, just not cached
            log.debug("cannot cache the data check in %s: %s", stamp_path, e)
    return largest


__all__ = ["STAMP_NAME", "verify_prepared"]
