"""Configuration I/O: YAML files and command-line flags into the dataclasses the library takes.

``load_yaml`` reads a mapping safely; ``from_mapping`` builds a (nested) dataclass from it, naming unknown
keys and wrong types; ``parse_args`` parses flags with tyro over defaults from ``--config FILE.yaml`` and
``--set KEY=VALUE`` (the one override syntax of every subcommand; the sweep's ``--set`` is the same).
The commands use this module, and so may the library (a sweep reads its base YAML); it imports no command.
"""

from __future__ import annotations

import dataclasses
import logging
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
    flat_sections = _flat_sections(fields, hints)
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


def _flat_sections(fields: dict[str, Any], hints: dict[str, Any]) -> dict[str, set[str]]:
    """The nested sections whose flags carry no prefix, with their members' names."""
    return {
        name: {f.name for f in dataclasses.fields(_strip_annotated(hint))}
        for name, hint in hints.items()
        if name in fields
        and typing.get_origin(hint) is typing.Annotated
        and any("OmitArgPrefixes" in repr(meta) for meta in typing.get_args(hint)[1:])
        and dataclasses.is_dataclass(_strip_annotated(hint))
    }


def _has_flag(cls: type, name: str) -> bool:
    """Whether ``cls`` has a flag ``--name`` of its own (a field, or a member of a prefix-less section)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls, include_extras=True)
    return name in fields or any(name in members for members in _flat_sections(fields, hints).values())


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


# Spellings still accepted, with a note, until the release named here: (old flag, new flag).
REMOVED_IN = "0.3"
_log = logging.getLogger("cerebras_gpt")


def _deprecated(old: str, new: str) -> None:
    _log.warning(
        "note: %s is the old spelling of %s; it still works but will be removed in cerebras-gpt %s",
        old,
        new,
        REMOVED_IN,
    )


def _output_flag(cls: type) -> str | None:
    """The flag that names this command's output directory: ``--out`` (the field ``out``, or ``out_dir``
    renamed for the command line), or ``--out-dir`` for a dataclass that does not rename it."""
    spelling = _output_field(cls)
    if spelling is None:
        return None
    hint = typing.get_type_hints(cls, include_extras=True)[spelling[0]]
    renamed = (
        [m.name for m in typing.get_args(hint)[1:] if getattr(m, "name", None)]
        if typing.get_origin(hint) is typing.Annotated
        else []
    )
    return "--" + (renamed[0] if renamed else spelling[0]).replace("_", "-")


def _accept_either_output_flag(cls: type, argv: list[str]) -> list[str]:
    """Every subcommand names its output ``--out``; ``--out-dir`` (train/finetune/demo before 0.2) still works."""
    ours = _output_flag(cls)
    if ours is None:
        return argv
    other = "--out-dir" if ours == "--out" else "--out"
    fixed = [ours if arg == other else ours + arg[len(other) :] if arg.startswith(other + "=") else arg for arg in argv]
    if fixed != argv and other == "--out-dir":
        _deprecated("--out-dir", "--out")
    return fixed


def _take_settings(cls: type, argv: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Pull ``--set KEY=VALUE ...`` out of ``argv``: any option by its YAML name, dotted into a section or a
    mapping (``--set lr=3e-4 model_overrides.n_embd=64 sampling.temperature=0.7``). Values are YAML."""
    import yaml

    if _has_flag(cls, "set"):  # the command's own --set (the sweep's, for its trials)
        return argv, {}
    rest: list[str] = []
    settings: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        if argv[i] != "--set":
            rest.append(argv[i])
            i += 1
            continue
        i += 1
        if i >= len(argv) or argv[i].startswith("--"):
            raise ValueError("--set needs KEY=VALUE pairs, e.g. --set lr=3e-4 model_overrides.n_embd=64")
        while i < len(argv) and not argv[i].startswith("--"):
            key, eq, raw = argv[i].partition("=")
            if not eq or not key:
                raise ValueError(f"--set {argv[i]!r}: write KEY=VALUE, e.g. --set lr=3e-4")
            value = raw if _is_mapping_entry(cls, key) else yaml.safe_load(raw) if raw else ""
            _put_dotted(settings, key.replace("-", "_"), value)
            i += 1
    return rest, settings


def _is_mapping_entry(cls: type, key: str) -> bool:
    """Whether dotted ``key`` names an entry of a dict[str, str] option (its value stays a string)."""
    head = key.split(".", 1)[0].replace("-", "_")
    hints = typing.get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}
    return "." in key and typing.get_origin(_strip_annotated(hints.get(head))) is dict


def _put_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    for name in parents:
        node = tree.setdefault(name, {})
        if not isinstance(node, dict):
            raise ValueError(f"--set {key}: {name} is set to a value and used as a section")
        tree = node
    tree[leaf] = value


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` laid over it, section by section."""
    merged = dict(base)
    for key, value in extra.items():
        same = next((k for k in merged if k.replace("-", "_") == key), key)
        if isinstance(value, dict) and isinstance(merged.get(same), dict):
            merged[same] = _merge(merged[same], value)
        else:
            merged.pop(same, None)
            merged[key] = value
    return merged


def _warn_old_override_flag(argv: list[str]) -> None:
    """``--model-overrides K V ...`` (tyro's mapping syntax) is the old way to write ``--set model_overrides.K=V``."""
    if any(a == "--model-overrides" or a.startswith("--model-overrides=") for a in argv):
        _deprecated("--model-overrides K V", "--set model_overrides.K=V")


def parse_args(cls: type[T], argv: list[str], prog: str) -> T:
    """Parse ``argv`` into ``cls``: ``--config FILE.yaml`` gives defaults, ``--set KEY=VALUE`` overrides them,
    and flags override both."""
    import tyro

    argv = _accept_either_output_flag(cls, list(argv))
    _warn_old_override_flag(argv)
    argv, settings = _take_settings(cls, argv)
    data, where = {}, None
    for flag in ("--config", "-c"):
        if flag in argv:
            i = argv.index(flag)
            if i + 1 >= len(argv):
                raise ValueError(f"{flag} needs a YAML file path")
            where = argv[i + 1]
            del argv[i : i + 2]
        else:
            for i, arg in enumerate(argv):
                if arg.startswith(flag + "="):
                    where = arg.split("=", 1)[1]
                    del argv[i]
                    break
        if where is not None:
            data = load_yaml(where)
            break
    default = None
    if where is not None or settings:
        label = " + ".join(filter(None, [where, "--set" if settings else None]))
        default = from_mapping(cls, _merge(data, settings), label, partial=True)
    return tyro.cli(
        cls,
        args=argv,
        prog=prog,
        default=default,
        description=(cls.__doc__ or "") + "\n\nAll options can also come from --config FILE.yaml "
        "and --set KEY=VALUE (dotted for sections: --set model_overrides.n_embd=64).",
    )


__all__ = ["from_mapping", "load_yaml", "parse_args"]
