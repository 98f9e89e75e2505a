"""Budget scaling: the point on the compound path whose parameters, FLOPs or step time hit a target.

:func:`scale_to_budget` walks :class:`~scaling.compound.CompoundRule`'s path (phi >= 0), on which
every budget is a non-decreasing step function of phi because of rounding: it brackets and
bisects phi, checks the distinct specs on either side of the step that crosses the target,
refines width alone when no point of the path lies within the tolerance, measures each distinct
spec once (``confirm=n`` re-measures the nearest few of a noisy measure and takes medians), and
returns the closest spec as a :class:`BudgetResult`. The algorithm step by step, and why:
docs/scaling.md ("How a budget is found").
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from scaling.compound import CompoundRule, ScalingPlan, scale_spec
from scaling.errors import ScalingError
from searchspace.checks import check_number
from searchspace.spec import ArchSpec

__all__ = ["BudgetResult", "Measure", "scale_to_budget"]

#: A budget's measure: a spec in, a number out (parameters, FLOPs, milliseconds per step).
Measure = Callable[[ArchSpec], float]

_PHI_PRECISION = 1e-4
_WIDTH_PRECISION = 1e-4


@dataclass(frozen=True)
class BudgetResult:
    """The spec a budget search chose, and how close it came.

    Attributes:
        spec: the chosen spec (its lineage records the coefficients and the budget).
        value: the measure of ``spec``.
        target: the budget asked for.
        metric: the measure's name (``params``, ``flops``, ``step_ms``).
        base_value: the measure at phi = 0 (the base as the path starts).
        on_path: whether ``spec`` lies on the compound path (False after width refinement).
        evaluations: how many distinct specs were measured.
        measurements: how many times ``measure`` was called (more with ``confirm``).
    """

    spec: ArchSpec
    value: float
    target: float
    metric: str
    base_value: float
    on_path: bool
    evaluations: int
    measurements: int

    @property
    def relative_error(self) -> float:
        """(value - target) / target: signed, so -0.02 means 2% under the budget."""
        return (self.value - self.target) / self.target


class _Search:
    """Measured points of one search, cached by spec hash."""

    def __init__(
        self, base: ArchSpec, target: float, measure: Measure, variant: str, tolerance: float
    ) -> None:
        self.base = base
        self.target = target
        self.tolerance = tolerance
        self.measure = measure
        self.variant = variant
        self.values: dict[str, float] = {}  # the median of each spec's samples
        self.samples: dict[str, list[float]] = {}
        self.specs: dict[str, ArchSpec] = {}
        self.plans: dict[str, ScalingPlan] = {}

    def spec(self, plan: ScalingPlan) -> ArchSpec:
        return scale_spec(self.base, plan.replace(variant=self.variant))

    def _sample(self, key: str) -> None:
        spec = self.specs[key]
        value = float(self.measure(spec))
        if not math.isfinite(value) or value <= 0:
            raise ScalingError(f"the measure returned {value!r} for {spec.label}")
        self.samples[key].append(value)
        self.values[key] = statistics.median(self.samples[key])

    def value(self, plan: ScalingPlan) -> float:
        spec = self.spec(plan)
        key = spec.hash
        if key not in self.values:
            self.specs[key] = spec
            self.plans[key] = plan
            self.samples[key] = []
            self._sample(key)
        return self.values[key]

    def confirm(self, repeats: int) -> None:
        """Measure the specs nearest the target ``repeats`` more times; judge them by the median.

        A noisy measure (a step time on a shared machine) can make a spec look closer to the
        target than it is; one lucky sample must not decide the result.
        """
        if repeats <= 0:
            return
        # Until the best is itself confirmed: re-measuring can move a finalist away and leave an
        # unconfirmed spec closest. Each round adds samples, and a spec has at most 1 + repeats.
        while len(self.samples[self.best()]) < 1 + repeats:
            finalists = sorted(self.values, key=self.error)[:4]
            for key in finalists:
                if key == finalists[0] or self.error(key) <= 3 * self.tolerance:
                    while len(self.samples[key]) < 1 + repeats:
                        self._sample(key)

    def error(self, key: str) -> float:
        return abs(self.values[key] - self.target) / self.target

    def best(self) -> str:
        return min(self.values, key=self.error)

    def bisect(
        self, make: Callable[[float], ScalingPlan], low: float, high: float, precision: float
    ) -> tuple[float, float]:
        """Narrow [low, high], with value(low) < target <= value(high), to the crossing step."""
        good_enough = self.tolerance / 4
        while high - low > precision * max(1.0, abs(high)):
            middle = (low + high) / 2
            if self.value(make(middle)) < self.target:
                low = middle
            else:
                high = middle
            if self.error(self.best()) <= good_enough:
                break
        return low, high

    def neighbour(self, make: Callable[[float], ScalingPlan], start: float, step: float) -> None:
        """Measure the next distinct spec from ``start`` in the direction of ``step``."""
        here = self.spec(make(start)).hash
        point = start
        for _ in range(20):
            point += step
            if point < 0:
                return
            if self.spec(make(point)).hash != here:
                self.value(make(point))
                return
            step *= 2


def scale_to_budget(
    base: ArchSpec,
    target: float,
    measure: Measure,
    *,
    metric: str = "params",
    label: str | None = None,
    rule: CompoundRule | None = None,
    tolerance: float = 0.05,
    max_phi: float = 12.0,
    rules: Mapping[str, Any] | None = None,
    confirm: int = 0,
) -> BudgetResult:
    """Grow ``base`` along the compound path until ``measure`` is within ``tolerance`` of target.

    Args:
        base: the spec to grow.
        target: the budget, in the measure's unit (parameters, FLOPs, ms).
        measure: spec -> number; non-decreasing along the path (parameters, FLOPs) or nearly so
            (a measured step time).
        metric: the budget's name, for messages.
        label: the results' variant label in the lineage and name; default ``<metric><target>``.
        rule: alpha, beta, gamma of the path (EfficientNet's by default).
        tolerance: the largest acceptable relative error.
        max_phi: how far along the path to look.
        rules: other :class:`~scaling.compound.ScalingPlan` fields for every point (e.g.
            ``max_eval_resolution``; V2's 480 cap by default).
        confirm: for a noisy measure, how many more times to measure the specs nearest the
            target before choosing (each is then judged by the median of its samples); 0 for
            exact measures such as parameters and FLOPs.

    Returns:
        The closest spec found, within ``tolerance``.

    Raises:
        ScalingError: the target is not positive, is below the base, or no spec on (or near)
            the path up to ``max_phi`` comes within ``tolerance``.
    """
    check_number(f"--target-{metric}", target, 0.0, error=ScalingError, above=True)
    check_number("tolerance", tolerance, 0.0, 1.0, ScalingError, above=True, below=True)
    rule = rule or CompoundRule()
    rules = dict(rules or {})
    search = _Search(base, float(target), measure, label or f"{metric}{target:g}", tolerance)

    def on_path(phi: float) -> ScalingPlan:
        return rule.plan(phi, **rules)

    base_value = search.value(on_path(0.0))
    if target < base_value * (1 - tolerance):
        raise ScalingError(
            f"--target-{metric} {target:g} is below the base's {base_value:g}: "
            "scaling only grows a net"
        )

    low = high = 0.0
    # Search unless the base itself is already as close as bisection would stop at.
    if search.error(search.best()) > tolerance / 4:
        low, high = _bracket(search, on_path, max_phi, metric)
        low, high = search.bisect(on_path, low, high, _PHI_PRECISION)
        search.neighbour(on_path, low, -_PHI_PRECISION)
        search.neighbour(on_path, high, _PHI_PRECISION)
    search.confirm(confirm)

    on_path_keys = set(search.values)
    if search.error(search.best()) > tolerance:
        _refine_width(search, on_path(low), on_path(high))
        search.confirm(confirm)

    return _result(search, base, metric, base_value, on_path_keys)


def _result(
    search: _Search, base: ArchSpec, metric: str, base_value: float, on_path_keys: set[str]
) -> BudgetResult:
    """The closest spec found, if it is within tolerance."""
    key, target = search.best(), search.target
    if search.error(key) > search.tolerance:
        raise ScalingError(
            f"--target-{metric} {target:g}: the nearest spec found has {search.values[key]:g} "
            f"({(search.values[key] - target) / target:+.1%}), "
            f"outside the {search.tolerance:.0%} tolerance"
        )
    spec, plan = search.specs[key], search.plans[key]
    if key not in on_path_keys:
        # Off the path after width refinement: say so in the lineage rather than claim a phi.
        spec = scale_spec(base, plan.replace(phi=None, variant=search.variant))
    return BudgetResult(
        spec=spec,
        value=search.values[key],
        target=target,
        metric=metric,
        base_value=base_value,
        on_path=key in on_path_keys,
        evaluations=len(search.values),
        measurements=sum(len(samples) for samples in search.samples.values()),
    )


def _bracket(
    search: _Search, on_path: Callable[[float], ScalingPlan], max_phi: float, metric: str
) -> tuple[float, float]:
    """Double phi from 1 until the measure reaches the target: ``(below, at or above)``."""
    low, high = 0.0, 1.0
    while search.value(on_path(high)) < search.target:
        if high >= max_phi:
            raise ScalingError(
                f"--target-{metric} {search.target:g} is out of reach: phi {max_phi:g} gives "
                f"{search.values[search.spec(on_path(high)).hash]:g}"
            )
        low, high = high, min(2 * high, max_phi)
    return low, high


def _refine_width(search: _Search, below: ScalingPlan, above: ScalingPlan) -> None:
    """Bisect width alone at the depth and resolution of the specs on each side of the step."""
    target = search.target
    for plan in (below, above):
        width = plan.width

        def with_width(value: float, plan: ScalingPlan = plan) -> ScalingPlan:
            return plan.replace(width=value)

        if search.value(plan) < target:
            low, high = width, width * 1.25
            while search.value(with_width(high)) < target and high < 4 * width:
                low, high = high, high * 1.25
        else:
            low, high = width / 1.25, width
            while search.value(with_width(low)) >= target and low > width / 4:
                low, high = low / 1.25, low
        if search.value(with_width(low)) < target <= search.value(with_width(high)):
            search.bisect(with_width, low, high, _WIDTH_PRECISION)
        if search.error(search.best()) <= search.tolerance:
            return
