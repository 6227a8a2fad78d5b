"""The one error a user can cause in a study file, and the two checks everything validating one uses."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

# One line, always: a message longer than this is cut in its middle (values in it are elided at the
# source, with `shown`; this is the backstop).
MAX_MESSAGE = 300


class ConfigError(ValueError):
    """A mistake in a study file or a --set override; the message is one line for the user."""

    def __init__(self, message: str) -> None:
        message = " ".join(str(message).split())  # one line, whatever a value in it held
        if len(message) > MAX_MESSAGE:
            message = f"{message[: MAX_MESSAGE - 80]} ... {message[-70:]}"
        super().__init__(message)


def check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def one_of(value: str, known: Any, where: str) -> None:
    check(value in known, f"{where}: unknown {value!r}; choose one of {', '.join(sorted(known))}")


# Every number a study file can hold has a range, declared on its field: `ranged(default, low, high)`.
# The checks read it (study.config.validate_ranges), and a test asserts that no numeric field lacks one,
# so a key added without a range is an error, not a gap.
RANGE = "range"
MAX_INT = 2**63 - 1  # what a Parquet int64 column holds
# Beyond these a value is a typo (1e23 epochs would train without end), said before any work starts.
MAX_EPOCHS = 100_000
MAX_BATCH = 2**31
MAX_IMAGES = 10**9  # any subset or sample count
MAX_SEED = 2**32 - 1  # numpy's and torch's seeds alike


@dataclass(frozen=True)
class Range:
    """The values a number may take: within [low, high], an end excluded where open, None for no bound;
    a float must also be finite."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def holds(self, value: float) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if isinstance(value, int) and abs(value) > MAX_INT:
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return not (self.high is not None and (value > self.high or (self.high_open and value == self.high)))

    def text(self) -> str:
        low, high = _number(self.low), _number(self.high)
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {low}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {high}"
        return "a finite number"


def ranged(
    default: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> Any:
    """A dataclass field whose number(s) must lie in the range (for lists and optional values: each one given)."""
    return field(default=default, metadata={RANGE: Range(low, high, low_open, high_open)})


def checked_elsewhere(default: Any, where: str) -> Any:
    """A numeric field whose range depends on other values (a searched key's distribution, a pair of swept
    values): `where` names the check that holds it, for readers and for the test that every number has one."""
    return field(default=default, metadata={RANGE: where})


def _number(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:,}" if isinstance(value, int) and abs(value) >= 10_000 else f"{value:g}"


def shown(value: Any, limit: int = 60) -> str:
    """A value as an error line quotes it: its repr, elided past `limit` characters (never dumped whole)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 20]}...{text[-12:]} ({len(text):,} characters)"
