"""Find a search's Optuna study and read its trials into a pandas DataFrame.

A *run* is what the user names on the command line: a run directory (``runs/<study>/``, which
holds ``study.db``), the SQLite file itself, or any Optuna storage URL. Reading is safe while the
search is still writing (:mod:`results.storage`). The frame's columns come from the record schema
(:mod:`results.schema`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from results.errors import ResultsError
from results.schema import METRICS, RECORD, RECORD_KEYS
from results.storage import hide_password, open_storage, sqlite_file_of_url

__all__ = [
    "FRAME_COLUMNS",
    "StudySource",
    "load_study_frame",
    "open_study",
    "study_frame",
]

#: Every column of a study frame, in order: one row per trial. ``trial_params`` holds the
#: trial's Optuna parameters (the search space's choices, ``s1_block``, ...) as a dict.
FRAME_COLUMNS = ("study", "number", "state", *RECORD_KEYS, "datetime_start", "datetime_complete",
                 "trial_params")  # fmt: skip


@dataclass(frozen=True)
class StudySource:
    """An opened study: where it lives and the storage to read it through.

    Attributes:
        storage: the Optuna storage (read-only for SQLite files unless opened for writing).
        url: the storage URL as a user would write it (no read-only options), its password
            (if any) hidden: what messages and reports may show.
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


def open_study(run: str | Path, study: str | None = None, *, writable: bool = False) -> StudySource:
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
        sqlite_file = sqlite_file_of_url(url)
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
            _check_sqlite_file(path)
            sqlite_file, run_dir = path, path.parent
        url = f"sqlite:///{sqlite_file.resolve()}"
    storage = open_storage(url, writable=writable)
    url = hide_password(url)
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


#: The first bytes of every SQLite database file (https://sqlite.org/fileformat.html).
_SQLITE_HEADER = b"SQLite format 3\x00"


def _check_sqlite_file(path: Path) -> None:
    """Refuse a file that is not a SQLite database before SQLite opens it: SQLite takes an
    empty file for a new database, and a dashboard that opens it for writing would make one.

    Raises:
        ResultsError: the file is empty or does not start as a SQLite database does.
    """
    try:
        with path.open("rb") as file:
            head = file.read(len(_SQLITE_HEADER))
    except OSError as reason:
        raise ResultsError(f"{str(path)!r} cannot be read: {reason.strerror or reason}") from None
    if head != _SQLITE_HEADER:
        what = "the file is empty" if not head else "not a SQLite database"
        raise ResultsError(f"cannot open {str(path)!r} as an Optuna storage: {what}")


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
    """One row per trial of the study a user named (see :func:`open_study` for ``run``/``study``).

    Raises:
        ResultsError: as :func:`open_study`, or a study without any trial yet.
    """
    source = open_study(run, study)
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
    (``"reward"`` or ``"pareto"``), ``objectives`` (the study's metric names),
    ``directions`` and ``param_distributions`` (each parameter's Optuna distribution, for
    :mod:`results.importance`).
    """
    directions = [direction.name.lower() for direction in study.directions]
    objectives = list(study.metric_names or [])
    if len(objectives) != len(directions):
        objectives = ["reward"] if len(directions) == 1 else []
    trials = study.get_trials(deepcopy=False)
    rows = [_trial_row(study.study_name, trial, objectives) for trial in trials]
    distributions = {}
    for trial in trials:
        distributions.update(trial.distributions)
    frame = pd.DataFrame(rows, columns=list(FRAME_COLUMNS))
    for field in RECORD:
        if field.kind is int:
            frame[field.name] = pd.array(frame[field.name].tolist(), dtype="Int64")
        elif field.kind is float:
            frame[field.name] = frame[field.name].astype("float64")
    frame["number"] = frame["number"].astype("int64")
    mode = study.user_attrs.get("mode") or ("reward" if len(directions) == 1 else "pareto")
    frame.attrs.update(
        study_name=study.study_name,
        mode=str(mode),
        objectives=objectives,
        directions=directions,
        param_distributions=distributions,
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
    for field in RECORD:
        value = attrs.get(field.name)
        if field.kind is str:
            row[field.name] = "" if value is None else str(value)
        else:
            row[field.name] = _number(value, integer=field.integer)
    for name, value in zip(objectives, trial.values or (), strict=False):
        if name in row and (row[name] is None or row[name] != row[name]):  # absent or NaN
            row[name] = _number(value, integer=name in METRICS and METRICS[name].integer)
    if math.isnan(row["duration_s"]) and trial.duration is not None:
        row["duration_s"] = trial.duration.total_seconds()
    row["datetime_start"] = trial.datetime_start
    row["datetime_complete"] = trial.datetime_complete
    row["trial_params"] = dict(trial.params)
    return row
