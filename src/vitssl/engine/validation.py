"""Checks every config dataclass runs on its own values when it is built.

A bad value must stop a run before anything is written or a data set is scanned, with one line
that names the full key, the value and what is allowed (`train.batch_size=0 is out of range:
use an integer >= 1`). No torch here: the command line imports it before any heavy module.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any


class ConfigError(ValueError):
    """A config problem, reported in one line."""


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _bounds(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return f" in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    if lo is not None:
        return f" {'>' if lo_open else '>='} {lo:g}"
    if hi is not None:
        return f" {'<' if hi_open else '<='} {hi:g}"
    return ""


def _inside(value: float, lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> bool:
    above = lo is None or (value > lo if lo_open else value >= lo)
    below = hi is None or (value < hi if hi_open else value <= hi)
    return above and below


def fail(key: str, value: Any, problem: str, allowed: str) -> None:
    """Raise the one-line error: `KEY=VALUE PROBLEM: ALLOWED`."""
    raise ConfigError(f"{key}={_show(value)} {problem}: {allowed}")


def require_int(key: str, value: Any, lo: int | None = None, hi: int | None = None,
                optional: bool = False) -> None:
    """An integer (bools are not) within [lo, hi]; `optional` also allows None."""
    if value is None and optional:
        return
    allowed = f"use an integer{_bounds(lo, hi, False, False)}" + (" or null" if optional else "")
    if isinstance(value, bool) or not isinstance(value, int):
        fail(key, value, "is not an integer", allowed)
    if not _inside(value, lo, hi, False, False):
        fail(key, value, "is out of range", allowed)


def require_number(key: str, value: Any, lo: float | None = None, hi: float | None = None,
                   lo_open: bool = False, hi_open: bool = False) -> None:
    """A finite int or float within the bounds (open where asked)."""
    allowed = f"use a finite number{_bounds(lo, hi, lo_open, hi_open)}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        fail(key, value, "is not a number", allowed)
    if not math.isfinite(value):
        fail(key, value, "is not finite", allowed)
    if not _inside(value, lo, hi, lo_open, hi_open):
        fail(key, value, "is out of range", allowed)


def require_probability(key: str, value: Any) -> None:
    require_number(key, value, 0.0, 1.0)


def require_numbers(key: str, values: Any, length: int | None = None, lo: float | None = None,
                    hi: float | None = None, lo_open: bool = False, hi_open: bool = False) -> None:
    """A list of finite numbers, each within the bounds; `length` fixes how many."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        fail(key, values, "is not a list", f"use a list of {length or 'some'} numbers")
    if length is not None and len(values) != length:
        fail(key, list(values), f"has {len(values)} values", f"use exactly {length}")
    for i, v in enumerate(values):
        require_number(f"{key}[{i}]", v, lo, hi, lo_open, hi_open)


def require_range_pair(key: str, values: Any, lo: float, hi: float, lo_open: bool = True) -> None:
    """[min, max] with lo < min <= max <= hi (lo <= min without `lo_open`)."""
    require_numbers(key, values, 2, lo, hi, lo_open)
    if values[0] > values[1]:
        fail(key, list(values), "has min > max", "use [min, max] with min <= max")


def require_choice(key: str, value: Any, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        quoted = [repr(c) for c in choices]
        listed = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
        fail(key, value, "is not a choice", f"use {'one of ' if len(quoted) > 2 else ''}{listed}")


def require_multiple(key: str, value: int, of: int, what: str) -> None:
    """`value` divisible by `of` (what `of` is, e.g. "the patch size 16 (backbone.patch_size)")."""
    if value % of:
        fail(key, value, f"is not a multiple of {what}", f"use a multiple of {of}")
