"""Counts in messages read as English: `1 step`, `2 steps`, never `1 steps`. No torch."""

from __future__ import annotations


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """`n` and the noun, plural unless n is 1 (`plural` for irregular ones: class -> classes)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
