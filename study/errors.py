"""The one error a user can cause in a study file, and the two checks everything validating one uses."""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A mistake in a study file or a --set override; the message is one line for the user."""


def check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def one_of(value: str, known: Any, where: str) -> None:
    check(value in known, f"{where}: unknown {value!r}; choose one of {', '.join(sorted(known))}")
