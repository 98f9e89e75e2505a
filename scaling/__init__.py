"""Compound scaling of architecture specs: a found base grown into S/M/L or to a budget.

Pure functions from :class:`~searchspace.spec.ArchSpec` to ``ArchSpec`` (shared/REFERENCE.md
section 4): :func:`scale_spec` applies a :class:`ScalingPlan`; :class:`CompoundRule` is
EfficientNet's phi path; :data:`DEFAULT_PRESETS` are S, M and L; :func:`scale_to_budget` finds the
point on the path that meets a parameter, FLOP or step-time budget.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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
from searchspace.lazy import lazy_exports

if TYPE_CHECKING:
    from searchspace.profile import spec_flops, spec_parameters


# The measures a budget is counted in (step time comes from ``nas``), re-exported from the one
# place that counts parameters and FLOPs. They build nets with torch; loading them on first use
# keeps `import scaling` and the `nas` command's start-up free of torch.
__getattr__ = lazy_exports(
    __name__, {"spec_flops": "searchspace.profile", "spec_parameters": "searchspace.profile"}
)

__all__ = [
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
