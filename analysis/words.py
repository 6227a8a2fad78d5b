"""Counts in words that agree in number: "1 trial", "2 trials", "all 3 trials", "the one trial"."""

from __future__ import annotations


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """'1 trial', '0 trials', '1,200 trials'."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


def every(n: int, noun: str, plural: str | None = None) -> str:
    """The whole of a count: 'all 3 trials', 'the one trial', 'no trials'."""
    if n == 0:
        return f"no {plural or noun + 's'}"
    return f"the one {noun}" if n == 1 else f"all {counted(n, noun, plural)}"
