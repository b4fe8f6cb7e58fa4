"""JSON Lines: one JSON object per line. The one reader (errors name the file and line) and writers.

Every JSONL file a user hands us (fine-tuning records, documents to score, corpus chunks) and every one we
write (example datasets, run logs) goes through here, so a bad line is always reported the same way,
``path:line: what is wrong; the fix``, never as a bare ``JSONDecodeError`` from deep inside. Blank lines
are skipped. Lines are decoded one at a time, so undecodable bytes are named by line too.

Imports only the standard library: tokenizing workers of `prepare` use it without importing torch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

FIX = "each line must be one JSON object"


class JSONLError(ValueError):
    """A bad JSONL line: ``where`` (``path:line``) and ``reason`` (what is wrong with it), kept apart so a caller
    can add its own fix (``prepare`` suggests --skip-bad); ``str()`` is ``where: reason; each line must …``."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}; {FIX}")
        self.where, self.reason = where, reason


def parse_line(line: str | bytes, where: str) -> dict[str, Any]:
    """The JSON object on one line; a `JSONLError` naming ``where`` if it is not valid JSON or not an object."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise JSONLError(where, f"not valid JSON ({e.msg} at column {e.colno})") from None
    except UnicodeDecodeError as e:
        raise JSONLError(where, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    if not isinstance(record, dict):
        raise JSONLError(where, f"a JSON {type(record).__name__}, not an object")
    return record


def iterate(path: str | Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(where, record)`` for each non-blank line of ``path``, ``where`` being ``path:line`` (1-based) for the
    caller's own checks of the record's fields. Streams: memory does not grow with the file."""
    path = Path(path)
    with path.open("rb") as f:
        for n, raw in enumerate(f, 1):
            if raw.strip():
                where = f"{path}:{n}"
                yield where, parse_line(raw.rstrip(b"\r\n"), where)


def read(path: str | Path) -> list[dict[str, Any]]:
    """Every record of ``path``, in order (see `iterate`)."""
    return [record for _, record in iterate(path)]


def dumps(record: Any, default: Callable[[Any], Any] | None = None) -> str:
    """One line: compact JSON and its newline (non-ASCII kept as is: the files are UTF-8). ``default`` turns
    what JSON cannot hold into what it can, as in `json.dumps`."""
    return json.dumps(record, ensure_ascii=False, default=default) + "\n"


def write(path: str | Path, records: Iterable[Any]) -> Path:
    """Write ``records`` as a new file, replacing ``path`` whole: a temporary file beside it, then a rename, so
    a reader never sees half of it."""
    from cerebras_gpt.atomic import write_text

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, "".join(dumps(r) for r in records))
    return path


def append(path: str | Path, record: Any, default: Callable[[Any], Any] | None = None) -> None:
    """Add one record to ``path`` (created if missing), as one write of one whole line, flushed to disk.

    If an earlier writer died mid-line, the file does not end in a newline: one is written first, so the
    torn line stays one bad line (named by `iterate`) instead of swallowing this record too. ``default``: as
    in `dumps`.
    """
    path = Path(path)
    line = dumps(record, default).encode("utf-8")
    with path.open("ab") as f:
        if f.tell() > 0:
            with path.open("rb") as r:
                r.seek(-1, os.SEEK_END)
                if r.read(1) != b"\n":
                    line = b"\n" + line
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


__all__ = ["JSONLError", "append", "dumps", "iterate", "parse_line", "read", "write"]
