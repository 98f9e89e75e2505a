"""Constraints and thresholds of a search: what a net must stay within to count.

:class:`Constraints` holds a config's ``constraints:`` mapping (:data:`BOUNDS`): *cheap* bounds
(``max_params``, ``max_flops``), counted from the spec alone (:mod:`searchspace.profile`) so the
searcher checks them before a candidate reaches a worker, and *measured* ones (step time, peak
memory, ``min_accuracy``), known once the trial has run. Each bound becomes an Optuna constraint,
its relative excess; :meth:`Constraints.check_space` refuses a space whose every net breaks a
cheap bound. How each kind reaches the sampler: docs/searching.md, "Constraints". This module
imports no torch at import time: a config is checked before anything heavy loads.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from nas.errors import ConfigError
from results.tables import format_cell
from searchspace.checks import check_amount, check_number, is_finite_number
from searchspace.space import SearchSpace, StageChoices
from searchspace.spec import ArchSpec, StageSpec

__all__ = ["BOUNDS", "Bound", "Constraints"]


@dataclass(frozen=True)
class Bound:
    """One kind of constraint.

    Attributes:
        metric: the record field it bounds.
        upper: an upper bound (``max_*``); else a floor (``min_*``).
        cheap: known from the spec alone, checked before training.
    """

    metric: str
    upper: bool = True
    cheap: bool = False


#: Every constraint a search config may set, by its key.
BOUNDS: dict[str, Bound] = {
    "max_params": Bound("params", cheap=True),
    "max_flops": Bound("flops", cheap=True),
    "max_step_time_ms": Bound("step_time_ms"),
    "max_step_time_norm": Bound("step_time_norm"),
    "max_peak_memory_mb": Bound("peak_memory_mb"),
    "min_accuracy": Bound("accuracy", upper=False),
}


@dataclass(frozen=True)
class Constraints:
    """The bounds a search set (none by default: every net is feasible).

    Attributes:
        bounds: constraint key (:data:`BOUNDS`) -> its value.
    """

    bounds: Mapping[str, float] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any) -> Constraints:
        """Read a config's ``constraints:`` mapping.

        Raises:
            ConfigError: not a mapping, an unknown key, or a value that is not a positive
                number (``min_accuracy``: in (0, 1]). Amounts may be written ``5e6`` or ``5M``.
        """
        if data is None:
            return cls()
        if isinstance(data, Constraints):
            return data
        if not isinstance(data, Mapping):
            raise ConfigError(f"constraints must be a mapping, got {data!r}")
        bounds = {}
        for key, value in data.items():
            if key not in BOUNDS:
                raise ConfigError(f"unknown key constraints.{key} (allowed: {', '.join(BOUNDS)})")
            name = f"constraints.{key}"
            if key == "min_accuracy":
                bounds[key] = check_number(name, value, 0.0, 1.0, ConfigError, above=True)
            else:
                bounds[key] = check_amount(name, value, ConfigError)
        return cls(bounds)

    def to_dict(self) -> dict[str, float]:
        return dict(self.bounds)

    def __bool__(self) -> bool:
        return bool(self.bounds)

    @property
    def cheap(self) -> dict[str, float]:
        """The bounds checked before training."""
        return {key: value for key, value in self.bounds.items() if BOUNDS[key].cheap}

    def describe(self) -> str:
        """``"max_params 5M (before training), max_step_time_norm 1.2"``, for logs."""
        parts = []
        for key, value in self.bounds.items():
            when = " (before training)" if BOUNDS[key].cheap else ""
            parts.append(f"{key} {format_cell(BOUNDS[key].metric, value)}{when}")
        return ", ".join(parts)

    # -- judging figures --

    def violations(
        self, figures: Mapping[str, Any], *, skip: tuple[str, ...] = ()
    ) -> dict[str, float]:
        """Each bound's relative excess over ``figures`` (> 0: broken; see the module).

        Bounds whose metric the figures lack (None, NaN: not measured) or listed in ``skip`` are
        left out.
        """
        values = {}
        for key, bound in self.bounds.items():
            value = figures.get(BOUNDS[key].metric)
            if key in skip or not is_finite_number(value):
                continue
            values[key] = value / bound - 1.0 if BOUNDS[key].upper else 1.0 - value / bound
        return values

    def of_result(self, result: Mapping[str, Any]) -> dict[str, float]:
        """:meth:`violations` of a trial's last result. One that is not ``final`` (a trial
        stopped early) is not held to ``min_accuracy``: its accuracy was still climbing."""
        return self.violations(result, skip=() if result.get("final") else ("min_accuracy",))

    def explain(self, figures: Mapping[str, Any], violations: Mapping[str, float]) -> str:
        """``"params 6.12M > max_params 5M; accuracy 41.00% < min_accuracy 50.00%"``: the
        broken bounds among ``violations``, in words; empty when none is broken."""
        parts = []
        for key, excess in violations.items():
            if excess > 0:
                metric = BOUNDS[key].metric
                shown = format_cell(metric, figures[metric])
                sign = ">" if BOUNDS[key].upper else "<"
                parts.append(
                    f"{metric} {shown} {sign} {key} {format_cell(metric, self.bounds[key])}"
                )
        return "; ".join(parts)

    # -- the cheap bounds on specs --

    def spec_figures(self, spec: ArchSpec, image_size: int) -> dict[str, int]:
        """The figures the cheap bounds need, counted without building the net's weights."""
        return {BOUNDS[key].metric: _MEASURES[key](spec, image_size) for key in self.cheap}

    def judge(self, spec: ArchSpec, image_size: int) -> tuple[dict[str, int], dict[str, float]]:
        """The cheap bounds' figures of ``spec`` and their :meth:`violations`."""
        figures = self.spec_figures(spec, image_size)
        return figures, self.violations(figures)

    def refuses(self, spec: ArchSpec, image_size: int) -> bool:
        """Whether ``spec`` breaks a cheap bound (a search never trains it)."""
        return any(excess > 0 for excess in self.judge(spec, image_size)[1].values())

    def check_space(self, space: SearchSpace, image_size: int) -> None:
        """Refuse a space whose every net breaks a cheap bound (its cheapest net does).

        Raises:
            ConfigError: naming the bound, the cheapest net's figure and that net.
        """
        for key, bound in self.cheap.items():
            measure = functools.partial(_MEASURES[key], image_size=image_size)
            cheapest = _cheapest(space, measure)
            value = measure(cheapest)
            if value > bound:
                metric = BOUNDS[key].metric
                raise ConfigError(
                    f"constraints.{key} is {format_cell(metric, bound)} but the space's "
                    f"smallest net has {format_cell(metric, value)} {metric} at "
                    f"{image_size} px ({cheapest.to_string()}): every candidate would be "
                    f"refused; raise the bound or shrink the space"
                )


def _parameters(spec: ArchSpec, image_size: int) -> int:
    from searchspace.profile import spec_parameters

    return spec_parameters(spec)


def _flops(spec: ArchSpec, image_size: int) -> int:
    from searchspace.profile import spec_flops

    return spec_flops(spec, image_size)


#: How each cheap bound's figure is counted: ``measure(spec, image_size)``.
_MEASURES: dict[str, Callable[[ArchSpec, int], int]] = {
    "max_params": _parameters,
    "max_flops": _flops,
}


def _stage_options(choices: StageChoices) -> Iterator[StageSpec]:
    """The stages that may be a stage's cheapest: per block type, its fewest repeats, smallest
    kernel, expansion and SE ratio (a block's parameters and FLOPs never fall as any of them
    grows); which block type is cheaper depends on the widths, so each is tried."""
    for block in choices.blocks:
        se_ratios = choices.se_ratios if block == "mbconv" else choices.fused_se_ratios
        yield StageSpec(
            block=block,
            repeats=choices.repeats[0],
            kernel=min(choices.kernels),
            stride=choices.stride,
            expand_ratio=min(choices.expand_ratios),
            out_channels=choices.out_channels,
            se_ratio=min(se_ratios),
        )


def _cheapest(space: SearchSpace, measure: Callable[[ArchSpec], int]) -> ArchSpec:
    """The net of ``space`` with the least ``measure``, chosen one stage at a time (a stage's
    cost does not depend on the others', so the stage-wise minima make the overall one)."""
    stages = [next(_stage_options(choices)) for choices in space.stages]
    for index, choices in enumerate(space.stages):

        def cost(stage: StageSpec, index: int = index) -> int:
            return measure(space.spec_with([*stages[:index], stage, *stages[index + 1 :]]))

        stages[index] = min(_stage_options(choices), key=cost)
    return space.spec_with(stages)
