"""One name, one meaning: no public class or function of the library is defined in two modules.

A package's ``__init__.py`` may re-export a name (an import, not a definition). Two kinds of
module share names on purpose, and only those names:

- the ``nas`` command's modules (``nas.cli.COMMAND_MODULES``) each define the command protocol,
  ``register(subparsers)`` and ``run(args)``: one meaning, one implementation per command;
- ``nas/export/template.py`` is the source of the file ``nas export --format pytorch`` writes; it
  mirrors ``searchspace``'s model classes under the same names so that a state dict moves between
  the two with identical keys (renaming them would change what the command writes).
"""

from __future__ import annotations

import ast
from collections import defaultdict

from nas.cli import COMMAND_MODULES
from tests import REPO

#: The library: the packages a user imports.
LIBRARY = ("nas", "searchspace", "scaling", "results")
#: Names each command module of ``nas`` defines: one protocol, not a duplicate.
COMMAND_PROTOCOL = {"register", "run"}
#: The exported file's source: not the library's namespace (see the module docstring).
TEMPLATE = "nas/export/template.py"


def _module_name(path: str) -> str:
    return path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")


def _definitions() -> dict[str, list[str]]:
    """Public top-level class or function name -> the modules (paths) that define it."""
    found: dict[str, list[str]] = defaultdict(list)
    for package in LIBRARY:
        for path in sorted((REPO / package).rglob("*.py")):
            name = str(path.relative_to(REPO))
            for node in ast.parse(path.read_text()).body:
                defines = isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                if defines and not node.name.startswith("_"):
                    found[node.name].append(name)
    return found


def _exempt(name: str, path: str) -> bool:
    if path == TEMPLATE:
        return True
    return name in COMMAND_PROTOCOL and _module_name(path) in COMMAND_MODULES


def test_no_public_name_is_defined_in_two_modules():
    duplicates = {
        name: paths
        for name, defined_in in _definitions().items()
        if len(paths := [path for path in defined_in if not _exempt(name, path)]) > 1
    }
    assert duplicates == {}


def test_the_exemptions_are_what_they_say():
    definitions = _definitions()
    # Every command module defines the protocol, and nothing outside them does.
    for name in COMMAND_PROTOCOL:
        assert sorted(_module_name(path) for path in definitions[name]) == sorted(COMMAND_MODULES)
    # The template's classes and functions are the ones it mirrors, or its own.
    template = {name for name, paths in definitions.items() if TEMPLATE in paths}
    mirrored = {name for name in template if len(definitions[name]) > 1}
    assert mirrored <= {"EfficientNetV2", "MBConv", "FusedMBConv", "conv_bn_act"}
    for name in mirrored:
        others = [path for path in definitions[name] if path != TEMPLATE]
        assert all(path.startswith("searchspace/") for path in others)
