"""Compound scaling: pure functions from a base :class:`~searchspace.spec.ArchSpec` to a bigger one.

A :class:`ScalingPlan` holds the coefficients (width, depth, resolution) and EfficientNetV2's
rules for growing a net (an eval-size cap, extra depth for the later stages, regularization that
grows with size); :func:`scale_spec` applies a plan to a base. :class:`CompoundRule` is
EfficientNet's one-knob path: width = beta^phi, depth = alpha^phi, resolution = gamma^phi
(Tan and Le 2019, eq. 3; shared/REFERENCE.md section 4).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from scaling.errors import ScalingError
from scaling.rounding import round_filters, round_repeats, round_resolution
from searchspace.checks import check_int, check_number, check_string
from searchspace.spec import ArchSpec, Lineage

__all__ = [
    "DROPOUT_STEPS",
    "MAX_EVAL_RESOLUTION",
    "CompoundRule",
    "ScalingPlan",
    "dropout_for_depth",
    "scale_spec",
]

#: EfficientNetV2's cap on the inference image size when growing into M and L (paper, sec. 4.2):
#: bigger images cost memory and step time for little accuracy.
MAX_EVAL_RESOLUTION = 480

#: Classifier dropout added to the base's as depth grows: (depth at least, added dropout). Read off
#: the published B-series (automl ``effnetv2_configs.py``: V2 B0..B3, and V1 B0..B7 with the same
#: coefficients): depth 1.0-1.1 keeps 0.2, 1.2-1.4 gives 0.3, 1.8-2.2 gives 0.4, 2.6-3.1 gives 0.5.
DROPOUT_STEPS: tuple[tuple[float, float], ...] = ((1.2, 0.1), (1.8, 0.2), (2.6, 0.3))

#: Dropout that the depth rule never goes past (the published family's largest), unless the
#: base already had more.
_DROPOUT_CEILING = 0.5


def dropout_for_depth(base_dropout: float, depth: float) -> float:
    """Classifier dropout for a net grown from a base by ``depth``, as the B-series grows it.

    The published family steps dropout up with size (:data:`DROPOUT_STEPS`); a base trained with
    0.2 gets exactly the published values. Never above 0.5 unless the base was.
    """
    added = 0.0
    for threshold, step in DROPOUT_STEPS:
        # A small slack so that a depth of 1.2 computed as 1.2^1 or 1.1999999 counts as 1.2.
        if depth >= threshold - 1e-9:
            added = step
    return round(min(base_dropout + added, max(base_dropout, _DROPOUT_CEILING)), 6)


def _coefficient(where: str, value: Any) -> float:
    return check_number(where, value, 0.0, error=ScalingError, above=True)


@dataclass(frozen=True)
class ScalingPlan:
    """How to grow a base: coefficients plus EfficientNetV2's growth rules. Plain, frozen data.

    Attributes:
        width: channel multiplier (stem, every stage and the head; rounded by the spec's divisor).
        depth: repeat multiplier for every stage (rounded up).
        resolution: image-size multiplier for both train and eval sizes.
        train_resolution: an explicit training image size; overrides ``resolution``.
        eval_resolution: an explicit eval image size; overrides ``resolution``. With only one of
            the two given, the other keeps the base's train/eval ratio.
        late_depth: extra repeat multiplier for the last ``late_stages`` stages only (V2 gives the
            extra layers of M and L to the later stages, paper sec. 4.2); 1 = none.
        late_stages: how many of the last stages get ``late_depth``.
        max_eval_resolution: cap on the eval size (V2's 480); the training size shrinks by the
            same factor so that the base's train/eval ratio holds. None = no cap.
        dropout: classifier dropout of the result; None = the base's, grown with depth as the
            published family does (:func:`dropout_for_depth`).
        drop_path_rate: stochastic depth rate of the result; None = the base's. The published
            family holds it at 0.2 (survival probability 0.8) for every size.
        channel_divisor: channels round to multiples of this; None = the base spec's.
        channel_round_limit: V1's 90% rule (0.9) or none (0); None = the base spec's.
        resolution_divisor: image sizes round to multiples of this.
        phi: the compound coefficient the plan came from, if any (recorded in the lineage).
        variant: a label for the result (preset name, budget), recorded in the lineage.
    """

    width: float = 1.0
    depth: float = 1.0
    resolution: float = 1.0
    train_resolution: int | None = None
    eval_resolution: int | None = None
    late_depth: float = 1.0
    late_stages: int = 2
    max_eval_resolution: int | None = None
    dropout: float | None = None
    drop_path_rate: float | None = None
    channel_divisor: int | None = None
    channel_round_limit: float | None = None
    resolution_divisor: int = 4
    phi: float | None = None
    variant: str = ""

    def __post_init__(self) -> None:
        for name in ("width", "depth", "resolution"):
            object.__setattr__(self, name, _coefficient(name, getattr(self, name)))
        # late_depth adds depth to the late stages: below 1 it would take some away.
        late = check_number("late_depth", self.late_depth, 1.0, error=ScalingError)
        object.__setattr__(self, "late_depth", late)
        check_int("late_stages", self.late_stages, 0, ScalingError)
        check_int("resolution_divisor", self.resolution_divisor, 1, ScalingError)
        for name in ("train_resolution", "eval_resolution", "max_eval_resolution"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), 1, ScalingError)
        if self.channel_divisor is not None:
            check_int("channel_divisor", self.channel_divisor, 1, ScalingError)
        for name in ("dropout", "drop_path_rate", "channel_round_limit"):
            if getattr(self, name) is not None:
                rate = check_number(name, getattr(self, name), 0.0, 1.0, ScalingError, below=True)
                object.__setattr__(self, name, rate)
        if self.phi is not None:
            object.__setattr__(self, "phi", check_number("phi", self.phi, error=ScalingError))
        check_string("variant", self.variant, ScalingError)

    def replace(self, **changes: Any) -> ScalingPlan:
        """A copy with ``changes`` applied and validated."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "plan") -> ScalingPlan:
        """A plan from a mapping of its fields; unknown keys are errors.

        Raises:
            ScalingError: naming ``where.field`` and the bad value.
        """
        if not isinstance(data, Mapping):
            raise ScalingError(f"{where} must be a mapping of plan fields, got {data!r}")
        names = [f.name for f in fields(cls)]
        for key in data:
            if key not in names:
                raise ScalingError(f"unknown key {where}.{key} (allowed: {', '.join(names)})")
        try:
            return cls(**data)
        except ScalingError as error:
            raise ScalingError(f"{where}.{error}") from None


@dataclass(frozen=True)
class CompoundRule:
    """EfficientNet's compound scaling: one coefficient phi moves width, depth and resolution.

    depth = alpha^phi, width = beta^phi, resolution = gamma^phi; with alpha * beta^2 * gamma^2
    ~= 2 each unit of phi roughly doubles FLOPs. The defaults are EfficientNet's grid-searched
    1.2, 1.1, 1.15 (Tan and Le 2019, sec. 3.3).
    """

    alpha: float = 1.2
    beta: float = 1.1
    gamma: float = 1.15

    def __post_init__(self) -> None:
        for name in ("alpha", "beta", "gamma"):
            object.__setattr__(self, name, _coefficient(name, getattr(self, name)))

    @property
    def flops_per_phi(self) -> float:
        """FLOPs multiplier of one unit of phi: alpha * beta^2 * gamma^2."""
        return self.alpha * self.beta**2 * self.gamma**2

    def coefficients(self, phi: float) -> tuple[float, float, float]:
        """(width, depth, resolution) at ``phi``."""
        return self.beta**phi, self.alpha**phi, self.gamma**phi

    def plan(self, phi: float, **rules: Any) -> ScalingPlan:
        """The :class:`ScalingPlan` at ``phi``, with the eval-size cap of V2 unless ``rules``
        say otherwise (any other plan field may be passed too)."""
        check_number("phi", phi, error=ScalingError)
        width, depth, resolution = self.coefficients(phi)
        rules.setdefault("max_eval_resolution", MAX_EVAL_RESOLUTION)
        rules.setdefault("variant", f"phi{phi:g}")
        return ScalingPlan(width=width, depth=depth, resolution=resolution, phi=phi, **rules)


def _image_sizes(base: ArchSpec, plan: ScalingPlan) -> tuple[int, int]:
    divisor = plan.resolution_divisor
    train, evaluation = plan.train_resolution, plan.eval_resolution
    if train is None and evaluation is None:
        factor = plan.resolution
        if plan.max_eval_resolution is not None:
            # V2's cap: above it, grow the net's width and depth but not its images.
            factor = min(factor, plan.max_eval_resolution / base.eval_resolution)
        return (
            round_resolution(base.train_resolution, factor, divisor),
            round_resolution(base.eval_resolution, factor, divisor),
        )
    if evaluation is None:
        evaluation = round_resolution(base.eval_resolution, train / base.train_resolution, divisor)
    elif train is None:
        train = round_resolution(base.train_resolution, evaluation / base.eval_resolution, divisor)
    if plan.max_eval_resolution is not None and evaluation > plan.max_eval_resolution:
        shrink = plan.max_eval_resolution / evaluation
        train = round_resolution(train, shrink, divisor)
        evaluation = plan.max_eval_resolution
    return train, evaluation


def scale_spec(base: ArchSpec, plan: ScalingPlan, name: str | None = None) -> ArchSpec:
    """The base grown by ``plan``: a new, validated spec that records its lineage.

    Channels (stem, stages, head) use :func:`~scaling.rounding.round_filters` with the spec's
    divisor and round limit; repeats use :func:`~scaling.rounding.round_repeats`, with
    ``depth * late_depth`` for the last ``late_stages`` stages. Block types, kernels, strides,
    expansion and SE ratios are the base's. The base is not changed.

    Args:
        base: the spec to grow.
        plan: coefficients and rules.
        name: the result's name; default ``<base label>-<variant>`` (or ``-scaled``).

    Raises:
        ScalingError: the plan does not fit the base (``late_stages`` beyond its stages).
        SpecError: the result is not a valid spec (e.g. an image size below the total stride).
    """
    stages = base.stages
    if plan.late_depth != 1.0 and plan.late_stages > len(stages):
        raise ScalingError(
            f"late_stages must be at most the base's {len(stages)} stages, got {plan.late_stages}"
        )
    divisor = base.channel_divisor if plan.channel_divisor is None else plan.channel_divisor
    limit = (
        base.channel_round_limit if plan.channel_round_limit is None else plan.channel_round_limit
    )
    late_from = len(stages) - plan.late_stages if plan.late_depth != 1.0 else len(stages)

    def channels(count: int) -> int:
        return round_filters(count, plan.width, divisor, limit)

    scaled_stages = tuple(
        dataclasses.replace(
            stage,
            out_channels=channels(stage.out_channels),
            # The product depth * late_depth is 'depth' itself when late_depth is 1, so stages
            # without extra depth round exactly as the reference code does.
            repeats=round_repeats(
                stage.repeats, plan.depth * plan.late_depth if index >= late_from else plan.depth
            ),
        )
        for index, stage in enumerate(stages)
    )
    train, evaluation = _image_sizes(base, plan)
    dropout = dropout_for_depth(base.dropout, plan.depth) if plan.dropout is None else plan.dropout
    drop_path = base.drop_path_rate if plan.drop_path_rate is None else plan.drop_path_rate
    if name is None:
        name = f"{base.label}-{plan.variant or 'scaled'}"
    lineage = Lineage(
        base_hash=base.hash,
        base_name=base.name,
        width=plan.width,
        depth=plan.depth,
        resolution=round(evaluation / base.eval_resolution, 6),
        variant=plan.variant,
        phi=plan.phi,
        late_depth=plan.late_depth,
        late_stages=plan.late_stages if plan.late_depth != 1.0 else 0,
    )
    return base.replace(
        stages=scaled_stages,
        stem_channels=channels(base.stem_channels),
        head_channels=channels(base.head_channels),
        dropout=dropout,
        drop_path_rate=drop_path,
        train_resolution=train,
        eval_resolution=evaluation,
        channel_divisor=divisor,
        channel_round_limit=limit,
        name=name,
        lineage=lineage,
    )
