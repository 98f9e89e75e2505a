"""Typed errors shared by every effnas package.

Every error a user can cause with bad input derives from :class:`EffnasError`. The ``nas`` command
prints such an error as one line and exits with status 2; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

__all__ = ["EffnasError", "SpecError", "WeightsError"]


class EffnasError(Exception):
    """Bad input from the user: a spec, a config, a path, a URL. The message is one line."""


class SpecError(EffnasError, ValueError):
    """An architecture spec that is malformed or cannot be built.

    The message names the field (as a dotted path such as ``stages[2].kernel``) and the value.
    """


class WeightsError(EffnasError):
    """A weights file that cannot be read, or that does not fit the architecture it is loaded into.

    The message names the file and, for a mismatch, the first tensor that does not fit (its key in
    the file, its key in the effnas model and both shapes).
    """
