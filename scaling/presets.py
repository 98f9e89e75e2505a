"""Named growth presets (S, M, L) as data, and user preset files.

:data:`DEFAULT_PRESETS` holds the S, M and L plans (:class:`~scaling.compound.ScalingPlan`),
placed where the reference code places the published EfficientNetV2 sizes relative to B0, with
V2's rules (image sizes, extra depth for the late stages of M and L, classifier dropout).
:func:`load_presets` reads a user preset file, a YAML mapping of name -> plan fields: an entry
for an existing name overrides only the fields it gives, a new name starts from the plan
defaults; :func:`resolve_variants` turns ``--variants s,m,l`` into plans. The presets and where
each figure comes from: docs/scaling.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from scaling.compound import MAX_EVAL_RESOLUTION, ScalingPlan
from scaling.errors import ScalingError
from searchspace.files import load_yaml_file

__all__ = ["DEFAULT_PRESETS", "load_presets", "resolve_variants"]

#: EfficientNet B0's eval size, the reference the preset resolution factors are taken against.
_B0_EVAL = 224

DEFAULT_PRESETS: dict[str, ScalingPlan] = {
    "s": ScalingPlan(
        width=1.4,
        depth=1.8,
        resolution=380 / _B0_EVAL,
        max_eval_resolution=MAX_EVAL_RESOLUTION,
        dropout=0.2,
        variant="s",
    ),
    "m": ScalingPlan(
        width=1.6,
        depth=2.2,
        resolution=456 / _B0_EVAL,
        late_depth=1.25,
        late_stages=2,
        max_eval_resolution=MAX_EVAL_RESOLUTION,
        dropout=0.3,
        variant="m",
    ),
    "l": ScalingPlan(
        width=2.0,
        depth=3.1,
        resolution=600 / _B0_EVAL,
        late_depth=1.25,
        late_stages=2,
        max_eval_resolution=MAX_EVAL_RESOLUTION,
        dropout=0.4,
        variant="l",
    ),
}


def load_presets(path: str | Path | None = None) -> dict[str, ScalingPlan]:
    """The default presets, overridden and extended by a user YAML file if ``path`` is given.

    Raises:
        ScalingError: the file does not exist, is not YAML, is not a mapping of names to plan
            fields, or a field is invalid (named as ``<file>: <preset>.<field>``).
    """
    presets = dict(DEFAULT_PRESETS)
    if path is None:
        return presets
    path = Path(path)
    data = load_yaml_file(path, "presets", ScalingError)
    if not isinstance(data, Mapping) or not data:
        raise ScalingError(f"{path}: presets must be a mapping of name -> fields, got {data!r}")
    for name, fields in data.items():
        if not isinstance(name, str) or not name.strip() or "," in name:
            raise ScalingError(f"{path}: preset names must be words without commas, got {name!r}")
        if not isinstance(fields, Mapping):
            raise ScalingError(f"{path}: preset {name} must be a mapping of fields, got {fields!r}")
        name = name.strip().lower()  # names match case-insensitively
        merged = {"variant": name}
        if name in presets:
            merged = presets[name].to_dict()
        merged.update(fields)
        try:
            presets[name] = ScalingPlan.from_dict(merged, where=name)
        except ScalingError as error:
            raise ScalingError(f"{path}: {error}") from None
    return presets


def resolve_variants(names: str, presets: Mapping[str, ScalingPlan]) -> list[ScalingPlan]:
    """The plans for a comma-separated list of preset names, e.g. ``"s,m,l"``.

    Raises:
        ScalingError: a name is not a preset (the message lists the known ones).
    """
    chosen = [name.strip().lower() for name in names.split(",") if name.strip()]
    if not chosen:
        raise ScalingError(f"--variants must name at least one preset, got {names!r}")
    for name in chosen:
        if name not in presets:
            raise ScalingError(
                f"unknown variant {name!r} (known presets: {', '.join(sorted(presets))})"
            )
    return [presets[name] for name in chosen]
