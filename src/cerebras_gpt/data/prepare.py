"""`prepare`: corpora in, packed token shards out; streaming, parallel, deterministic and resumable.

The main process reads the inputs in order and cuts them into tasks of about ``block_size`` bytes
(``cerebras_gpt.data.sources``); worker processes decode, parse and tokenize them (tiktoken's Rust BPE,
which runs without the GIL, so ``threads`` > 1 also helps inside one process); the main process takes the
results back *in task order*, drops exact duplicates, sends each document to train or validation by a hash
of its text, and appends it (with EOS) to that split's shards. At most ``2 * workers`` tasks are in flight,
so memory stays bounded whatever the corpus size.

Because the document order, the split and the duplicate test depend only on the documents, the shards are
byte-identical for any number of workers. Every half second the run commits its position (input, byte or
row offset), the shard sizes and its counters to ``OUT/.prepare/state.json``; an interrupted run started
again with the same command truncates the shards to the committed sizes and carries on from there, giving
the same bytes as a run that was never interrupted. ``meta.json`` is written last, so a directory with
``meta.json`` is always complete.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from cerebras_gpt import jsonl
from cerebras_gpt.data.shards import (
    FORMAT_VERSION,
    META_NAME,
    SPLITS,
    SplitWriter,
    dtype_for_vocab,
    read_meta,
    write_json_atomic,
)
from cerebras_gpt.data.sources import Source, Task, expand_inputs, iter_tasks, start_position

logger = logging.getLogger(__name__)

STATE_DIR = ".prepare"
LOCK_NAME = ".prepare.lock"
TOKENIZER_DIR = "tokenizer"  # the tokenizer files, for data not tokenized with GPT-2's BPE
_COMMIT_SECONDS = 0.5
# A paragraph ends at one or more blank (whitespace-only) lines.
_PARAGRAPH_BREAK = re.compile(r"\n(?:[ \t\r\f\v]*\n)+")
_SURROGATE = re.compile("[\ud800-\udfff]")
_STAT_KEYS = ("read", "empty", "duplicates", "bad_lines", "invalid_utf8", "bytes")


# ----- worker side --------------------------------------------------------------------------------------
@dataclass
class Encoded:
    """One task tokenized: ``tokens`` (every document followed by EOS, concatenated), ``lengths`` (tokens
    per document, EOS included), ``hashes`` (64-bit BLAKE2b of each document's UTF-8 text), ``stats``."""

    tokens: np.ndarray
    lengths: np.ndarray
    hashes: np.ndarray
    stats: dict = field(default_factory=dict)


_worker: dict = {}


def _init_worker(tokenizer, text_key: str, skip_bad: bool, threads: int) -> None:
    """Set up a tokenizing process; ``tokenizer`` is a Tokenizer, or a path for ``load_tokenizer``."""
    from cerebras_gpt.tokenizer import Tokenizer, load_tokenizer

    tok = tokenizer if isinstance(tokenizer, Tokenizer) else load_tokenizer(tokenizer)
    _worker.update(
        tokenizer=tok,
        dtype=dtype_for_vocab(tok.vocab_size),
        text_key=text_key,
        skip_bad=skip_bad,
        threads=threads,
        pool=ThreadPoolExecutor(threads) if threads > 1 else None,
    )


def _start_threads(threads: int) -> None:
    """In a forked worker: everything but the thread pool came with the fork."""
    _worker["pool"] = ThreadPoolExecutor(threads) if threads > 1 else None


def _decode(data: bytes, stats: dict) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="replace")
        # Count the replacement characters the decoder added, not the ones the text already had.
        stats["invalid_utf8"] += text.count("\ufffd") - data.count("\ufffd".encode())
        return text


def _jsonl_documents(text: str, task: Task, stats: dict) -> list:
    key, skip_bad, docs = _worker["text_key"], _worker["skip_bad"], []
    for i, line in enumerate(text.split("\n")):
        if not line.strip():
            continue
        where = f"{task.where}:{task.first + i}"
        try:
            record = jsonl.parse_line(line, where)
            value = record[key] if key in record else KeyError
            if value is not KeyError and value is not None and not isinstance(value, str):
                raise jsonl.JSONLError(where, f"field {key!r} holds a {type(value).__name__}, not text")
        except jsonl.JSONLError as e:
            if skip_bad:
                stats["bad_lines"] += 1
                continue
            raise ValueError(
                f"{where}: malformed JSONL line ({e.reason}); fix the line, or pass --skip-bad to "
                "skip and count bad lines"
            ) from None
        if value is KeyError:
            raise ValueError(
                f"{where}: no field {key!r} in this record (fields: {sorted(record)[:10]}); "
                "choose the text field with --text-key"
            )
        docs.append(value)
    return docs


def _documents(task: Task, stats: dict) -> list:
    if task.mode == "texts":
        return list(task.payload)
    text = _decode(task.payload, stats)
    if task.mode == "document":
        return [text]
    if task.mode == "paragraphs":
        # Paragraph mode: blank-only pieces are separators, not empty documents.
        return [p.strip() for p in _PARAGRAPH_BREAK.split(text) if p.strip()]
    return _jsonl_documents(text, task, stats)


def _encode_all(docs: list[str]) -> list[list[int]]:
    encode = _worker["tokenizer"].encode
    pool, threads = _worker["pool"], _worker["threads"]
    if pool is None or len(docs) < 2 * threads:
        return [encode(d) for d in docs]
    # Contiguous slices, one per thread: tiktoken releases the GIL while it runs the BPE.
    step = -(-len(docs) // threads)
    ids: list[list[int]] = []
    for part in pool.map(
        lambda chunk: [encode(d) for d in chunk], [docs[i : i + step] for i in range(0, len(docs), step)]
    ):
        ids += part
    return ids


def _utf8(doc: str, stats: dict) -> tuple[str, bytes]:
    """The document and its UTF-8 bytes; lone surrogates (from JSON "\\ud800" escapes) become U+FFFD."""
    try:
        return doc, doc.encode("utf-8")
    except UnicodeEncodeError:
        fixed, n = _SURROGATE.subn("\ufffd", doc)
        stats["invalid_utf8"] += n
        return fixed, fixed.encode("utf-8")


def encode_task(task: Task) -> Encoded:
    """Decode, parse and tokenize one task (in a worker process)."""
    stats = dict.fromkeys(_STAT_KEYS, 0)
    stats["bytes"] = task.nbytes
    docs, hashes = [], []
    for doc in _documents(task, stats):
        stats["read"] += 1
        if doc is None or not doc.strip():
            stats["empty"] += 1
            continue
        doc, data = _utf8(doc, stats)
        docs.append(doc)
        hashes.append(int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little"))
    ids = _encode_all(docs)
    eos, dtype = _worker["tokenizer"].eos_id, _worker["dtype"]
    lengths = np.fromiter((len(x) + 1 for x in ids), dtype=np.int64, count=len(ids))
    tokens = np.empty(int(lengths.sum()), dtype=dtype)
    pos = 0
    for x, n in zip(ids, lengths.tolist()):
        tokens[pos : pos + n - 1] = x
        tokens[pos + n - 1] = eos
        pos += n
    return Encoded(tokens, lengths, np.array(hashes, dtype=np.uint64), stats)


# ----- main process -------------------------------------------------------------------------------------
def _signature(sources: list[Source], tokenizer_identity: dict, dtype: str, options: dict) -> dict:
    """Everything the bytes of the output depend on: a resumed run must match it exactly."""
    return {"inputs": [s.describe() for s in sources], "tokenizer": tokenizer_identity, "dtype": dtype, **options}


def _prepare_out_dir(out: Path, signature: dict, overwrite: bool) -> dict | None:
    """Check ``out``; return the committed state of an interrupted run to resume, or None to start afresh."""
    state_path = out / STATE_DIR / "state.json"
    if overwrite and out.exists():
        for name in [META_NAME, STATE_DIR, TOKENIZER_DIR, *SPLITS]:
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        for path in out.glob("*.bin"):
            if path.name.split("_")[0] in SPLITS:
                path.unlink()
        return None
    if (out / META_NAME).exists():
        raise ValueError(
            f"{str(out)!r} already holds prepared data ({META_NAME}); pass --overwrite to replace "
            "it, or choose another --out"
        )
    if state_path.exists():
        state = json.loads(state_path.read_text())
        if state["signature"] != signature:
            changed = sorted(k for k in signature if signature[k] != state["signature"].get(k))
            raise ValueError(
                f"{str(out)!r} holds an interrupted prepare run with different inputs or options "
                f"({', '.join(changed)}); run the same command to resume it, or pass --overwrite to "
                "start again"
            )
        return state
    if out.exists() and any(out.glob("*.bin")):
        raise ValueError(
            f"{str(out)!r} holds .bin files but no {META_NAME} or {STATE_DIR}/ from a prepare run; "
            "choose an empty --out, or pass --overwrite to replace them"
        )
    return None


class _Run:
    """The main-process side of one prepare run: writers, duplicate filter, counters, commits."""

    def __init__(
        self,
        out: Path,
        signature: dict,
        state: dict | None,
        dtype: np.dtype,
        shard_tokens: int,
        val_fraction: float,
        dedup: bool,
    ) -> None:
        self.out, self.signature, self.dtype = out, signature, dtype
        self.dedup = dedup
        # A document goes to validation when its 64-bit hash falls below this threshold.
        self.val_threshold = np.uint64(min(int(val_fraction * 2.0**64), 2**64 - 1))
        (out / STATE_DIR).mkdir(parents=True, exist_ok=True)
        seen_path = out / STATE_DIR / "seen.u64"
        if state is None:
            self.position, self.stats, self.tasks = start_position(), dict.fromkeys(_STAT_KEYS, 0), 0
            self.progress = 0
            self.writers = {s: SplitWriter(out, s, dtype.name, shard_tokens) for s in SPLITS}
            for s in SPLITS:  # shards left by a run killed before its first commit
                for stale in out.glob(f"{s}_*.bin"):
                    stale.unlink()
            seen = np.empty(0, dtype=np.uint64)
            seen_path.write_bytes(b"")
        else:
            self.position, self.stats, self.tasks = state["position"], state["stats"], state["tasks"]
            self.progress = state["progress"]
            self.writers = {
                s: SplitWriter.from_state(out, s, dtype.name, shard_tokens, state["writers"][s]) for s in SPLITS
            }
            with open(seen_path, "r+b") as f:
                f.truncate(state["seen"] * 8)
            seen = np.fromfile(seen_path, dtype=np.uint64)
        self.seen = set(seen.tolist())
        self.seen_file = open(seen_path, "ab")
        self.last_commit = time.monotonic()
        if state is None:
            self.commit()

    def add(self, encoded: Encoded, next_position: dict) -> None:
        """Write one task's documents to their splits, in order."""
        for k in _STAT_KEYS:
            self.stats[k] += encoded.stats[k]
        keep = np.ones(len(encoded.hashes), dtype=bool)
        if self.dedup and len(encoded.hashes):
            kept = []
            for j, h in enumerate(encoded.hashes.tolist()):
                if h in self.seen:
                    keep[j] = False
                else:
                    self.seen.add(h)
                    kept.append(h)
            self.stats["duplicates"] += int((~keep).sum())
            np.asarray(kept, dtype=np.uint64).tofile(self.seen_file)
        is_val = encoded.hashes < self.val_threshold
        for split, mask in (("train", keep & ~is_val), ("val", keep & is_val)):
            if mask.all():
                self.writers[split].append(encoded.tokens, encoded.lengths)
            elif mask.any():
                self.writers[split].append(encoded.tokens[np.repeat(mask, encoded.lengths)], encoded.lengths[mask])
        self.position = next_position
        self.tasks += 1
        if time.monotonic() - self.last_commit >= _COMMIT_SECONDS:
            self.commit()

    def commit(self) -> None:
        for writer in self.writers.values():
            writer.flush()
        self.seen_file.flush()
        os.fsync(self.seen_file.fileno())
        write_json_atomic(
            self.out / STATE_DIR / "state.json",
            {
                "signature": self.signature,
                "position": self.position,
                "stats": self.stats,
                "tasks": self.tasks,
                "progress": self.progress,
                "writers": {s: w.state() for s, w in self.writers.items()},
                "seen": len(self.seen),
            },
        )
        self.last_commit = time.monotonic()

    def totals(self) -> tuple[int, int]:
        docs = sum(sh.documents for w in self.writers.values() for sh in w.shards)
        tokens = sum(sh.tokens for w in self.writers.values() for sh in w.shards)
        return docs, tokens


def _start_pool(workers: int, tok, tokenizer_path: str | None, text_key: str, skip_bad: bool, threads: int):
    """Set up tokenizing: a process pool for ``workers`` > 1, else this process (returns None)."""
    if workers == 1:
        _init_worker(tok, text_key, skip_bad, threads)
        return None
    import multiprocessing
    import threading

    # fork shares the loaded tokenizer and modules with the workers (a spawned one would import torch with
    # the package: seconds and hundreds of MB each; BENCHMARKS.md, "Figures from the code"). Forking a
    # process with other threads running can deadlock a child on a lock held at fork time, so a threaded
    # caller (e.g. a trainer) gets forkserver workers instead.
    # tqdm's monitor thread (left by any earlier progress bar, e.g. `datasets`') only takes tqdm's own lock,
    # which the workers never touch.
    from tqdm import TMonitor

    others = [t for t in threading.enumerate() if t is not threading.main_thread() and not isinstance(t, TMonitor)]
    if not others and "fork" in multiprocessing.get_all_start_methods():
        _init_worker(tok, text_key, skip_bad, 1)
        return multiprocessing.get_context("fork").Pool(workers, initializer=_start_threads, initargs=(threads,))
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])  # the server imports this module (and torch) once for all
    return context.Pool(workers, initializer=_init_worker, initargs=(tokenizer_path, text_key, skip_bad, threads))


def _results(tasks, pool, workers: int):
    """(task, Encoded) in task order; with a pool, at most ``2 * workers`` tasks in flight."""
    if pool is None:
        for task in tasks:
            yield task, encode_task(task)
        return
    pending: deque = deque()
    for task in tasks:
        pending.append((task, pool.apply_async(encode_task, (task,))))
        if len(pending) >= 2 * workers:
            t, r = pending.popleft()
            yield t, r.get()
    while pending:
        t, r = pending.popleft()
        yield t, r.get()


@dataclass
class PrepareConfig:
    """What `prepare` reads, how it tokenizes and splits it, and how it writes the shards.

    `cerebras-gpt prepare`'s options are these fields (its ``PrepareArgs`` subclasses this, adding only
    the command-line form of ``inputs``), so a field's docstring is also its ``--help``.
    """

    inputs: list[str]
    """Files, directories, globs, hf:NAME[:CONFIG[:SPLIT]] or builtin:pydoc (see `cerebras_gpt.data.sources`)."""
    out: str
    """Output directory (meta.json plus train_*.bin / val_*.bin shards, or HDF5 files)."""
    tokenizer: str | None = None
    """A tokenizer or model directory, or a built-in: gpt2 (the default BPE) or bytes (257 byte-level
    tokens, for tiny models such as the CPU scaling ladder and the μP transfer study)."""
    text_key: str = "text"
    """JSONL field, Parquet column or hub-dataset field that holds the text."""
    paragraphs: bool = False
    """Split text files into documents at blank lines (default: one document per file)."""
    val_fraction: float = 0.01
    """Share of documents for the validation split, chosen by a hash of each document's text."""
    dedup: bool = False
    """Drop documents whose exact text appeared before."""
    workers: int = 0
    """Tokenizing processes (0: one per CPU core; small inputs use fewer)."""
    threads: int = 1
    """Tokenizing threads per process (tiktoken releases the GIL)."""
    seq_len: int = 2048
    """Sequence length the data is prepared for (recorded in meta.json; the HDF5 example length)."""
    format: Literal["bin", "hdf5"] = "bin"
    """bin: flat uint16/uint32 token shards; hdf5: the Cerebras ModelZoo layout (n, 3, seq_len)."""
    shard_tokens: int = 100_000_000
    """Close a shard once it holds at least this many tokens."""
    examples_per_file: int = 50_000
    """HDF5 examples per file (ModelZoo's files_per_record)."""
    block_size: int = 1 << 20
    """Bytes of input per unit of work handed to a worker."""
    skip_bad: bool = False
    """Skip and count malformed JSONL lines instead of stopping at the first one."""
    overwrite: bool = False
    """Replace prepared data already in --out."""
    progress: bool = True
    """Show a progress bar (documents, tokens, MB/s, ETA)."""

    def check(self) -> None:
        """Raise one ValueError naming every out-of-range option."""
        problems = []
        if not 0 <= self.val_fraction < 1:
            problems.append(f"val_fraction={self.val_fraction} must be in [0, 1)")
        if self.format not in ("bin", "hdf5"):
            problems.append(f"format={self.format!r} must be 'bin' or 'hdf5'")
        for name, low in (
            ("seq_len", 1),
            ("shard_tokens", 1),
            ("threads", 1),
            ("block_size", 1024),
            ("examples_per_file", 1),
        ):
            if getattr(self, name) < low:
                problems.append(f"{name}={getattr(self, name)} must be at least {low}")
        if self.workers is not None and self.workers < 0:
            problems.append(f"workers={self.workers} must be at least 1 (0: one per CPU core)")
        if problems:
            raise ValueError("; ".join(problems))


def _as_config(
    config: PrepareConfig | list[str] | str | Path | None, out_dir: str | Path | None, options: dict[str, Any]
) -> PrepareConfig:
    """`prepare`'s arguments as one `PrepareConfig`: given whole (keywords override its fields), or built
    the way ``prepare`` was called before it took one (inputs, out_dir, the fields as keywords)."""
    if isinstance(config, PrepareConfig):
        if out_dir is not None:
            options["out"] = out_dir
        return dataclasses.replace(config, **options) if options else config
    inputs = config if config is not None else options.pop("inputs", None)
    out = out_dir if out_dir is not None else options.pop("out_dir", options.pop("out", None))
    if inputs is None or out is None:
        raise TypeError(
            "prepare() needs the inputs and the output directory: prepare(PrepareConfig(inputs, out)) "
            "or prepare(inputs, out_dir, **options)"
        )
    unknown = sorted(set(options) - {f.name for f in dataclasses.fields(PrepareConfig)})
    if unknown:
        raise TypeError(f"prepare() got unknown options {unknown}; see PrepareConfig for the fields")
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    return PrepareConfig(inputs=[str(i) for i in inputs], out=str(out), **options)


def prepare(
    config: PrepareConfig | list[str] | str | Path | None = None,
    out_dir: str | Path | None = None,
    /,
    *,
    command: str | None = None,
    **options: Any,
) -> dict:
    """Tokenize and pack the inputs into the output directory; returns the meta (also written to ``meta.json``).

    Running again on a complete directory with the same inputs and options returns its meta; on an
    interrupted one it resumes.

    Args:
        config: a `PrepareConfig` (its fields are the options, documented there); or, as before there was
            one, the inputs, with the output directory next and the fields as keywords:
            ``prepare(["a.txt"], "out", val_fraction=0.1, workers=1)``.
        out_dir: the output directory, when ``config`` is the inputs (overrides ``config.out`` otherwise).
        command: the command line to record (defaults to this process's).
        **options: `PrepareConfig` fields; with a config, they override its values.
    """
    from cerebras_gpt import __version__
    from cerebras_gpt.tokenizer import load_tokenizer

    config = _as_config(config, out_dir, options)
    config.check()
    workers = config.workers or os.cpu_count() or 1
    sources = expand_inputs([str(i) for i in config.inputs])
    tok = load_tokenizer(config.tokenizer)
    dtype = dtype_for_vocab(tok.vocab_size)
    # The options that shape the output: recorded in meta.json and part of the resume signature.
    recorded = {
        "text_key": config.text_key,
        "val_fraction": config.val_fraction,
        "dedup": config.dedup,
        "paragraphs": config.paragraphs,
        "seq_len": config.seq_len,
        "format": config.format,
        "shard_tokens": config.shard_tokens,
        "examples_per_file": config.examples_per_file,
    }
    signature = _signature(sources, tok.identity(), dtype.name, recorded)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    block_size = config.block_size

    def locked() -> dict:
        n_workers = workers
        if (out / META_NAME).exists() and not config.overwrite:
            meta = read_meta(out)
            if meta.get("signature") == signature:
                logger.info("%s already holds this prepared data; nothing to do (pass overwrite to redo it)", out)
                return meta
        state = _prepare_out_dir(out, signature, config.overwrite)
        if state:
            logger.info("resuming an interrupted run in %s after %d tasks", out, state["tasks"])
        run = _Run(out, signature, state, dtype, config.shard_tokens, config.val_fraction, config.dedup)

        total = None if any(s.size is None for s in sources) else sum(s.size for s in sources)
        if total is not None:  # starting a process costs about a second: small inputs use fewer
            n_workers = max(1, min(n_workers, total // (4 * block_size)))
        # before tqdm starts its thread
        pool = _start_pool(n_workers, tok, config.tokenizer, config.text_key, config.skip_bad, config.threads)

        from tqdm.auto import tqdm

        class Bar(tqdm):
            monitor_interval = 0  # no monitor thread: a later prepare in this process can still fork workers

        bar = Bar(
            total=total,
            initial=run.progress,
            unit="B",
            unit_scale=True,
            unit_divisor=1000,
            desc="prepare",
            disable=not config.progress,
            dynamic_ncols=True,
            smoothing=0.05,
        )
        tasks = iter_tasks(
            sources, run.position, block_size=block_size, text_key=config.text_key, paragraphs=config.paragraphs
        )
        try:
            for task, encoded in _results(tasks, pool, n_workers):
                run.progress += task.progress_bytes
                run.add(encoded, task.position)
                bar.update(task.progress_bytes)
                docs, tokens = run.totals()
                bar.set_postfix(docs=f"{docs:,}", tokens=f"{tokens:,}", refresh=False)
        except ValueError:
            run.commit()  # everything before the failing task is written: keep it resumable
            raise
        finally:
            bar.close()
            if pool is not None:
                pool.terminate()
        run.commit()
        return _finish(run, sources, tok, dtype, recorded, signature, command, __version__, config.examples_per_file)

    from filelock import FileLock

    # One run per directory: another process preparing it (e.g. every torchrun rank) waits, then finds it done.
    with FileLock(out / LOCK_NAME):
        return locked()


def _finish(
    run: _Run,
    sources: list[Source],
    tok,
    dtype: np.dtype,
    options: dict,
    signature: dict,
    command: str | None,
    version: str,
    examples_per_file: int,
) -> dict:
    out, stats = run.out, run.stats
    splits = {}
    for name, writer in run.writers.items():
        shards = writer.finish()
        splits[name] = {
            "documents": sum(s.documents for s in shards),
            "tokens": sum(s.tokens for s in shards),
            "shards": [vars(s) for s in shards],
        }
    run.seen_file.close()
    if splits["train"]["documents"] == 0:
        if stats["read"] - stats["empty"] == 0:
            raise ValueError(
                f"no documents in the inputs ({stats['read']} read, {stats['empty']} empty, "
                f"{stats['bad_lines']} bad lines skipped): check the inputs and --text-key"
            )
        raise ValueError(
            f"all {splits['val']['documents']} documents went to the validation split; lower "
            f"--val-fraction ({options['val_fraction']})"
        )
    meta = {
        "format_version": FORMAT_VERSION,
        "format": "bin",
        "version": version,
        "command": command if command is not None else " ".join(["cerebras-gpt prepare"] + sys.argv[1:]),
        "tokenizer": tok.identity(),
        "dtype": dtype.name,
        "eos_id": tok.eos_id,
        "seq_len": options["seq_len"],
        "inputs": [s.describe() for s in sources],
        "options": options,
        "documents": sum(s["documents"] for s in splits.values()),
        "tokens": sum(s["tokens"] for s in splits.values()),
        "splits": splits,
        "stats": stats,
        "signature": signature,
    }
    if options["format"] == "hdf5":
        from cerebras_gpt.data.hdf5 import write_hdf5

        meta = write_hdf5(out, meta, options["seq_len"], examples_per_file)
    if not tok.is_gpt2:  # the data carries its tokenizer: a model trained on it is saved with it
        tok.save_pretrained(out / TOKENIZER_DIR)
    write_json_atomic(out / META_NAME, meta)
    shutil.rmtree(out / STATE_DIR)
    _report(meta)
    return meta


def prepared_tokenizer(data_dir: str | Path):
    """The tokenizer ``data_dir`` was prepared with, or None for GPT-2's (which prepared data does not copy)."""
    from cerebras_gpt.tokenizer import load_tokenizer

    directory = Path(data_dir) / TOKENIZER_DIR
    return load_tokenizer(directory) if directory.is_dir() else None


def _report(meta: dict) -> None:
    s, splits = meta["stats"], meta["splits"]
    logger.info(
        "prepared %s documents, %s tokens (train %s, val %s) from %.1f MB",
        f"{meta['documents']:,}",
        f"{meta['tokens']:,}",
        f"{splits['train']['tokens']:,}",
        f"{splits['val']['tokens']:,}",
        s["bytes"] / 1e6,
    )
    for key, what in (
        ("empty", "empty documents skipped"),
        ("duplicates", "duplicate documents removed"),
        ("bad_lines", "malformed JSONL lines skipped (--skip-bad)"),
    ):
        if s[key]:
            logger.info("%s %s", f"{s[key]:,}", what)
    if s["invalid_utf8"]:
        logger.warning("%s invalid UTF-8 sequences were replaced with U+FFFD", f"{s['invalid_utf8']:,}")
