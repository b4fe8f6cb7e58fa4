"""`cerebras-gpt prepare`: tokenize and pack corpora into token shards (or ModelZoo HDF5)."""

from __future__ import annotations

import dataclasses
import shlex
from typing import Literal

import tyro

from cerebras_gpt.commands import run_command


@dataclasses.dataclass
class PrepareArgs:
    """Tokenize corpora (the GPT-2 BPE by default), append EOS to each document, and pack them into token shards.

    Inputs: .txt/.md files (one document each, or paragraphs with --paragraphs), .jsonl, .jsonl.gz,
    .jsonl.zst, .parquet, directories and globs of them, hf:NAME[:CONFIG[:SPLIT]] for a Hugging Face
    dataset (streamed; needs a network), and builtin:pydoc (the Python documentation, no download).
    An interrupted run resumes when the same command is run again.
    """

    inputs: tyro.conf.Positional[list[str]]
    """Files, directories, globs, hf:NAME[:CONFIG[:SPLIT]] or builtin:pydoc."""
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


def run(args: PrepareArgs, argv: list[str]) -> int:
    from cerebras_gpt.data.prepare import prepare

    fields = dataclasses.asdict(args)
    inputs, out = fields.pop("inputs"), fields.pop("out")
    fields["workers"] = fields["workers"] or None
    command = " ".join(["cerebras-gpt", "prepare", *(shlex.quote(a) for a in argv)])
    prepare(inputs, out, command=command, **fields)
    return 0


def main(argv: list[str]) -> int:
    return run_command(PrepareArgs, argv, "cerebras-gpt prepare", lambda args: run(args, argv))
