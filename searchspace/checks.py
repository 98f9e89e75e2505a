"""Validation shared by the configs of every package: one wording for each kind of bad value.

Each check raises the caller's error class (an :class:`~searchspace.errors.EffnasError`), so the
``nas`` command prints it as one line naming the field and the value.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from searchspace.errors import EffnasError

__all__ = ["check_choice", "check_int"]


def check_choice(
    name: str, value: Any, choices: Collection[Any], error: type[EffnasError] = EffnasError
) -> None:
    """``name must be one of a, b, c, got 'x'`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise error(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")


def check_int(name: str, value: Any, minimum: int, error: type[EffnasError] = EffnasError) -> None:
    """An integer (not a bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise error(f"{name} must be an integer of at least {minimum}, got {value!r}")
