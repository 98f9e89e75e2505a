"""The published EfficientNetV2 family as data, and name-or-path resolution of specs.

``efficientnetv2-{b0,b1,b2,b3,s,m,l,xl}`` are YAML files beside this module. B0, S, M, L and XL
are written out as published; B1..B3 are B0 grown by compound scaling with the reference code's
coefficients, written out once as data (their lineage records the coefficients, and the scaling
tests check that :func:`scaling.scale_spec` reproduces them), so the catalog needs no code from
``scaling`` and ``scaling`` may depend on the catalog without a cycle.
"""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path

from searchspace.errors import SpecError
from searchspace.spec import ArchSpec

__all__ = ["list_catalog", "load_arch"]

_PREFIX = "efficientnetv2-"
_ORDER = ("b0", "b1", "b2", "b3", "s", "m", "l", "xl")


def _files() -> dict[str, str]:
    """Catalog name -> YAML file name."""
    return {
        _PREFIX + entry.name.removesuffix(".yaml"): entry.name
        for entry in resources.files(__package__).iterdir()
        if entry.name.endswith(".yaml")
    }


def list_catalog() -> list[str]:
    """Every catalog name, smallest first."""
    order = {size: position for position, size in enumerate(_ORDER)}
    return sorted(_files(), key=lambda n: (order.get(n.removeprefix(_PREFIX), 99), n))


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
    files = _files()
    if name in files:
        source = resources.files(__package__).joinpath(files[name])
        return ArchSpec.from_yaml(source.read_text(), source=name)
    close = difflib.get_close_matches(text, list_catalog(), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(list_catalog())}"
    raise SpecError(f"arch {text!r} is neither a catalog name nor an existing spec file{hint}")
