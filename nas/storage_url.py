"""Study storage URLs: PostgreSQL through psycopg 3, passwords kept out of everything effnas writes.

Pure helpers for the search driver and the result commands:

* :func:`normalize_storage_url` maps a user's ``postgresql://user:pw@host/db`` (or ``postgres://``)
  to SQLAlchemy's ``postgresql+psycopg://`` dialect. SQLAlchemy 2.0 maps a bare ``postgresql://``
  to psycopg2, SQLAlchemy 2.1 to psycopg 3; naming the driver makes the URL mean the same with
  either, and effnas's ``postgres`` extra installs only psycopg 3.
* :func:`hide_password` renders a URL for output (``***`` in place of the password);
  :func:`split_password` takes the password out of a URL, for the URL that effnas stores (run
  config, study attributes, Tune's pickled searcher: Optuna's ``RDBStorage`` pickles its URL and
  its ``engine_kwargs``, so neither may hold the password).
* :func:`storage_engine_kwargs` bounds the time a connection attempt may take (psycopg 3 waits
  130 s by default, libpq's TCP connect to a silent host even longer).
* :func:`describe_storage_error` turns a connection failure into one line without the password.

A URL stored without its password still connects when libpq finds the password elsewhere: the
``PGPASSWORD`` environment variable, or the password file (``PGPASSFILE``, default ``~/.pgpass``,
lines ``host:port:database:user:password``, ``*`` matches anything, mode 0600 or libpq ignores
it with a warning on stderr).
"""

from __future__ import annotations

import importlib.util
from typing import Any

from searchspace.errors import EffnasError

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "StorageURLError",
    "describe_storage_error",
    "hide_password",
    "is_postgres_url",
    "normalize_storage_url",
    "split_password",
    "storage_engine_kwargs",
]

# Seconds a PostgreSQL connection attempt may take before it fails (libpq's connect_timeout).
DEFAULT_CONNECT_TIMEOUT = 10

_POSTGRES_SCHEMES = {"postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2"}
_INSTALL = "pip install 'effnas[postgres]'"


class StorageURLError(EffnasError, ValueError):
    """A storage URL that is malformed, needs a driver that is missing, or cannot be opened."""


def _parse(url: str):
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url)
    except (ArgumentError, ValueError):
        # The message would repeat the URL, password included: name the problem only.
        raise StorageURLError(
            f"storage URL is not a database URL (expected sqlite:///PATH or "
            f"postgresql://USER@HOST[:PORT]/DATABASE): {_redact_unparsable(url)!r}"
        ) from None


def _redact_unparsable(url: str) -> str:
    """``url`` with anything between ``://`` and the last ``@`` replaced, when it has both."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url


def is_postgres_url(url: str) -> bool:
    """Whether ``url`` names a PostgreSQL database (any of the accepted schemes)."""
    return url.split("://", 1)[0].lower() in _POSTGRES_SCHEMES


def normalize_storage_url(url: str) -> str:
    """``url`` with a PostgreSQL scheme mapped to ``postgresql+psycopg``; other URLs unchanged.

    Accepts ``postgresql://``, ``postgres://`` (Heroku-style) and ``postgresql+psycopg://``;
    ``postgresql+psycopg2://`` is kept as the user asked when psycopg2 is installed.

    Raises:
        StorageURLError: the URL does not parse, or its driver is not installed (the message
            says how to install it and never contains the password).
    """
    if not is_postgres_url(url):
        return url
    parsed = _parse(url)
    if parsed.drivername == "postgresql+psycopg2":
        if importlib.util.find_spec("psycopg2") is None:
            raise StorageURLError(
                f"storage {hide_password(url)} asks for psycopg2, which is not installed: "
                f"use postgresql:// (psycopg 3, {_INSTALL}) or pip install psycopg2-binary"
            )
        return url
    if importlib.util.find_spec("psycopg") is None:
        raise StorageURLError(f"storage {hide_password(url)} needs the psycopg driver: {_INSTALL}")
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def hide_password(url: str) -> str:
    """``url`` for output: its password (if any) rendered as ``***``; never raises."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL: still never print what may be a password
        return _redact_unparsable(url)


def split_password(url: str) -> tuple[str, str | None]:
    """``(url without its password, the password or None)``; other URLs come back unchanged.

    The URL without a password is what effnas may store; the password is handed to libpq
    through ``PGPASSWORD`` (or the user keeps it in a password file).
    """
    if not is_postgres_url(url):
        return url, None
    from sqlalchemy.engine import URL

    parsed = _parse(url)
    # URL.set(password=None) keeps the password (None means "unchanged" there): build anew.
    bare = URL.create(
        parsed.drivername,
        username=parsed.username,
        host=parsed.host,
        port=parsed.port,
        database=parsed.database,
        query=parsed.query,
    )
    password = parsed.password
    return bare.render_as_string(hide_password=False), None if password is None else str(password)


def storage_engine_kwargs(url: str, connect_timeout: int = DEFAULT_CONNECT_TIMEOUT) -> dict:
    """``engine_kwargs`` for Optuna's ``RDBStorage`` on ``url``.

    PostgreSQL: ``connect_timeout`` (libpq's, in seconds; psycopg enforces at least 2) unless
    the URL's query sets one. SQLite: a 60 s busy timeout, so that a reader never makes the
    search fail with "database is locked". Holds no password (Optuna pickles these).
    """
    if is_postgres_url(url):
        if "connect_timeout" in _parse(url).query:
            return {}
        return {"connect_args": {"connect_timeout": connect_timeout}}
    if url.startswith("sqlite:"):
        return {"connect_args": {"timeout": 60}}
    return {}


def describe_storage_error(error: BaseException, url: str, password: str | None = None) -> str:
    """One line for a failure to open the storage at ``url``, without its password.

    Keeps the server's reason (``password authentication failed for user "effnas"``,
    ``database "x" does not exist``, ``Connection refused``, ``connection timeout expired``,
    ``no password supplied``) and drops SQLAlchemy's "(Background on this error ...)" line.

    Args:
        error: the exception (SQLAlchemy's ``OperationalError`` wraps psycopg's in ``.orig``).
        url: the storage URL as the user gave it (shown with the password hidden).
        password: a password to scrub from the message in case the server echoed it.
    """
    if password is None:
        password = split_password(url)[1] if is_postgres_url(url) else None
    reason = _reason(error)
    if password:
        reason = reason.replace(password, "***")
    return f"storage {hide_password(url)} cannot be opened: {reason}"


def _reason(error: BaseException) -> str:
    original: Any = getattr(error, "orig", None) or error
    lines = [line.strip() for line in str(original).splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("(Background on this error")]
    # libpq: 'connection to server at "h", port p failed: FATAL:  <reason>' (+ a hint line).
    for line in lines:
        if "FATAL:" in line:
            return " ".join(line.split("FATAL:", 1)[1].split())
    for line in lines:
        if " failed: " in line:
            return " ".join(line.rsplit(" failed: ", 1)[1].split())
    return " ".join(" ".join(lines).split()) or type(error).__name__
