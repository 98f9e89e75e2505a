"""Validation shared by the configs of every package: one wording for each kind of bad value.

Each check raises the caller's error class (an :class:`~searchspace.errors.EffnasError`), so the
``nas`` command prints it as one line naming the field and the value. ``bool`` is refused where a
number is asked for: in Python it is an ``int``, but ``epochs: true`` is a mistake, not 1.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection
from typing import Any

from searchspace.errors import EffnasError

__all__ = [
    "check_amount",
    "check_bool",
    "check_choice",
    "check_int",
    "check_number",
    "check_string",
    "is_finite_number",
    "parse_amount",
]

#: Suffixes of an amount: thousands, millions, billions (``g`` and ``b`` alike).
_SUFFIXES = {"k": 1e3, "m": 1e6, "g": 1e9, "b": 1e9}
_AMOUNT = re.compile(r"^\s*([-+]?[0-9]*\.?[0-9]+(?:e[-+]?[0-9]+)?)\s*([kmgb]?)\s*$", re.IGNORECASE)


def is_finite_number(value: Any) -> bool:
    """Whether ``value`` is a finite int or float (not a bool, not NaN or infinite)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_choice(
    name: str, value: Any, choices: Collection[Any], error: type[EffnasError] = EffnasError
) -> None:
    """``name must be one of a, b, c, got 'x'`` unless ``value`` is one of ``choices``."""
    if isinstance(value, bool) or value not in choices:
        raise error(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")


def check_int(
    name: str,
    value: Any,
    minimum: int | None = None,
    error: type[EffnasError] = EffnasError,
    *,
    maximum: int | None = None,
) -> int:
    """An integer (not a bool) in ``[minimum, maximum]`` (either bound may be absent)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise error(f"{name} must be an integer, got {value!r}")
    if maximum is not None and minimum is not None and not minimum <= value <= maximum:
        raise error(f"{name} must be an integer in [{minimum}, {maximum}], got {value!r}")
    if minimum is not None and value < minimum:
        raise error(f"{name} must be an integer of at least {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise error(f"{name} must be an integer of at most {maximum}, got {value!r}")
    return value


def check_number(
    name: str,
    value: Any,
    minimum: float | None = None,
    maximum: float | None = None,
    error: type[EffnasError] = EffnasError,
    *,
    above: bool = False,
    below: bool = False,
) -> float:
    """A finite number (not a bool) in the interval given, returned as a float.

    Args:
        name: the field, as the user wrote it.
        value: the value to check.
        minimum, maximum: the bounds; ``None`` leaves that side open.
        error: the error class to raise.
        above: the minimum itself is excluded (``> minimum``).
        below: the maximum itself is excluded (``< maximum``).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise error(f"{name} must be a number, got {value!r}")
    low_ok = minimum is None or (value > minimum if above else value >= minimum)
    high_ok = maximum is None or (value < maximum if below else value <= maximum)
    if not (math.isfinite(value) and low_ok and high_ok):
        raise error(f"{name} must be {_interval(minimum, maximum, above, below)}, got {value!r}")
    return float(value)


def _interval(minimum: float | None, maximum: float | None, above: bool, below: bool) -> str:
    if minimum is not None and maximum is not None:
        return f"in {'(' if above else '['}{minimum:g}, {maximum:g}{')' if below else ']'}"
    if minimum is not None:
        return f"{'greater than' if above else 'at least'} {minimum:g}"
    if maximum is not None:
        return f"{'less than' if below else 'at most'} {maximum:g}"
    return "a finite number"


def check_bool(name: str, value: Any, error: type[EffnasError] = EffnasError) -> bool:
    """``true`` or ``false``, nothing that merely converts to one."""
    if not isinstance(value, bool):
        raise error(f"{name} must be true or false, got {value!r}")
    return value


def check_string(name: str, value: Any, error: type[EffnasError] = EffnasError) -> str:
    """A string (possibly empty)."""
    if not isinstance(value, str):
        raise error(f"{name} must be a string, got {value!r}")
    return value


def parse_amount(text: str) -> float | None:
    """``"22M"`` -> 22e6, ``"8.4G"`` -> 8.4e9, ``"5e6"`` -> 5e6; None if ``text`` is not one.

    YAML reads ``5e6`` as text (its floats need a dot and a signed exponent), and a budget reads
    best with a suffix: both are amounts here.
    """
    match = _AMOUNT.match(text)
    return None if match is None else float(match[1]) * _SUFFIXES.get(match[2].lower(), 1.0)


def check_amount(name: str, value: Any, error: type[EffnasError] = EffnasError) -> float:
    """A positive, finite amount: a number, or text such as ``5e6``, ``22M``, ``8.4G``."""
    amount = parse_amount(value) if isinstance(value, str) else value
    if isinstance(amount, bool) or not isinstance(amount, (int, float)):
        raise error(f"{name} must be a number (e.g. 5000000, 5e6, 5M), got {value!r}")
    if not (math.isfinite(amount) and amount > 0):
        raise error(f"{name} must be greater than 0, got {value!r}")
    return float(amount)
