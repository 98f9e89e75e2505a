"""Opening a search's Optuna storage: the one opener the search, the reports and the dashboard
share.

SQLite files written by a search are read by reports and dashboards at the same time, so every
connection waits up to :data:`SQLITE_TIMEOUT_S` for another process's short write transaction
instead of failing with "database is locked", and a reader opens the file in SQLite's own
read-only mode (a report can never change, or lock for writing, a study). Any other SQLAlchemy
URL (PostgreSQL on a cluster) is opened as it is.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Any

from results.errors import ResultsError
from searchspace.errors import EffnasError

__all__ = ["SQLITE_TIMEOUT_S", "open_storage", "sqlite_file_of_url"]

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
    except ArgumentError as reason:
        raise error(f"storage URL {url!r} is malformed: {reason}") from None
    if not parsed.drivername.startswith("sqlite"):
        return None
    database = parsed.database or ""
    if database.startswith("file:"):  # an SQLite URI filename, "file:path?mode=..."
        database = urllib.parse.unquote(database[len("file:") :].split("?")[0])
    if database in ("", ":memory:"):
        raise error(f"storage URL {url!r} names no SQLite file")
    return Path(database)


def open_storage(url: str, *, writable: bool = False, error: type[EffnasError] = ResultsError):
    """An Optuna ``RDBStorage`` on ``url``.

    Args:
        url: a SQLAlchemy URL (``sqlite:///runs/quick/study.db``, ``postgresql://...``).
        writable: the search's own connection: it may create the SQLite file (and its folder)
            and Optuna's tables. Otherwise the storage must already exist, and a SQLite file is
            opened read-only.
        error: the error class of a failure (one line naming the URL).

    Raises:
        error: a malformed URL, a missing SQLite file (when not ``writable``), or a database
            that cannot be opened as an Optuna storage.
    """
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    sqlite_file = sqlite_file_of_url(url, error)
    engine_kwargs: dict[str, Any] = {}
    open_url = url
    if sqlite_file is not None:
        engine_kwargs["connect_args"] = {"timeout": SQLITE_TIMEOUT_S}
        if writable:
            sqlite_file.parent.mkdir(parents=True, exist_ok=True)
        elif not sqlite_file.is_file():
            # Opening it would create an empty database: say what is wrong instead.
            raise error(f"storage URL {url!r}: SQLite file {sqlite_file} does not exist")
        else:
            quoted = urllib.parse.quote(str(sqlite_file.resolve()))
            open_url = f"sqlite:///file:{quoted}?mode=ro&uri=true"
    try:
        return optuna.storages.RDBStorage(
            open_url, engine_kwargs=engine_kwargs, skip_table_creation=not writable
        )
    except (SQLAlchemyError, optuna.exceptions.OptunaError, RuntimeError, ImportError,
            ValueError) as reason:  # fmt: skip
        # Optuna wraps some database errors in StorageInternalError; the cause says more.
        if reason.__cause__ is not None:
            reason = reason.__cause__
        text = " ".join(str(reason).split())[:200] or type(reason).__name__
        raise error(f"cannot open {url} as an Optuna storage: {text}") from None
