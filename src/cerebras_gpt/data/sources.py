"""Input readers for `prepare`: which inputs exist, and how each is cut into units of work.

An input string is one of:

* a file: ``.txt``/``.text``/``.md`` (plain text), ``.jsonl``/``.ndjson`` (one JSON object per line), the
  same compressed as ``.jsonl.gz`` or ``.jsonl.zst``, or ``.parquet``;
* a directory (searched recursively for those files) or a glob (``data/**/*.jsonl.zst``);
* ``hf:NAME[:CONFIG[:SPLIT]]``, a Hugging Face dataset read through ``datasets`` in streaming mode;
* ``builtin:pydoc``, the topic help pages of the Python standard library (``pydoc_data.topics``), a
  corpus of about 0.5 MB present on every machine, used by the demo.

The reader only cuts the input into *tasks* (blocks of raw bytes ending at a document boundary, or lists
of texts) and says where the next task starts (a position that an interrupted run resumes from). Decoding,
JSON parsing and tokenization happen in the worker processes (``cerebras_gpt.data.prepare``). Tasks depend
only on the input and the block size, never on the number of workers.
"""

from __future__ import annotations

import glob
import gzip
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass

from cerebras_gpt.extras import require_extra

TEXT_SUFFIXES = (".txt", ".text", ".md")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz", ".jsonl.zst", ".jsonl.zstd", ".ndjson.zst")
PARQUET_SUFFIXES = (".parquet",)
SUPPORTED = TEXT_SUFFIXES + JSONL_SUFFIXES + PARQUET_SUFFIXES
BUILTIN = {"pydoc": "the Python standard library's pydoc topic pages (pydoc_data.topics)"}
# Paragraph mode gives up looking for a blank line after this many blocks and cuts at a line end.
_MAX_BLOCKS_PER_PARAGRAPH = 64


@dataclass(frozen=True)
class Source:
    """One input: ``kind`` is text, jsonl, parquet, hf or builtin; ``name`` a path, hub id or builtin name."""

    kind: str
    name: str
    compression: str | None = None
    size: int | None = None  # bytes on disk, for progress (None: unknown, e.g. a hub stream)
    mtime_ns: int | None = None
    hf_config: str | None = None
    hf_split: str = "train"

    def describe(self) -> dict:
        """What ``meta.json`` and the resume check record about this input."""
        out = {"kind": self.kind, "name": self.name}
        for key in ("compression", "size", "mtime_ns", "hf_config"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.kind == "hf":
            out["hf_split"] = self.hf_split
        return out


@dataclass
class Task:
    """A unit of work for a worker, and the reader position just after it.

    ``mode`` is ``jsonl`` (``payload`` is bytes of whole lines), ``paragraphs`` (bytes of whole
    paragraphs), ``document`` (bytes of one whole document) or ``texts`` (a list of str, None for a
    missing value). ``first`` is the line (1-based) or row (0-based) the payload starts at, for messages.
    """

    mode: str
    where: str
    first: int
    payload: bytes | list
    position: dict
    nbytes: int  # input bytes in this task (decompressed; UTF-8 text for row sources)
    progress_bytes: int  # bytes of the input files on disk this task accounts for, for the progress bar


def _kind_of(path: str) -> tuple[str, str | None] | None:
    lower = path.lower()
    if lower.endswith(PARQUET_SUFFIXES):
        return "parquet", None
    if lower.endswith(JSONL_SUFFIXES):
        compression = "gz" if lower.endswith(".gz") else "zst" if lower.endswith((".zst", ".zstd")) else None
        return "jsonl", compression
    if lower.endswith(TEXT_SUFFIXES):
        return "text", None
    return None


def _file_source(path: str) -> Source:
    kind = _kind_of(path)
    if kind is None:
        raise ValueError(f"input {path!r}: unsupported file type; supported endings are {', '.join(SUPPORTED)}")
    if not os.access(path, os.R_OK):
        raise ValueError(f"cannot read input {path!r}: permission denied")
    st = os.stat(path)
    return Source(kind[0], os.path.abspath(path), kind[1], st.st_size, st.st_mtime_ns)


def _directory_sources(path: str) -> list[Source]:
    found = []
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(root, f) for f in sorted(files) if not f.startswith(".") and _kind_of(f)]
    if not found:
        raise ValueError(f"input directory {path!r} holds no supported files ({', '.join(SUPPORTED)})")
    return [_file_source(f) for f in sorted(found)]


def expand_inputs(inputs: list[str]) -> list[Source]:
    """Resolve input strings into an ordered list of sources, with a clear error for anything unusable."""
    if not inputs:
        raise ValueError("no inputs: pass files, directories, globs, hf:NAME or builtin:pydoc")
    sources: list[Source] = []
    for spec in inputs:
        if spec.startswith("builtin:"):
            name = spec.split(":", 1)[1]
            if name not in BUILTIN:
                raise ValueError(
                    f"input {spec!r}: unknown built-in corpus; available: "
                    + ", ".join(f"builtin:{k} ({v})" for k, v in BUILTIN.items())
                )
            sources.append(Source("builtin", name, size=sum(len(t.encode()) for t in _builtin_texts(name, 0))))
        elif spec.startswith("hf:"):
            parts = spec[3:].split(":")
            if not parts[0] or len(parts) > 3:
                raise ValueError(
                    f"input {spec!r}: write a hub dataset as hf:NAME[:CONFIG[:SPLIT]], "
                    "e.g. hf:wikitext:wikitext-103-raw-v1:train"
                )
            if not os.path.exists(parts[0]):  # a local dataset folder works offline; a hub name needs the network
                _check_hub_reachable(parts[0])
            sources.append(
                Source(
                    "hf",
                    parts[0],
                    hf_config=(parts[1] or None) if len(parts) > 1 else None,
                    hf_split=parts[2] if len(parts) > 2 else "train",
                )
            )
        elif os.path.isdir(spec):
            sources += _directory_sources(spec)
        elif os.path.isfile(spec):
            sources.append(_file_source(spec))
        elif glob.has_magic(spec):
            matches = sorted(glob.glob(spec, recursive=True))
            if not matches:
                raise ValueError(f"input glob {spec!r} matches no files")
            for m in matches:
                if os.path.isdir(m):
                    sources += _directory_sources(m)
                elif _kind_of(m):
                    sources.append(_file_source(m))
            if not any(s for s in sources):
                raise ValueError(f"input glob {spec!r} matches no supported files ({', '.join(SUPPORTED)})")
        elif os.path.lexists(spec):
            raise ValueError(f"cannot read input {spec!r}: not a regular file or directory")
        else:
            raise ValueError(f"input {spec!r}: no such file or directory (hub datasets are written hf:NAME)")
    return sources


def start_position() -> dict:
    return {"source": 0, "offset": 0, "line": 1, "row": 0}


def iter_tasks(
    sources: list[Source], position: dict, *, block_size: int, text_key: str, paragraphs: bool
) -> Iterator[Task]:
    """Tasks from ``position`` on, in input order; each carries the position after it."""
    for index in range(position["source"], len(sources)):
        source = sources[index]
        pos = position if index == position["source"] else {**start_position(), "source": index}
        try:
            if source.kind == "jsonl" or (source.kind == "text" and paragraphs):
                yield from _iter_line_tasks(
                    source, pos, block_size, "jsonl" if source.kind == "jsonl" else "paragraphs"
                )
            elif source.kind == "text":
                yield from _iter_document_task(source, pos)
            elif source.kind == "parquet":
                yield from _iter_parquet_tasks(source, pos, block_size, text_key)
            elif source.kind == "hf":
                yield from _iter_row_tasks(source, pos, block_size, _hf_texts(source, text_key, pos["row"]))
            else:
                yield from _iter_row_tasks(source, pos, block_size, _builtin_texts(source.name, pos["row"]))
        except (OSError, EOFError, *_decompression_errors()) as e:  # unreadable, truncated or damaged
            raise ValueError(f"cannot read input {source.name!r}: {getattr(e, 'strerror', None) or e}") from e


def _decompression_errors() -> tuple:
    try:
        import zstandard

        return (zstandard.ZstdError,)
    except ImportError:
        return ()


class _CountingReader(io.RawIOBase):
    """Wraps the raw file under a decompressor so progress can follow bytes read from disk."""

    def __init__(self, f) -> None:
        self.f, self.count = f, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = self.f.readinto(b)
        self.count += n
        return n

    def close(self) -> None:
        self.f.close()
        super().close()


def _open_stream(source: Source):
    raw = _CountingReader(open(source.name, "rb"))
    if source.compression == "gz":
        return gzip.GzipFile(fileobj=raw, mode="rb"), raw
    if source.compression == "zst":
        require_extra("data", "zstandard", feature=f"reading {source.name!r} (zstd)")
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True), raw
    return raw, raw


def _skip(stream, raw, source: Source, offset: int) -> None:
    if not offset:
        return
    if source.compression is None:
        raw.f.seek(offset)
        raw.count = offset
        return
    left = offset  # a compressed stream cannot seek: decompress and drop what was already done
    while left:
        chunk = stream.read(min(left, 1 << 24))
        if not chunk:
            raise ValueError(
                f"input {source.name!r} is shorter than when this run began; inputs changed: run again with --overwrite"
            )
        left -= len(chunk)


def _cut(buffer: bytes, mode: str) -> int:
    """Where a block may end: after the last newline (jsonl) or the last blank line (paragraphs); 0: nowhere."""
    if mode == "jsonl":
        return buffer.rfind(b"\n") + 1
    cut = max(buffer.rfind(b"\n\n") + 2, buffer.rfind(b"\n\r\n") + 3)
    return cut if cut > 2 else 0


def _iter_line_tasks(source: Source, pos: dict, block_size: int, mode: str) -> Iterator[Task]:
    stream, raw = _open_stream(source)
    with raw, stream:
        _skip(stream, raw, source, pos["offset"])
        offset, line, buffer, reported = pos["offset"], pos["line"], b"", raw.count
        while True:
            chunk = stream.read(block_size)
            if not chunk:  # end of file: the rest, and the position of the next input
                done = source.size or raw.count
                yield Task(
                    mode,
                    source.name,
                    line,
                    buffer,
                    {**start_position(), "source": pos["source"] + 1},
                    len(buffer),
                    max(0, done - reported),
                )
                return
            buffer += chunk
            cut = _cut(buffer, mode)
            if cut == 0:
                if mode == "jsonl" or len(buffer) < _MAX_BLOCKS_PER_PARAGRAPH * block_size:
                    continue
                cut = buffer.rfind(b"\n") + 1 or len(buffer)
            block, buffer = buffer[:cut], buffer[cut:]
            offset, lines = offset + cut, block.count(b"\n")
            next_pos = {"source": pos["source"], "offset": offset, "line": line + lines, "row": 0}
            yield Task(mode, source.name, line, block, next_pos, cut, raw.count - reported)
            line, reported = line + lines, raw.count


def _iter_document_task(source: Source, pos: dict) -> Iterator[Task]:
    with open(source.name, "rb") as f:
        data = f.read()
    yield Task(
        "document", source.name, 1, data, {**start_position(), "source": pos["source"] + 1}, len(data), len(data)
    )


def _iter_row_tasks(source: Source, pos: dict, block_size: int, texts: Iterator) -> Iterator[Task]:
    row, batch, nbytes = pos["row"], [], 0
    for text in texts:
        batch.append(text)
        nbytes += len(text.encode("utf-8", errors="replace")) if isinstance(text, str) else 0
        if nbytes >= block_size:
            yield Task("texts", source.name, row, batch, {**pos, "row": row + len(batch)}, nbytes, nbytes)
            row, batch, nbytes = row + len(batch), [], 0
    yield Task("texts", source.name, row, batch, {**start_position(), "source": pos["source"] + 1}, nbytes, nbytes)


def _iter_parquet_tasks(source: Source, pos: dict, block_size: int, text_key: str) -> Iterator[Task]:
    require_extra("data", "pyarrow", feature=f"reading {source.name!r} (Parquet)")
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(source.name)
    except Exception as e:  # pyarrow raises ArrowInvalid, OSError, ... for a damaged file
        raise ValueError(f"cannot read input {source.name!r} as Parquet: {e}") from e
    names = pf.schema_arrow.names
    if text_key not in names:
        raise ValueError(
            f"input {source.name!r} has no column {text_key!r} (columns: {names}); "
            "choose the text column with --text-key"
        )
    total_rows = max(1, pf.metadata.num_rows)

    def texts() -> Iterator:
        skip = pos["row"]
        for batch in pf.iter_batches(batch_size=1024, columns=[text_key]):
            column = batch.column(0)
            if skip >= len(column):
                skip -= len(column)
                continue
            values = column.to_pylist()[skip:]
            skip = 0
            for v in values:
                if v is not None and not isinstance(v, str):
                    raise ValueError(
                        f"input {source.name!r}: column {text_key!r} holds {type(v).__name__}, "
                        "not text; choose the text column with --text-key"
                    )
                yield v

    for task in _iter_row_tasks(source, pos, block_size, texts()):
        # Progress in bytes on disk, in proportion to the rows read.
        task.progress_bytes = (source.size or 0) * len(task.payload) // total_rows
        yield task


def _builtin_texts(name: str, skip: int) -> Iterator[str]:
    import pydoc_data.topics

    topics = pydoc_data.topics.topics
    for key in sorted(topics)[skip:]:
        yield topics[key]


def _check_hub_reachable(name: str) -> None:
    """Fail at once, not after `datasets`' minutes of retries, when the hub cannot be reached."""
    import socket
    from urllib.parse import urlparse

    offline = os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1"
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    reason = "HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set" if offline else None
    if reason is None:
        try:
            socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=10).close()
        except OSError as e:
            reason = f"{endpoint.hostname} cannot be reached ({e.strerror or e})"
    if reason:
        raise ValueError(
            f"hub dataset {name!r} is streamed from the Hugging Face hub, but {reason}; connect to "
            "the network, or download the data and pass its files (jsonl, parquet) instead"
        )


def _hf_texts(source: Source, text_key: str, skip: int) -> Iterator:
    try:
        import datasets

        ds = datasets.load_dataset(source.name, source.hf_config, split=source.hf_split, streaming=True)
    except ImportError as e:
        raise ValueError("hub datasets need the `datasets` package: pip install 'cerebras-gpt[data]'") from e
    except Exception as e:  # network, auth and "no such dataset" errors come in many types
        raise ValueError(
            f"cannot open hub dataset {source.name!r} (config {source.hf_config}, split {source.hf_split!r}): "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}. Streaming needs a network connection "
            "and the right name (hf:NAME[:CONFIG[:SPLIT]]); offline, pass downloaded files instead"
        ) from e
    if skip:
        ds = ds.skip(skip)
    try:
        first = True
        for record in ds:
            if first and text_key not in record:
                raise ValueError(
                    f"hub dataset {source.name!r} has no field {text_key!r} (fields: {sorted(record)}); "
                    "choose the text field with --text-key"
                )
            first = False
            yield record.get(text_key)
    except ValueError:
        raise
    except Exception as e:
        raise ValueError(f"reading hub dataset {source.name!r} failed: {type(e).__name__}: {e}") from e
