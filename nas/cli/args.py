"""What several commands share: flags whose defaults live in a config dataclass, and the run
argument of ``front``, ``report`` and ``dashboard``.

A flag for a config field defaults to ``None`` on the command line, and only the flags the user
gave are passed to the config, so every default is the dataclass's own; the help text shows it.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from nas.cli.paths import RUN

__all__ = ["add_config_flag", "add_run_arguments", "config_kwargs", "default_of"]


def default_of(config_class: type, name: str) -> Any:
    """The default of field ``name`` of a dataclass (``None`` if it has none)."""
    for item in dataclasses.fields(config_class):
        if item.name == name:
            if item.default is not dataclasses.MISSING:
                return item.default
            if item.default_factory is not dataclasses.MISSING:
                return item.default_factory()
            return None
    raise KeyError(f"{config_class.__name__} has no field {name!r}")


def add_config_flag(
    parser: argparse.ArgumentParser | Any,
    config_class: type,
    name: str,
    help: str,
    *,
    type: Any = str,
    shown: str | None = None,
) -> None:
    """``--name-with-dashes`` for field ``name`` of ``config_class``; the help ends with its
    default (or ``shown``, when the default needs words, e.g. "the spec's train size")."""
    default = default_of(config_class, name)
    suffix = shown if shown is not None else f"default {default}"
    parser.add_argument(
        "--" + name.replace("_", "-"), dest=name, type=type, default=None, help=f"{help} ({suffix})"
    )


def config_kwargs(args: argparse.Namespace, config_class: type) -> dict[str, Any]:
    """The fields of ``config_class`` the user gave on the command line."""
    names = {item.name for item in dataclasses.fields(config_class)}
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


def add_run_arguments(parser: argparse.ArgumentParser, *, several: bool = False) -> None:
    """The run argument shared by ``front``, ``report`` and ``dashboard``."""
    parser.add_argument(
        "run",
        type=RUN,
        nargs="+" if several else None,
        help="run directory (holding study.db), SQLite file, or storage URL"
        + (" (several compare searches)" if several else ""),
    )
    parser.add_argument(
        "--study",
        type=str,
        help="study name (default: the run directory's name, or the only study)",
    )
