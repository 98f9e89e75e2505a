"""The search's Optuna study: created once, refused when it belongs to another search.

A study records what it was made for (user attributes ``mode``, ``space_hash``, ``config``,
``trials_requested``) and its objectives' names and directions (from :mod:`results.schema`), so
``nas front`` and the dashboard know them, and a search never mixes into a study that is not its
own: another space, objective or way of scoring candidates is refused before anything is written.

Several drivers may search one study at once (Optuna's distributed mode, ``nas search --join``):
the first creates it, the others check it and join. The check and the creation happen under a
PostgreSQL advisory lock named after the study, so that a driver never sees a study another one
has created but not yet labelled.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import optuna
import yaml

from nas.errors import ConfigError
from nas.search.config import SearchConfig
from results.schema import METRICS, OBJECTIVES_BY_MODE
from results.storage import advisory_lock, is_postgres_url

__all__ = ["SCORING_FIELDS", "create_study", "prepare_study"]

#: Config fields that decide how a candidate is trained and scored: a study's trials are only
#: comparable if every search that adds to it (a resumed or a joining driver) has the same.
SCORING_FIELDS = (
    "dataset",
    "image_size",
    "batch_size",
    "epochs",
    "reward_w",
    "reward_v",
    "seed",
    "evaluation",
    # Which trials are feasible, and what the sampler learned from it, follow the constraints.
    "constraints",
)


def _study_exists(storage: Any, name: str) -> bool:
    try:
        storage.get_study_id_from_name(name)
    except KeyError:
        return False
    except optuna.exceptions.StorageInternalError as error:
        raise ConfigError(f"storage cannot be read: {error}") from None
    return True


@contextlib.contextmanager
def _study_lock(storage: Any, config: SearchConfig) -> Iterator[None]:
    """The study's advisory lock on a PostgreSQL storage (other databases hold one driver)."""
    if not is_postgres_url(config.storage_url):
        yield
        return
    with (
        storage.engine.connect() as connection,
        advisory_lock(connection, f"effnas: study {config.study}"),
    ):
        yield


def prepare_study(
    storage: Any,
    config: SearchConfig,
    *,
    resume: bool = False,
    join: bool = False,
    trials_requested: int | None = None,
) -> bool:
    """Check the study a search is about to use and create it if it should; see the module.

    Args:
        storage: the search's writable storage.
        config: the search's config (its storage URL holds no password).
        resume: continue this driver's search; the study must exist.
        join: search the study together with other drivers: create it if it does not exist,
            else join it.
        trials_requested: the trials this driver asked for when it started (its run
            directory's config), for a resume; default the study's own record of it.

    Returns:
        Whether this call created the study.

    Raises:
        ConfigError: ``resume`` without the study; a study with another space, objective or
            scoring setting (:data:`SCORING_FIELDS`), or (on resume) another number of trials;
            a study that exists without ``resume`` or ``join``. Nothing is written then.
    """
    with _study_lock(storage, config):
        exists = _check_existing_study(storage, config, resume, join, trials_requested)
        if not exists:
            create_study(storage, config)
        return not exists


def _check_existing_study(
    storage: Any, config: SearchConfig, resume: bool, join: bool, trials_requested: int | None
) -> bool:
    """Whether the study exists; refuses (see :func:`prepare_study`) to mix a search into a
    study it does not belong to."""
    if not _study_exists(storage, config.study):
        if resume:
            raise ConfigError(
                f"--resume: study {config.study!r} does not exist in {config.storage_url}; "
                f"start it without --resume"
            )
        return False
    attrs = optuna.load_study(study_name=config.study, storage=storage).user_attrs
    if attrs.get("space_hash") != config.space.hash:
        raise ConfigError(
            f"study {config.study!r} exists with a different search space "
            f"(space hash {attrs.get('space_hash')!r}, this config {config.space.hash!r}); "
            f"use another --study"
        )
    if attrs.get("mode") != config.objective:
        raise ConfigError(
            f"study {config.study!r} exists with objective {attrs.get('mode')!r}, "
            f"this config asks {config.objective!r}; use another --study"
        )
    _check_scoring(config, attrs.get("config"))
    requested = trials_requested if trials_requested is not None else attrs.get("trials_requested")
    if resume and requested is not None and requested != config.trials:
        raise ConfigError(
            f"--resume: this search of study {config.study!r} was started for {requested} "
            f"trials, not {config.trials}; resume with the same trials"
        )
    if not (resume or join):
        raise ConfigError(
            f"study {config.study!r} already exists in {config.storage_url}; pass --resume to "
            f"continue it, --join to search it together with its other drivers, or --study "
            f"NAME for a new one"
        )
    return True


def _check_scoring(config: SearchConfig, stored: str | None) -> None:
    """Refuse a config that trains or scores candidates otherwise than the study's creator."""
    if not stored:
        return  # a study made by an earlier effnas, without its config
    theirs = yaml.safe_load(stored)
    # Through YAML, as the stored config went, so that tuples and lists compare equal.
    ours = yaml.safe_load(yaml.safe_dump(config.to_dict(), sort_keys=False))
    # A study made before constraints existed had none.
    theirs = {"constraints": {}, **theirs}
    for field in SCORING_FIELDS:
        if field in theirs and theirs[field] != ours[field]:
            raise ConfigError(
                f"study {config.study!r} scores candidates with {field} {theirs[field]!r}, this "
                f"config has {ours[field]!r}; its trials would not compare: use the same "
                f"{field} or another --study"
            )


def create_study(storage: Any, config: SearchConfig) -> None:
    """Create the study with the mode's objectives and the attributes that identify it."""
    names = OBJECTIVES_BY_MODE[config.objective]
    study = optuna.create_study(
        study_name=config.study,
        storage=storage,
        directions=[METRICS[name].direction for name in names],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(names))
    study.set_user_attr("mode", config.objective)
    study.set_user_attr("space_hash", config.space.hash)
    study.set_user_attr("config", yaml.safe_dump(config.to_dict(), sort_keys=False))
    study.set_user_attr("trials_requested", config.trials)
