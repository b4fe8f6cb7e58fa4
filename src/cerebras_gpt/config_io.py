"""Configuration I/O: YAML files and command-line flags into the dataclasses the library takes.

``load_yaml`` reads a mapping safely; ``from_mapping`` builds a (nested) dataclass from it, naming unknown
keys and wrong types; ``parse_args`` parses flags with tyro over defaults from ``--config FILE.yaml``.
The commands use this module, and so may the library (a sweep reads its base YAML); it imports no command.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

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
    spelling = _output_field(cls)
    if spelling is not None and spelling[1] in {k.replace("-", "_") for k in data}:  # out_dir: for out, or back
        data = {(spelling[0] if k.replace("-", "_") == spelling[1] else k): v for k, v in data.items()}
    hints = typing.get_type_hints(cls, include_extras=True)
    data = _nest_flat_keys(data, fields, hints)
    unknown = sorted(set(k.replace("-", "_") for k in data) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown option(s) {unknown}; valid options are {sorted(fields)}")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        key = key.replace("-", "_")
        hint = _strip_annotated(hints[key])
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = from_mapping(hint, value, f"{where} [{key}]", partial)
        else:
            value = _coerce_yaml_value(value, hint, f"{where}: {key}")
        kwargs[key] = value
    if partial:
        for name, f in fields.items():
            if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                kwargs[name] = tyro.MISSING
    return cls(**kwargs)


def _nest_flat_keys(data: dict[str, Any], fields: dict[str, Any], hints: dict[str, Any]) -> dict[str, Any]:
    """YAML keys equal to the flag names: a section whose flags carry no prefix (``--temperature``, not
    ``--sampling.temperature``) may be written flat at the top level too; it is moved into its section."""
    flat_sections = {name: {f.name for f in dataclasses.fields(_strip_annotated(hint))}
                     for name, hint in hints.items()
                     if name in fields and typing.get_origin(hint) is typing.Annotated
                     and any("OmitArgPrefixes" in repr(meta) for meta in typing.get_args(hint)[1:])
                     and dataclasses.is_dataclass(_strip_annotated(hint))}
    if not flat_sections:
        return data
    data = dict(data)
    for key in list(data):
        name = key.replace("-", "_")
        if name in fields:
            continue
        for section, members in flat_sections.items():
            if name in members:
                nested = data.get(section) or {}
                if not isinstance(nested, dict):
                    break
                data[section] = {**nested, name: data.pop(key)}
                break
    return data


def _coerce_yaml_value(value: Any, hint: Any, where: str) -> Any:
    """``value`` as the field's scalar type: YAML 1.1 (PyYAML) reads ``1e-3`` as a string, so a number
    written that way becomes a float; any other value of the wrong type is an error naming the key."""
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if value is None and type(None) in args:
            return None
    else:
        options = [hint]
    if not options or not all(o in (int, float, bool, str) for o in options):
        return value  # containers, literals, paths, nested types: tyro and the dataclass check them
    if type(value) in options or (float in options and type(value) is int):
        return value
    if str in options and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # `revision: 1234`, `name: 7`
    if float in options and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    names = " or ".join(o.__name__ for o in options) + (" or null" if type(None) in args else "")
    raise ValueError(f"{where} is {value!r} ({type(value).__name__}); it must be {names}")


def _strip_annotated(hint: Any) -> Any:
    return typing.get_args(hint)[0] if typing.get_origin(hint) is typing.Annotated else hint


def _output_field(cls: type) -> tuple[str, str] | None:
    """(this command's output field, the other spelling) when ``cls`` names its output one of two ways."""
    if not dataclasses.is_dataclass(cls):
        return None
    names = {f.name for f in dataclasses.fields(cls)}
    if "out" in names and "out_dir" not in names:
        return "out", "out_dir"
    if "out_dir" in names and "out" not in names:
        return "out_dir", "out"
    return None


def _accept_either_output_flag(cls: type, argv: list[str]) -> list[str]:
    """Every subcommand takes its output as ``--out`` or ``--out-dir``, whichever it names in --help
    (prepare, export, sweep, scaling, mup-check say --out; train, finetune, demo say --out-dir)."""
    spelling = _output_field(cls)
    if spelling is None:
        return argv
    ours, other = ("--" + name.replace("_", "-") for name in spelling)
    return [ours if arg == other else ours + arg[len(other):] if arg.startswith(other + "=") else arg
            for arg in argv]


def parse_args(cls: type[T], argv: list[str], prog: str) -> T:
    """Parse ``argv`` into ``cls``; ``--config FILE`` supplies defaults that flags override."""
    import tyro

    argv = _accept_either_output_flag(cls, list(argv))
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


__all__ = ["from_mapping", "load_yaml", "parse_args"]
