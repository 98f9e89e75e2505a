"""The search's Optuna study: created once, refused when it belongs to another search.

A study records what it was made for (user attributes ``mode``, ``space_hash``, ``config``,
``trials_requested``) and its objectives' names and directions (from :mod:`results.schema`), so
``nas front`` and the dashboard know them, and a search never mixes into a study that is not its
own: another space or objective is refused before anything is written.
"""

from __future__ import annotations

import warnings
from typing import Any

import optuna
import yaml

from nas.errors import ConfigError
from nas.search.config import SearchConfig
from results.schema import METRICS, OBJECTIVES_BY_MODE

__all__ = ["check_existing_study", "create_study"]


def _study_exists(storage: Any, name: str) -> bool:
    try:
        storage.get_study_id_from_name(name)
    except KeyError:
        return False
    except optuna.exceptions.StorageInternalError as error:
        raise ConfigError(f"storage cannot be read: {error}") from None
    return True


def check_existing_study(storage: Any, config: SearchConfig, resume: bool) -> None:
    """Refuse, before writing anything, to mix a search into a study it does not belong to.

    Raises:
        ConfigError: ``resume`` without the study; a study with another space or objective, or
            (on resume) another number of trials; a study that exists without ``resume``.
    """
    if not _study_exists(storage, config.study):
        if resume:
            raise ConfigError(
                f"--resume: study {config.study!r} does not exist in {config.storage_url}; "
                f"start it without --resume"
            )
        return
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
    requested = attrs.get("trials_requested")
    if resume and requested is not None and requested != config.trials:
        raise ConfigError(
            f"--resume: study {config.study!r} was started for {requested} trials, "
            f"not {config.trials}; resume with the same trials"
        )
    if not resume:
        raise ConfigError(
            f"study {config.study!r} already exists in {config.storage_url}; "
            f"pass --resume to continue it or --study NAME for a new one"
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
