"""Find a search's Optuna study and read its trials into a pandas DataFrame.

A *run* is what the user names on the command line: a run directory (``runs/<study>/``, which
holds ``study.db``), the SQLite file itself, or any Optuna storage URL. Reading is safe while the
search is still writing: SQLite files are opened read-only (so a report can never change a
study), and every connection waits up to :data:`SQLITE_TIMEOUT_S` for the search's short write
transactions instead of failing with "database is locked".
"""

from __future__ import annotations

import math
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from results.errors import ResultsError

__all__ = [
    "FRAME_COLUMNS",
    "SQLITE_TIMEOUT_S",
    "StudySource",
    "load_study_frame",
    "open_run",
    "study_frame",
]

#: Seconds a SQLite connection waits for another process's write lock before giving up. A
#: search commits one trial at a time, in milliseconds; this only has to outlast those.
SQLITE_TIMEOUT_S = 30.0

#: Text columns of a study frame (from the trial's user attributes; "" when absent).
TEXT_COLUMNS = ("name", "spec", "hash", "device", "status", "failure")
#: Whole-number columns (pandas ``Int64``, ``<NA>`` when absent).
INTEGER_COLUMNS = ("params", "flops", "epochs", "image_size", "batch_size")
#: Real-valued columns (float64, NaN when absent).
FLOAT_COLUMNS = (
    "accuracy",
    "step_time_ms",
    "step_time_norm",
    "step_time_spread_ms",
    "reference_step_time_ms",
    "params_norm",
    "reward",
    "images_per_second",
    "peak_memory_mb",
    "train_seconds",
    "duration_s",
)
#: Every column of a study frame, in order: one row per trial.
FRAME_COLUMNS = (
    "study",
    "number",
    "state",
    "name",
    "spec",
    "hash",
    "accuracy",
    "step_time_ms",
    "step_time_norm",
    "params",
    "params_norm",
    "flops",
    "reward",
    "device",
    "duration_s",
    "failure",
    "status",
    "step_time_spread_ms",
    "reference_step_time_ms",
    "images_per_second",
    "peak_memory_mb",
    "epochs",
    "image_size",
    "batch_size",
    "train_seconds",
    "datetime_start",
    "datetime_complete",
)


@dataclass(frozen=True)
class StudySource:
    """An opened study: where it lives and the storage to read it through.

    Attributes:
        storage: the Optuna storage (read-only for SQLite files unless opened for writing).
        url: the storage URL as a user would write it (no read-only options).
        study_name: the study's name in that storage.
        run_dir: where reports go by default: the run directory, the SQLite file's folder, or
            ``runs/<study>`` for a server database.
    """

    storage: optuna.storages.RDBStorage
    url: str
    study_name: str
    run_dir: Path

    def load(self) -> optuna.Study:
        """The study itself (``optuna.load_study`` on this storage)."""
        return optuna.load_study(study_name=self.study_name, storage=self.storage)


def open_run(run: str | Path, study: str | None = None, *, writable: bool = False) -> StudySource:
    """Open the study a user named.

    Args:
        run: a run directory holding ``study.db``, a SQLite file, or a storage URL
            (``sqlite:///runs/quick/study.db``, ``postgresql://...``).
        study: the study's name. Without it: the run directory's name if the storage holds a
            study of that name, else the only study in the storage.
        writable: open SQLite files for writing too (the dashboard saves notes and figures);
            by default they are opened read-only.

    Raises:
        ResultsError: a missing directory or file, a file that is not an Optuna storage, an
            unknown study name, or a storage with no study or several and no ``study``.
    """
    text = str(run)
    directory_name: str | None = None
    if "://" in text:
        url = text
        sqlite_file = _sqlite_file_of_url(url)
        run_dir = sqlite_file.parent if sqlite_file is not None else None
    else:
        path = Path(text)
        if not path.exists():
            raise ResultsError(f"run directory {text} does not exist")
        if path.is_dir():
            sqlite_file = path / "study.db"
            if not sqlite_file.is_file():
                raise ResultsError(f"run directory {text} has no study.db (not a search run?)")
            run_dir = path
            directory_name = path.resolve().name
        else:
            sqlite_file, run_dir = path, path.parent
        url = f"sqlite:///{sqlite_file.resolve()}"
    storage = _open_storage(url, sqlite_file, writable=writable)
    names = _study_names(storage, url)
    if study is not None:
        if study not in names:
            listed = ", ".join(names) or "none"
            raise ResultsError(f"--study {study!r} is not in {url} (studies: {listed})")
        name = study
    elif directory_name in names:
        name = directory_name
    elif len(names) == 1:
        name = names[0]
    elif not names:
        raise ResultsError(f"{url} holds no study yet")
    else:
        raise ResultsError(
            f"{url} holds several studies ({', '.join(names)}); pick one with --study"
        )
    return StudySource(storage, url, name, run_dir if run_dir is not None else Path("runs") / name)


def _sqlite_file_of_url(url: str) -> Path | None:
    """The file behind a ``sqlite://`` URL (checked to exist), or None for another database."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError as error:
        raise ResultsError(f"storage URL {url!r} is malformed: {error}") from None
    if not parsed.drivername.startswith("sqlite"):
        return None
    database = parsed.database or ""
    if database.startswith("file:"):  # an SQLite URI filename, "file:path?mode=..."
        database = urllib.parse.unquote(database[len("file:") :].split("?")[0])
    if database in ("", ":memory:"):
        raise ResultsError(f"storage URL {url!r} names no SQLite file")
    path = Path(database)
    if not path.is_file():
        # Opening it would create an empty database: say what is wrong instead.
        raise ResultsError(f"storage URL {url!r}: SQLite file {database} does not exist")
    return path


def _open_storage(
    url: str, sqlite_file: Path | None, *, writable: bool
) -> optuna.storages.RDBStorage:
    from sqlalchemy.exc import SQLAlchemyError

    engine_kwargs: dict[str, Any] = {}
    open_url = url
    if sqlite_file is not None:
        engine_kwargs["connect_args"] = {"timeout": SQLITE_TIMEOUT_S}
        if not writable:
            # SQLite's own read-only mode: a reader can never write to (or lock for writing)
            # the search's database, whatever Optuna does on load.
            quoted = urllib.parse.quote(str(sqlite_file.resolve()))
            open_url = f"sqlite:///file:{quoted}?mode=ro&uri=true"
    try:
        return optuna.storages.RDBStorage(
            open_url, engine_kwargs=engine_kwargs, skip_table_creation=True
        )
    except (SQLAlchemyError, optuna.exceptions.OptunaError, RuntimeError, ImportError,
            ValueError) as error:  # fmt: skip
        # Optuna wraps some database errors in StorageInternalError; the cause says more.
        if error.__cause__ is not None:
            error = error.__cause__
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ResultsError(f"cannot open {url} as an Optuna storage: {reason}") from None


def _study_names(storage: optuna.storages.RDBStorage, url: str) -> list[str]:
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return [summary.study_name for summary in storage.get_all_studies()]
    except (SQLAlchemyError, optuna.exceptions.OptunaError) as error:
        if error.__cause__ is not None:
            error = error.__cause__
        reason = str(error).strip().splitlines()[0]
        raise ResultsError(f"cannot read studies from {url}: {reason}") from None


def load_study_frame(run: str | Path, study: str | None = None) -> pd.DataFrame:
    """One row per trial of the study a user named (see :func:`open_run` for ``run``/``study``).

    Raises:
        ResultsError: as :func:`open_run`, or a study without any trial yet.
    """
    source = open_run(run, study)
    frame = study_frame(source.load())
    if frame.empty:
        raise ResultsError(f"study {source.study_name!r} in {source.url} has no trials yet")
    frame.attrs["url"] = source.url
    frame.attrs["run_dir"] = str(source.run_dir)
    return frame


def study_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial, columns :data:`FRAME_COLUMNS`, from a study's trials.

    Metrics come from the trial's user attributes (the result-record schema); an objective the
    attributes lack is taken from the trial's values under the study's metric name, and the
    duration from Optuna's start and end times. ``frame.attrs`` holds ``study_name``, ``mode``
    (``"reward"`` or ``"pareto"``), ``objectives`` (the study's metric names) and
    ``directions``.
    """
    directions = [direction.name.lower() for direction in study.directions]
    objectives = list(study.metric_names or [])
    if len(objectives) != len(directions):
        objectives = ["reward"] if len(directions) == 1 else []
    trials = study.get_trials(deepcopy=False)
    rows = [_trial_row(study.study_name, trial, objectives) for trial in trials]
    frame = pd.DataFrame(rows, columns=list(FRAME_COLUMNS))
    for column in INTEGER_COLUMNS:
        frame[column] = pd.array(frame[column].tolist(), dtype="Int64")
    for column in FLOAT_COLUMNS:
        frame[column] = frame[column].astype("float64")
    frame["number"] = frame["number"].astype("int64")
    mode = study.user_attrs.get("mode") or ("reward" if len(directions) == 1 else "pareto")
    frame.attrs.update(
        study_name=study.study_name, mode=str(mode), objectives=objectives, directions=directions
    )
    return frame


def _number(value: Any, integer: bool) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None if integer else math.nan
    if integer:
        return int(value) if math.isfinite(value) else None
    return float(value)


def _trial_row(study_name: str, trial: optuna.trial.FrozenTrial, objectives: list[str]) -> dict:
    attrs = trial.user_attrs
    row: dict[str, Any] = {"study": study_name, "number": trial.number, "state": trial.state.name}
    for column in TEXT_COLUMNS:
        value = attrs.get(column)
        row[column] = "" if value is None else str(value)
    for column in INTEGER_COLUMNS:
        row[column] = _number(attrs.get(column), integer=True)
    for column in FLOAT_COLUMNS:
        row[column] = _number(attrs.get(column), integer=False)
    for name, value in zip(objectives, trial.values or (), strict=False):
        if name in row and (row[name] is None or row[name] != row[name]):  # absent or NaN
            row[name] = _number(value, integer=name in INTEGER_COLUMNS)
    if math.isnan(row["duration_s"]) and trial.duration is not None:
        row["duration_s"] = trial.duration.total_seconds()
    row["datetime_start"] = trial.datetime_start
    row["datetime_complete"] = trial.datetime_complete
    return row
