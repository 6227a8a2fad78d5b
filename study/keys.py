"""Sweep-key facts both the study config and the measurement plug-ins read (no import of study.config:
the plug-ins' settings are part of it)."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from trainables.trial import SWEEP_FIELDS, key_info


def all_grids(sweep: Any) -> tuple[Any, ...]:
    """The main grid and its `also` grids (a SweepConfig each)."""
    return (sweep, *sweep.also)


def searched_keys(search: Any) -> list[str]:
    """The keys a SearchConfig's space names."""
    return [f.name for f in dataclasses.fields(search.space) if getattr(search.space, f.name) is not None]


def interpolable_keys(sweep_config: type) -> list[str]:
    """The sweep keys 1-D interpolation can pair trials along: the record's swept fields that allow it
    (`between` metadata) whose sweep values (in `sweep_config`, the SweepConfig class) are plain numbers,
    names or booleans."""
    hints = typing.get_type_hints(sweep_config)
    return [key for key in SWEEP_FIELDS if key in hints and key_info(key).between and plain_values(hints[key])]


def plain_values(hint: Any) -> bool:
    """Whether a sweep key's annotation (tuple[X, ...] | None) holds single numbers, names or booleans."""
    return all(a in (int, float, str, bool) for a in typing.get_args(_without_none(hint)) if a is not Ellipsis)


def _without_none(hint: Any) -> Any:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if typing.get_origin(hint) in (typing.Union, types.UnionType) else hint
