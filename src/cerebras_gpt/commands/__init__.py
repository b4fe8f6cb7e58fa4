"""Subcommands of `cerebras-gpt`, one module each, plus what they share: argument parsing and errors.

Every subcommand describes its options as a dataclass whose attribute docstrings become `--help`,
parsed by tyro. ``--config FILE.yaml`` fills the same fields from YAML (nested sections for nested
dataclasses); flags given on the command line override the file.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import typing
from pathlib import Path
from typing import Any, Callable, TypeVar

T = TypeVar("T")


def load_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--config {str(path)!r}: no such file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"--config {str(path)!r} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"--config {str(path)!r} must hold a mapping of option names to values")
    return data


def from_mapping(cls: type[T], data: dict[str, Any], where: str, partial: bool = False) -> T:
    """Build dataclass ``cls`` from a (nested) mapping; unknown keys are an error naming ``where``.

    With ``partial``, required fields the mapping lacks are left for the command line (tyro.MISSING).
    """
    import tyro

    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(k.replace("-", "_") for k in data) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown option(s) {unknown}; valid options are {sorted(fields)}")
    hints = typing.get_type_hints(cls, include_extras=True)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        key = key.replace("-", "_")
        hint = _strip_annotated(hints[key])
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = from_mapping(hint, value, f"{where} [{key}]", partial)
        kwargs[key] = value
    if partial:
        for name, f in fields.items():
            if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                kwargs[name] = tyro.MISSING
    return cls(**kwargs)


def _strip_annotated(hint: Any) -> Any:
    return typing.get_args(hint)[0] if typing.get_origin(hint) is typing.Annotated else hint


def parse_args(cls: type[T], argv: list[str], prog: str) -> T:
    """Parse ``argv`` into ``cls``; ``--config FILE`` supplies defaults that flags override."""
    import tyro

    argv = list(argv)
    default = None
    for flag in ("--config", "-c"):
        if flag in argv:
            i = argv.index(flag)
            if i + 1 >= len(argv):
                raise ValueError(f"{flag} needs a YAML file path")
            default = from_mapping(cls, load_yaml(argv[i + 1]), argv[i + 1], partial=True)
            del argv[i : i + 2]
        else:
            for i, arg in enumerate(argv):
                if arg.startswith(flag + "="):
                    default = from_mapping(cls, load_yaml(arg.split("=", 1)[1]), arg.split("=", 1)[1], partial=True)
                    del argv[i]
                    break
    return tyro.cli(cls, args=argv, prog=prog, default=default,
                    description=(cls.__doc__ or "") + "\n\nAll options can also come from --config FILE.yaml.")


def run_command(cls: type[T], argv: list[str], prog: str, body: Callable[[T], int | None]) -> int:
    """Parse, set up logging, run; a ValueError/FileNotFoundError (or a missing optional extra) becomes a
    one-line error, exit 2."""
    from cerebras_gpt.extras import MissingExtraError

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        args = parse_args(cls, argv, prog)
        return body(args) or 0
    except (ValueError, FileNotFoundError, MissingExtraError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
