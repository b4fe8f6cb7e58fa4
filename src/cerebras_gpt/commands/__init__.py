"""Subcommands of `cerebras-gpt`, one module each, plus what they share: argument parsing and errors.

Every subcommand describes its options as a dataclass whose attribute docstrings become `--help`,
parsed by tyro. ``--config FILE.yaml`` fills the same fields from YAML (nested sections for nested
dataclasses); flags given on the command line override the file.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import TypeVar

from cerebras_gpt.config_io import from_mapping, load_yaml, parse_args  # noqa: F401  (re-exported)

T = TypeVar("T")


def run_command(cls: type[T], argv: list[str], prog: str, body: Callable[[T], int | None]) -> int:
    """Parse, set up logging, run: the CLI's one error boundary.

    An expected failure (bad value, missing/corrupt/unwritable file, no network, no GPU: see
    `errors.describe`) becomes one line and exit code 2; ``--debug`` (or CEREBRAS_GPT_DEBUG=1) shows
    its traceback instead. Anything else is a bug and keeps its traceback.
    """
    from cerebras_gpt import errors

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    argv = list(argv)
    debug = errors.debug_enabled()
    if "--debug" in argv:
        argv.remove("--debug")
        debug = True
    try:
        args = parse_args(cls, argv, prog)
        return body(args) or 0
    except Exception as e:
        message = errors.describe(e)
        if message is None or debug:
            raise
        print(f"{prog}: error: {message} (--debug shows the traceback)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
