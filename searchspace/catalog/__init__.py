"""The published EfficientNetV2 family as data, and name-or-path resolution of specs.

``efficientnetv2-{b0,s,m,l,xl}`` are YAML files beside this module, written out as published.
Derived members (``b1``..``b3``, B0 grown by compound scaling) are registered as factories by the
``scaling`` package, so that they are defined by their coefficients, not copied tables.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from searchspace.errors import SpecError
from searchspace.spec import ArchSpec

__all__ = ["list_catalog", "load_arch", "register_derived"]

_PREFIX = "efficientnetv2-"
_DERIVED: dict[str, Callable[[], ArchSpec]] = {}


def _published() -> dict[str, str]:
    """Catalog name -> YAML file name for the nets written out as data."""
    files = resources.files(__package__)
    return {
        _PREFIX + entry.name.removesuffix(".yaml"): entry.name
        for entry in files.iterdir()
        if entry.name.endswith(".yaml")
    }


def _ensure_derived() -> None:
    # The scaling package registers B1..B3 when imported; import it lazily to avoid a cycle.
    import scaling  # noqa: F401


def register_derived(name: str, factory: Callable[[], ArchSpec]) -> None:
    """Add a catalog entry computed by ``factory`` (used by ``scaling`` for B1..B3)."""
    _DERIVED[name] = factory


def list_catalog() -> list[str]:
    """Every catalog name, published and derived, in a stable order."""
    _ensure_derived()
    order = {"b0": 0, "b1": 1, "b2": 2, "b3": 3, "s": 4, "m": 5, "l": 6, "xl": 7}
    names = set(_published()) | set(_DERIVED)
    return sorted(names, key=lambda n: (order.get(n.removeprefix(_PREFIX), 99), n))


def load_arch(name_or_path: str | Path) -> ArchSpec:
    """A spec from a catalog name (``efficientnetv2-s``, or just ``s``), a YAML file, or a string.

    Raises:
        SpecError: the name is not in the catalog and no such file exists, or the spec is invalid.
    """
    text = str(name_or_path)
    path = Path(text)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return ArchSpec.load(path)
    if text.startswith("stem") and "," in text:
        return ArchSpec.from_string(text)
    name = text if text.startswith(_PREFIX) else _PREFIX + text
    published = _published()
    if name in published:
        source = resources.files(__package__).joinpath(published[name])
        return ArchSpec.from_yaml(source.read_text(), source=name)
    _ensure_derived()
    if name in _DERIVED:
        return _DERIVED[name]()
    close = difflib.get_close_matches(text, list_catalog(), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(list_catalog())}"
    raise SpecError(f"arch {text!r} is neither a catalog name nor an existing spec file{hint}")
