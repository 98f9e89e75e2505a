"""Arguments that name a file or a folder: their argparse ``type``.

Every ``nas`` argument that names a file or a folder declares a :class:`PathArgument`
(:func:`input_file`, :func:`output_file`, :func:`output_folder`): whether the command reads or
writes it, a file or a folder, and a file's format. Parsing then refuses a path that cannot work
with one line naming the argument and the path, before any work starts and without creating
anything; a file's content is checked by the one reader of its format. What is refused and how
the tests derive their cases: docs/development.md, "Commands, arguments and imports".
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from searchspace.errors import EffnasError
from searchspace.files import check_input_path, check_output_path

__all__ = [
    "DATASET",
    "RUN",
    "SEARCH_CONFIG",
    "SPEC",
    "SPEC_OR_WEIGHTS",
    "PathArgument",
    "input_file",
    "output_file",
    "output_folder",
]


class _Refused(EffnasError):
    """A path refused while parsing (argparse prefixes the argument's name)."""


@dataclass(frozen=True)
class PathArgument:
    """The ``type`` of an argument that names a file or a folder; it returns the text unchanged.

    Attributes:
        role: ``input`` (read) or ``output`` (written).
        folder: True a folder, False a file, None either (a run directory or a SQLite file).
        format: what a file holds: ``yaml``, ``torch``, ``sqlite``, ``csv``, ``html``, ``any``.
        prefixes: the value is one of these followed by the path (``imagefolder:PATH``); a value
            with none of them names no path (``synthetic:64``), and its reader checks it.
        names: the value may be a name instead of a path: one of these words, or, with
            ``("*",)``, anything that neither ends in one of ``suffixes`` nor exists.
        suffixes: endings that make a value a path even when it does not exist.
        urls: a value with ``://`` is a URL (a database, s3://...), not a path.
    """

    role: str
    folder: bool | None
    format: str = "any"
    prefixes: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    suffixes: tuple[str, ...] = ()
    urls: bool = False

    def path_of(self, text: str) -> str | None:
        """The path that ``text`` names, or None when it names none (a name, a URL)."""
        if self.urls and "://" in text:
            return None
        if self.prefixes:
            prefix = next((p for p in self.prefixes if text.startswith(p)), None)
            return None if prefix is None else text[len(prefix) :]
        if text in self.names:
            return None
        if "*" in self.names and not (text.endswith(self.suffixes) or Path(text).exists()):
            return None
        return text

    def __call__(self, text: str) -> str:
        path = self.path_of(text)
        if path is None:
            return text
        try:
            if self.role == "input":
                check_input_path(path, "", _Refused, folder=self.folder)
            else:
                check_output_path(path, "", _Refused, folder=bool(self.folder))
        except _Refused as error:
            raise argparse.ArgumentTypeError(str(error).strip()) from None
        return text

    def __repr__(self) -> str:  # argparse names the type in some messages
        return f"{self.role} {'folder' if self.folder else 'file'}"


def input_file(format: str, **kwargs: object) -> PathArgument:
    """A file the command reads."""
    return PathArgument("input", False, format, **kwargs)  # type: ignore[arg-type]


def output_file(format: str, **kwargs: object) -> PathArgument:
    """A file the command writes (its folder is created)."""
    return PathArgument("output", False, format, **kwargs)  # type: ignore[arg-type]


def output_folder(**kwargs: object) -> PathArgument:
    """A folder the command writes into (created with its parents)."""
    return PathArgument("output", True, **kwargs)  # type: ignore[arg-type]


#: An architecture: a catalog name or a spec string, or a YAML spec file (``load_arch``'s rule).
SPEC = PathArgument("input", False, "yaml", names=("*",), suffixes=(".yaml", ".yml"))

#: A search config YAML file.
SEARCH_CONFIG = input_file("yaml")

#: A search's run: its directory (holding study.db), the SQLite file, or a storage URL.
RUN = PathArgument("input", None, "sqlite", urls=True)

#: A dataset ``NAME[:PATH]``: the path of the datasets that take one (the names are
#: nas.data.sources.DATASETS's, which imports torch; test_paths checks they agree).
DATASET = PathArgument(
    "input",
    None,
    prefixes=(
        "imagefolder:",
        "cifar10:",
        "cifar100:",
        "flowers102:",
        "stanfordcars:",
        "fashionmnist:",
    ),
)

#: ``nas export``'s source: an architecture, or an effnas weights file (the suffixes are
#: nas.export.writer's, which imports torch; test_paths checks they agree).
SPEC_OR_WEIGHTS = PathArgument(
    "input",
    False,
    "torch",
    names=("*",),
    suffixes=(".yaml", ".yml", ".pt", ".pth", ".ckpt", ".bin"),
)
