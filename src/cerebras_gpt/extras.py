"""Optional features and the pip extras that install them.

The core install (model, tokenizer, generation, prepare of plain text, the CLI) needs none of these.
A feature whose packages are missing stops with one line naming the extra to install, instead of a
``ModuleNotFoundError`` traceback::

    require_extra("serve", "fastapi", "uvicorn")   # at the import site, before importing them

(or `missing_extra` around imports at the top of a module that only that feature imports).

Nice-to-haves (TensorBoard event files, loss plots) use `have_extra` instead: a warning, and the run
carries on without them.
"""

from __future__ import annotations

import importlib.util
import logging

log = logging.getLogger("cerebras_gpt")


class MissingExtraError(ImportError):
    """An optional package is not installed; the message names the `pip install` that adds it."""


def _missing(modules: tuple[str, ...]) -> list[str]:
    missing = []
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a parent package missing, or a module without a spec
            found = False
        if not found:
            missing.append(module)
    return missing


def install_hint(extra: str) -> str:
    return f"pip install 'cerebras-gpt[{extra}]'"


def require_extra(extra: str, *modules: str, feature: str | None = None) -> None:
    """Raise `MissingExtraError` (one line: what is missing, the pip command) unless ``modules`` import."""
    missing = _missing(modules)
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise MissingExtraError(
            f"{feature or extra}: {', '.join(missing)} {verb} not installed; {install_hint(extra)}", name=missing[0]
        )


def missing_extra(extra: str, error: ModuleNotFoundError, feature: str | None = None) -> MissingExtraError:
    """The one-line error for a failed top-of-module import of an optional package::

    try:
        from fastapi import FastAPI
    except ModuleNotFoundError as e:
        raise missing_extra("serve", e) from None
    """
    return MissingExtraError(
        f"{feature or extra}: {error.name} is not installed; {install_hint(extra)}", name=error.name
    )


def have_extra(extra: str, *modules: str, skipped: str) -> bool:
    """True when ``modules`` import; otherwise log one warning saying what is ``skipped`` and the fix."""
    missing = _missing(modules)
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        log.warning(
            "warning: %s skipped: %s %s not installed; %s", skipped, ", ".join(missing), verb, install_hint(extra)
        )
    return not missing
