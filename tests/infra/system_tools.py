"""What a test does when a system program it needs (PostgreSQL, unshare) is missing."""

from __future__ import annotations

import os

import pytest

__all__ = ["missing"]


def missing(reason: str) -> None:
    """Skip the test with ``reason`` (which says how to install the program); on CI, fail it.

    CI (``CI=true``, as ``.ci/run`` runs) installs every program these tests need, so a missing
    one there is a broken CI script, not a reason to skip.
    """
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI must run this test: {reason}")
    pytest.skip(reason)
