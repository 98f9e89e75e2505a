"""Errors a user can cause when pointing ``results`` at a study."""

from __future__ import annotations

from searchspace.errors import EffnasError

__all__ = ["ResultsError"]


class ResultsError(EffnasError, ValueError):
    """A run directory, storage URL, study name, objective or port that cannot be used.

    The message is one line and names the argument and the value.
    """
