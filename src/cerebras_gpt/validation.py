"""Checks of numeric options shared by every command and API: finite, in range, with the fix named.

Each function returns the value when it is fine and raises a one-line `ValueError` naming the option,
the value and the accepted range otherwise; ``collect`` variants append the message to a problem list
instead, so a caller can report every bad option at once (the house rule: collect, then raise once).
"""

from __future__ import annotations

import math
from numbers import Real


def _is_number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def finite_range_problem(
    name: str, value, lo: float | None = None, hi: float | None = None, lo_open: bool = False, hi_open: bool = False
) -> str | None:
    """The problem with ``value`` as option ``name`` (None when it is a finite number in the range).

    ``lo``/``hi`` bound the range (None: unbounded on that side); ``lo_open``/``hi_open`` exclude the bound.
    """
    left = "(" if lo_open or lo is None else "["
    right = ")" if hi_open or hi is None else "]"
    bounds = f"{left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"
    if not _is_number(value):
        return f"{name}={value!r} must be a number in {bounds}"
    if not math.isfinite(value):
        return f"{name}={value!r} must be a finite number in {bounds}"
    if (lo is not None and (value <= lo if lo_open else value < lo)) or (
        hi is not None and (value >= hi if hi_open else value > hi)
    ):
        return f"{name}={value!r} must be in {bounds}"
    return None


def require_finite_range(
    name: str, value, lo: float | None = None, hi: float | None = None, lo_open: bool = False, hi_open: bool = False
):
    """``value`` if it is a finite number in the range, else a `ValueError` naming ``name`` and the range."""
    problem = finite_range_problem(name, value, lo, hi, lo_open, hi_open)
    if problem:
        raise ValueError(problem)
    return value


def int_range_problem(name: str, value, lo: int | None = None, hi: int | None = None) -> str | None:
    """The problem with ``value`` as integer option ``name`` in [lo, hi] (None when it is fine)."""
    bounds = f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
    if not isinstance(value, int) or isinstance(value, bool):
        return f"{name}={value!r} must be an integer in {bounds}"
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        return f"{name}={value!r} must be an integer in {bounds}"
    return None


def require_int_range(name: str, value, lo: int | None = None, hi: int | None = None) -> int:
    """``value`` if it is an integer in [lo, hi], else a `ValueError` naming ``name`` and the range."""
    problem = int_range_problem(name, value, lo, hi)
    if problem:
        raise ValueError(problem)
    return value
