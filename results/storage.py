"""Opening a search's Optuna storage: the one opener the search, the reports and the dashboard
share.

:func:`open_storage` opens SQLite files so that readers and a running search do not trip over
each other (every connection waits up to :data:`SQLITE_TIMEOUT_S` for a write; a reader opens
the file read-only), and PostgreSQL through psycopg 3 (:func:`normalize_storage_url`), with
bounded connection attempts (:func:`storage_engine_kwargs`), Optuna's tables created under an
:func:`advisory_lock`, and a refused connection turned into one line
(:func:`describe_storage_error`). A password is never printed (:func:`hide_password`) nor stored
(:func:`split_password`). How a user reaches a PostgreSQL study and where its password comes
from: docs/searching.md, "On a cluster".
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from results.errors import ResultsError
from searchspace.errors import EffnasError

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "SCHEMA_LOCK",
    "SQLITE_TIMEOUT_S",
    "advisory_lock",
    "describe_storage_error",
    "hide_password",
    "is_postgres_url",
    "normalize_storage_url",
    "open_storage",
    "split_password",
    "sqlite_file_of_url",
    "storage_engine_kwargs",
]

#: Seconds a SQLite connection waits for another process's write lock before giving up. A
#: search commits one trial at a time, in milliseconds; this only has to outlast those.
SQLITE_TIMEOUT_S = 30.0


def sqlite_file_of_url(url: str, error: type[EffnasError] = ResultsError) -> Path | None:
    """The file behind a ``sqlite://`` URL, or ``None`` for another database.

    Raises:
        error: a malformed URL, or a SQLite URL that names no file (``:memory:``).
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        # SQLAlchemy's reason may quote the URL, password included: name the problem only.
        raise error(
            f"storage URL {_redact_unparsable(url)!r} is malformed (expected sqlite:///PATH or "
            f"postgresql://USER@HOST[:PORT]/DATABASE)"
        ) from None
    if not parsed.drivername.startswith("sqlite"):
        return None
    database = parsed.database or ""
    if database.startswith("file:"):  # an SQLite URI filename, "file:path?mode=..."
        database = urllib.parse.unquote(database[len("file:") :].split("?")[0])
    if database in ("", ":memory:"):
        raise error(f"storage URL {url!r} names no SQLite file")
    return Path(database)


def open_storage(
    url: str,
    *,
    writable: bool = False,
    error: type[EffnasError] = ResultsError,
    password: str | None = None,
):
    """An Optuna ``RDBStorage`` on ``url``: the one opener of the search, readers and dashboard.

    Args:
        url: a SQLAlchemy URL (``sqlite:///runs/quick/study.db``, ``postgresql://...``; a
            PostgreSQL scheme is mapped to psycopg 3 by :func:`normalize_storage_url`).
        writable: the search's own connection: it may create the SQLite file (and its folder)
            and Optuna's tables. Otherwise the storage must already exist, and a SQLite file is
            opened read-only.
        error: the error class of a failure (one line naming the URL, its password hidden).
        password: a PostgreSQL password to connect with when the URL holds none (it goes to
            libpq as a connection argument, not into the URL); without either, libpq looks in
            ``PGPASSWORD`` and the password file. The returned storage keeps it in its
            ``engine_kwargs``: never pickle a storage opened with one.

    Raises:
        error: a malformed URL, a missing driver, a missing SQLite file (when not
            ``writable``), or a database that cannot be opened as an Optuna storage (a wrong
            password, a host that does not answer, a missing database: the server's reason).
    """
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    try:
        open_url = normalize_storage_url(url)
    except ResultsError as reason:
        raise error(str(reason)) from None
    sqlite_file = sqlite_file_of_url(url, error)
    engine_kwargs = storage_engine_kwargs(open_url)
    if sqlite_file is not None:
        if writable:
            sqlite_file.parent.mkdir(parents=True, exist_ok=True)
        elif not sqlite_file.is_file():
            # Opening it would create an empty database: say what is wrong instead.
            raise error(f"storage URL {url!r}: SQLite file {sqlite_file} does not exist")
        else:
            quoted = urllib.parse.quote(str(sqlite_file.resolve()))
            open_url = f"sqlite:///file:{quoted}?mode=ro&uri=true"
    elif password is not None:
        engine_kwargs.setdefault("connect_args", {})["password"] = password
    try:
        creating = writable and is_postgres_url(url)
        with _schema_lock(open_url, engine_kwargs) if creating else contextlib.nullcontext():
            return optuna.storages.RDBStorage(
                open_url, engine_kwargs=engine_kwargs, skip_table_creation=not writable
            )
    except (SQLAlchemyError, optuna.exceptions.OptunaError, RuntimeError, ImportError,
            ValueError) as reason:  # fmt: skip
        # Optuna wraps some database errors in StorageInternalError; the cause says more.
        if reason.__cause__ is not None:
            reason = reason.__cause__
        if is_postgres_url(url):
            raise error(describe_storage_error(reason, url, password)) from None
        # SQLAlchemy appends the statement and a link ("[SQL: ...]"): the reason comes before.
        text = " ".join(str(reason).split("[SQL:")[0].split())[:200] or type(reason).__name__
        raise error(f"cannot open {hide_password(url)} as an Optuna storage: {text}") from None


#: The advisory lock that serializes the creation of Optuna's tables in one PostgreSQL database.
SCHEMA_LOCK = "effnas: optuna schema"


@contextlib.contextmanager
def _schema_lock(url: str, engine_kwargs: dict[str, Any]) -> Iterator[None]:
    """Hold :data:`SCHEMA_LOCK` while the block creates (or finds) Optuna's tables.

    Optuna creates its tables, enum types and version rows on the first ``RDBStorage``; two
    processes doing that at once on an empty database fail one of them with an IntegrityError
    (``CREATE TYPE studydirection``). Optuna has no lock of its own, so the writers take turns
    on a PostgreSQL advisory lock, held on a connection of its own (which is also the first
    connection attempt: a refused password or a missing database fails here).
    """
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, **engine_kwargs)
    try:
        with engine.connect() as connection, advisory_lock(connection, SCHEMA_LOCK):
            yield
    finally:
        engine.dispose()


@contextlib.contextmanager
def advisory_lock(connection: Any, name: str) -> Iterator[None]:
    """Hold PostgreSQL's session advisory lock named ``name`` on ``connection`` for the block.

    Waits for another session that holds it. The key is the first 8 bytes of ``name``'s SHA-256,
    so every effnas process that names the same lock takes the same one.
    """
    import sqlalchemy

    key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
    connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": key})
    try:
        yield
    finally:
        connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
        connection.commit()


# Seconds a PostgreSQL connection attempt may take before it fails (libpq's connect_timeout).
DEFAULT_CONNECT_TIMEOUT = 10

_POSTGRES_SCHEMES = {"postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2"}
_INSTALL = "pip install 'effnas[postgres]'"


def _parse(url: str):
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url)
    except (ArgumentError, ValueError):
        # The message would repeat the URL, password included: name the problem only.
        raise ResultsError(
            f"storage URL is not a database URL (expected sqlite:///PATH or "
            f"postgresql://USER@HOST[:PORT]/DATABASE): {_redact_unparsable(url)!r}"
        ) from None


def _redact_unparsable(url: str) -> str:
    """``url`` with anything between ``://`` (or the start) and the last ``@`` replaced."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    if not sep and "@" in url:
        return f"***@{url.rsplit('@', 1)[1]}"
    return url


def is_postgres_url(url: str) -> bool:
    """Whether ``url`` names a PostgreSQL database (any of the accepted schemes)."""
    return url.split("://", 1)[0].lower() in _POSTGRES_SCHEMES


def normalize_storage_url(url: str) -> str:
    """``url`` with a PostgreSQL scheme mapped to ``postgresql+psycopg``; other URLs unchanged.

    Accepts ``postgresql://``, ``postgres://`` (Heroku-style) and ``postgresql+psycopg://``;
    ``postgresql+psycopg2://`` is kept as the user asked when psycopg2 is installed.

    Raises:
        ResultsError: the URL does not parse, or its driver is not installed (the message
            says how to install it and never contains the password).
    """
    if not is_postgres_url(url):
        return url
    parsed = _parse(url)
    if parsed.drivername == "postgresql+psycopg2":
        if importlib.util.find_spec("psycopg2") is None:
            raise ResultsError(
                f"storage {hide_password(url)} asks for psycopg2, which is not installed: "
                f"use postgresql:// (psycopg 3, {_INSTALL}) or pip install psycopg2-binary"
            )
        return url
    if importlib.util.find_spec("psycopg") is None:
        raise ResultsError(f"storage {hide_password(url)} needs the psycopg driver: {_INSTALL}")
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
    the URL's query sets one. SQLite: a :data:`SQLITE_TIMEOUT_S` busy timeout, so that a
    reader never makes the search fail with "database is locked". Holds no password (Optuna
    pickles these).
    """
    if is_postgres_url(url):
        if "connect_timeout" in _parse(url).query:
            return {}
        return {"connect_args": {"connect_timeout": connect_timeout}}
    if url.startswith("sqlite:"):
        return {"connect_args": {"timeout": SQLITE_TIMEOUT_S}}
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
