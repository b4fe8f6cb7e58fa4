"""`cerebras-gpt prepare`: tokenize and pack corpora into token shards (or ModelZoo HDF5)."""

from __future__ import annotations

import dataclasses
import shlex

import tyro

from cerebras_gpt.commands import run_command
from cerebras_gpt.data.prepare import PrepareConfig


@dataclasses.dataclass
class PrepareArgs(PrepareConfig):
    """Tokenize corpora (the GPT-2 BPE by default), append EOS to each document, and pack them into token shards.

    Inputs: .txt/.md files (one document each, or paragraphs with --paragraphs), .jsonl, .jsonl.gz,
    .jsonl.zst, .parquet, directories and globs of them, hf:NAME[:CONFIG[:SPLIT]] for a Hugging Face
    dataset (streamed; needs a network), and builtin:pydoc (the Python documentation, no download).
    An interrupted run resumes when the same command is run again.
    """

    # The library's PrepareConfig itself, with the inputs as positional arguments (a tyro marker, which the
    # library does not import); every other option and its help text is PrepareConfig's.
    inputs: tyro.conf.Positional[list[str]]
    """Files, directories, globs, hf:NAME[:CONFIG[:SPLIT]] or builtin:pydoc."""


def run(args: PrepareArgs, argv: list[str]) -> int:
    from cerebras_gpt.data.prepare import prepare

    command = " ".join(["cerebras-gpt", "prepare", *(shlex.quote(a) for a in argv)])
    prepare(args, command=command)
    return 0


def main(argv: list[str]) -> int:
    return run_command(PrepareArgs, argv, "cerebras-gpt prepare", lambda args: run(args, argv))
