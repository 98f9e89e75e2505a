"""The scaling package's typed error."""

from __future__ import annotations

from searchspace.errors import EffnasError

__all__ = ["ScalingError"]


class ScalingError(EffnasError, ValueError):
    """Scaling asked for something impossible: a coefficient at or below 0, an unknown preset, a
    budget below the base or out of reach. The message is one line naming the field and value."""
