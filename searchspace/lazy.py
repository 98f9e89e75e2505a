"""Lazy re-exports for package ``__init__`` modules (PEP 562).

A package re-exports names from its modules so that users import them from one place; the
modules that import torch (or Ray) are loaded on first use of one of their names, so that
``nas --help``, every bad-input error and the torch-free configs answer without paying for them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``names[name]`` (a module path) on first use.

    Usage, in a package's ``__init__``::

        __getattr__ = lazy_exports(__name__, {"build_model": "searchspace.builder"})
    """
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str) -> Any:
        if name in names:
            value = getattr(importlib.import_module(names[name]), name)
            namespace[name] = value  # later look-ups skip this function
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
