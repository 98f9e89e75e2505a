"""Compound scaling of architecture specs: a found base grown into S/M/L or to a budget.

Pure functions from :class:`~searchspace.spec.ArchSpec` to ``ArchSpec`` (shared/REFERENCE.md
section 4): :func:`scale_spec` applies a :class:`ScalingPlan`; :class:`CompoundRule` is
EfficientNet's phi path; :data:`DEFAULT_PRESETS` are S, M and L; :func:`scale_to_budget` finds the
point on the path that meets a parameter, FLOP or step-time budget.

Importing the package registers ``efficientnetv2-b1``..``-b3`` in the catalog, defined as B0 grown
by their published coefficients (automl ``effnetv2_configs.py``), not as copied tables.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from scaling.budget import BudgetResult, Measure, scale_to_budget
from scaling.compound import (
    DROPOUT_STEPS,
    MAX_EVAL_RESOLUTION,
    CompoundRule,
    ScalingPlan,
    dropout_for_depth,
    scale_spec,
)
from scaling.errors import ScalingError
from scaling.presets import DEFAULT_PRESETS, load_presets, resolve_variants
from scaling.rounding import round_filters, round_repeats, round_resolution
from searchspace.catalog import load_arch, register_derived
from searchspace.spec import ArchSpec

if TYPE_CHECKING:
    from scaling.measures import spec_flops, spec_parameters


def __getattr__(name: str) -> Any:
    # The measures build nets with torch; loading them on first use keeps `import scaling` (which
    # the catalog does to list B1..B3) and the `nas` command's start-up free of torch.
    if name in ("spec_flops", "spec_parameters"):
        value = getattr(importlib.import_module("scaling.measures"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'scaling' has no attribute {name!r}")


__all__ = [
    "B_SERIES",
    "DEFAULT_PRESETS",
    "DROPOUT_STEPS",
    "MAX_EVAL_RESOLUTION",
    "BudgetResult",
    "CompoundRule",
    "Measure",
    "ScalingError",
    "ScalingPlan",
    "dropout_for_depth",
    "load_presets",
    "resolve_variants",
    "round_filters",
    "round_repeats",
    "round_resolution",
    "scale_spec",
    "scale_to_budget",
    "spec_flops",
    "spec_parameters",
]

#: EfficientNetV2-B1..B3 as B0 plus (width, depth, train size, eval size), from the reference
#: code's ``efficientnetv2_params``. Dropout (0.2, 0.3, 0.3) follows from depth by
#: :func:`dropout_for_depth`; the tests check it against the published values.
B_SERIES: dict[str, tuple[float, float, int, int]] = {
    "b1": (1.0, 1.1, 192, 240),
    "b2": (1.1, 1.2, 208, 260),
    "b3": (1.2, 1.4, 240, 300),
}


def _b_series(variant: str) -> ArchSpec:
    width, depth, train, evaluation = B_SERIES[variant]
    plan = ScalingPlan(
        width=width,
        depth=depth,
        train_resolution=train,
        eval_resolution=evaluation,
        variant=variant,
    )
    return scale_spec(load_arch("efficientnetv2-b0"), plan, name=f"efficientnetv2-{variant}")


for _variant in B_SERIES:
    register_derived(f"efficientnetv2-{_variant}", lambda v=_variant: _b_series(v))
