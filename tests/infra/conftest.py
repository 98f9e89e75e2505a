"""Fixtures for the cluster infrastructure tests: a real PostgreSQL server, a two-node Ray.

``tests/infra`` is on ``sys.path`` while these tests run (pytest's default import mode puts a
test's directory there), so the helpers import as ``pg_server`` and ``ray_namespace``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from pg_server import PostgresServer, ServerBinariesMissing


def _missing(reason: str) -> None:
    """Skip a test whose system programs are missing, except on CI, where that is a failure."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI must run this test: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server on a loopback port with password authentication, for the session.

    Role ``effnas`` (password: a random one, with characters that need percent-encoding in a
    URL) owns database ``effnas``. Tests that write studies use their own study names.
    """
    try:
        server = PostgresServer(password="pw:with/odd@chars%" + os.urandom(4).hex())
    except ServerBinariesMissing as missing:
        _missing(str(missing))
    server.start()  # stops and cleans up itself if it fails half-way
    try:
        yield server
    finally:
        server.stop()
