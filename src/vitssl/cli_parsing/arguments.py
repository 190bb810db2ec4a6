"""Option types and the parser class of the `vitssl` command line (no torch: `--help` stays fast).

A bad option value is refused by argparse itself, before any model or data is touched, in one
line: `vitssl eval knn: error: argument --batch-size: 0 is out of range: use an integer >= 1`.
"""

from __future__ import annotations

import argparse
import math
from typing import Callable


class OneLineParser(argparse.ArgumentParser):
    """argparse's parser whose errors are one line (no usage block), pointing at --help."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _int_at_least(lo: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not an integer: use an integer >= {lo}") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"{value} is out of range: use an integer >= {lo}")
        return value

    parse.__name__ = f"int>={lo}"
    return parse


positive_int = _int_at_least(1)
non_negative_int = _int_at_least(0)


def _finite(text: str, allowed: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number: use {allowed}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text} is not finite: use {allowed}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (learning rates, temperatures)."""
    value = _finite(text, "a finite number > 0")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is out of range: use a finite number > 0")
    return value


def fraction(text: str) -> float:
    """A share in (0, 1]."""
    value = _finite(text, "a number in (0, 1]")
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is out of range: use a number in (0, 1]")
    return value


def subcommands_of(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    """The sub-command table of `parser` (e.g. `eval`'s protocols), for modules that add to it."""
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
