"""Progressive learning schedules with adaptive regularization (shared/REFERENCE.md section 6).

A schedule is plain data: ``stages``, and per stage ``i`` of ``M`` an image size and a
regularization strength (RandAugment magnitude, Mixup alpha, dropout) interpolated between a
minimum and a maximum, by the paper's rule (Tan and Le 2021, Algorithm 1:
``min + (max - min) * i / (M - 1)``) or the reference code's (``min + (max - min) * (i + 1) / M``,
dropout held fixed). This module owns the S, M and L presets from the paper's table, the user's
YAML schedules (used as written), and :func:`schedule_for`, which fits a preset's ImageNet sizes
to the net being trained: the maximum at the spec's train size, the paper's ratio of minimum to
maximum, the minimum raised to :data:`SMALL_IMAGE_FLOOR` and to the net's total stride. Why the
floor: docs/training.md ("Schedules") and docs/benchmarks.md ("Does progressive learning pay?").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from nas.errors import ScheduleError
from searchspace.checks import check_bool, check_choice, check_int, check_number
from searchspace.files import load_yaml_file
from searchspace.spec import ArchSpec

__all__ = [
    "FORMULAS",
    "PRESETS",
    "SMALL_IMAGE_FLOOR",
    "ProgressiveSchedule",
    "Range",
    "StageSettings",
    "load_schedule",
    "preset_size_for",
    "schedule_for",
]

FORMULAS = ("paper", "reference")

#: The smallest first-stage image size a preset is fitted to (px), unless the maximum is smaller:
#: see the module docstring for why.
SMALL_IMAGE_FLOOR = 24


@dataclass(frozen=True)
class Range:
    """A minimum (first stage) and a maximum (last stage)."""

    min: float
    max: float

    def at(self, fraction: float) -> float:
        return self.min + (self.max - self.min) * fraction


@dataclass(frozen=True)
class StageSettings:
    """What is in force during one stage of training."""

    stage: int
    image_size: int
    randaug_magnitude: float
    mixup_alpha: float
    dropout: float


_RANGES = ("image_size", "randaug_magnitude", "mixup_alpha", "dropout")
_LIMITS = {
    "image_size": (1, None),
    "randaug_magnitude": (0, 30),  # torchvision's RandAugment has 31 magnitude bins
    "mixup_alpha": (0, None),
    "dropout": (0, 0.999),
}


@dataclass(frozen=True)
class ProgressiveSchedule:
    """M stages of training with linearly growing image size and regularization.

    Attributes:
        stages: number of stages M (4 on ImageNet in the paper).
        image_size: training image size range (px).
        randaug_magnitude: RandAugment magnitude range.
        mixup_alpha: Mixup alpha range (0 disables Mixup).
        dropout: classifier dropout range.
        formula: ``paper`` or ``reference`` (see the module docstring).
        fixed_dropout: hold dropout at its maximum in every stage (the reference code's choice).
    """

    image_size: Range
    randaug_magnitude: Range
    mixup_alpha: Range
    dropout: Range
    stages: int = 4
    formula: str = "paper"
    fixed_dropout: bool = False

    def __post_init__(self) -> None:
        check_int("stages", self.stages, 1, ScheduleError)
        check_choice("formula", self.formula, FORMULAS, ScheduleError)
        check_bool("fixed_dropout", self.fixed_dropout, ScheduleError)
        for name in _RANGES:
            value = getattr(self, name)
            low, high = _LIMITS[name]
            for end in ("min", "max"):
                check_number(f"{name}.{end}", getattr(value, end), low, high, ScheduleError)
            if value.min > value.max:
                raise ScheduleError(
                    f"{name}.min must not exceed {name}.max, got min {value.min!r} > "
                    f"max {value.max!r}"
                )

    def fraction(self, stage: int) -> float:
        """How far stage ``stage`` (0-based) sits between the minimum and the maximum."""
        if not 0 <= stage < self.stages:
            raise ValueError(f"stage must be in [0, {self.stages}), got {stage}")
        if self.formula == "paper":
            return stage / (self.stages - 1) if self.stages > 1 else 1.0
        return (stage + 1) / self.stages

    def at(self, stage: int) -> StageSettings:
        """The settings in force during stage ``stage`` (0-based)."""
        fraction = self.fraction(stage)
        dropout = self.dropout.max if self.fixed_dropout else self.dropout.at(fraction)
        return StageSettings(
            stage=stage,
            image_size=int(self.image_size.at(fraction)),
            randaug_magnitude=self.randaug_magnitude.at(fraction),
            mixup_alpha=self.mixup_alpha.at(fraction),
            dropout=dropout,
        )

    def all_stages(self) -> list[StageSettings]:
        return [self.at(stage) for stage in range(self.stages)]

    def replace(self, **changes: Any) -> ProgressiveSchedule:
        return replace(self, **changes)

    def min_image_size(self) -> int:
        return min(settings.image_size for settings in self.all_stages())

    def fit_image_size(self, max_size: int, *, floor: int = 1) -> ProgressiveSchedule:
        """This schedule with its image-size range scaled so that its maximum is ``max_size``.

        The minimum keeps its ratio to the maximum (128/300 for the paper's S), rounded to the
        nearest pixel and raised to ``floor`` if it falls below (:func:`schedule_for` passes
        the net's total stride or :data:`SMALL_IMAGE_FLOOR`, whichever is larger).
        """
        check_int("image_size", max_size, 1, ScheduleError)
        if max_size < floor:
            raise ScheduleError(
                f"image_size must be at least the net's total stride {floor}, got {max_size}"
            )
        low = max(floor, round(self.image_size.min * max_size / self.image_size.max))
        return self.replace(image_size=Range(min(low, max_size), max_size))

    # -- serial forms ---------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            data[f.name] = [value.min, value.max] if isinstance(value, Range) else value
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "schedule") -> ProgressiveSchedule:
        if not isinstance(data, Mapping):
            raise ScheduleError(f"{source}: a schedule must be a mapping, got {data!r}")
        allowed = [f.name for f in fields(cls)]
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key not in allowed:
                raise ScheduleError(
                    f"{source}: unknown key {key!s} (allowed: {', '.join(allowed)})"
                )
            if key in _RANGES:
                if isinstance(value, Mapping) and set(value) <= {"min", "max"} and len(value) == 2:
                    value = [value["min"], value["max"]]
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    value = [value, value]
                if not isinstance(value, (list, tuple)) or len(value) != 2:
                    raise ScheduleError(
                        f"{source}: {key} must be [min, max] or a single number, got {value!r}"
                    )
                value = Range(*value)
            kwargs[key] = value
        for key in _RANGES:
            if key not in kwargs:
                raise ScheduleError(f"{source}: {key} is required")
        try:
            return cls(**kwargs)
        except ScheduleError as error:
            raise ScheduleError(f"{source}: {error}") from None


def _preset(image: tuple, randaug: tuple, mixup: tuple, dropout: tuple, **extra: Any):
    return ProgressiveSchedule(
        image_size=Range(*image),
        randaug_magnitude=Range(*randaug),
        mixup_alpha=Range(*mixup),
        dropout=Range(*dropout),
        **extra,
    )


#: The paper's table (shared/REFERENCE.md section 6) and the reference code's variant, where S
#: uses RandAugment 5 -> 10, the first stage sits above the minimum and dropout is held fixed.
PRESETS: dict[str, dict[str, ProgressiveSchedule]] = {
    "paper": {
        "s": _preset((128, 300), (5, 15), (0, 0), (0.1, 0.3)),
        "m": _preset((128, 380), (5, 20), (0, 0.2), (0.1, 0.4)),
        "l": _preset((128, 380), (5, 25), (0, 0.4), (0.1, 0.5)),
    },
    "reference": {
        "s": _preset((128, 300), (5, 10), (0, 0), (0.1, 0.3), formula="reference",
                     fixed_dropout=True),
        "m": _preset((128, 380), (5, 20), (0, 0.2), (0.1, 0.4), formula="reference",
                     fixed_dropout=True),
        "l": _preset((128, 380), (5, 25), (0, 0.4), (0.1, 0.5), formula="reference",
                     fixed_dropout=True),
    },
}  # fmt: skip


def load_schedule(name_or_path: str, size: str = "s") -> ProgressiveSchedule:
    """A preset (``paper`` or ``reference``, for net size ``s``, ``m`` or ``l``) or a YAML file."""
    if name_or_path in PRESETS:
        presets = PRESETS[name_or_path]
        check_choice("size", size, presets, ScheduleError)
        return presets[size]
    path = Path(name_or_path)
    if not path.exists():
        raise ScheduleError(
            f"--progressive {name_or_path!r} is neither a preset "
            f"({', '.join(PRESETS)}, off) nor an existing YAML file"
        )
    data = load_yaml_file(path, "schedule", ScheduleError)
    return ProgressiveSchedule.from_dict(data, source=str(path))


def preset_size_for(spec: ArchSpec) -> str:
    """The preset column (``s``, ``m`` or ``l``) for a spec.

    A spec grown by ``nas scale`` names its variant in its lineage; a catalog net ends its name in
    its size (``efficientnetv2-m``). XL takes L's column (the largest); anything else, S's.
    """
    candidates = [spec.lineage.variant if spec.lineage is not None else "", spec.name]
    for text in candidates:
        word = text.lower().replace("_", "-").rsplit("-", 1)[-1]
        if word in ("s", "m", "l"):
            return word
        if word == "xl":
            return "l"
    return "s"


def schedule_for(
    spec: ArchSpec,
    progressive: str = "paper",
    *,
    stages: int | None = None,
    image_size: int | None = None,
    size: str | None = None,
) -> ProgressiveSchedule:
    """The schedule ``nas train --progressive`` means for ``spec``.

    Args:
        spec: the net to train; its ``train_resolution`` is the default largest image size and its
            total stride the smallest allowed.
        progressive: ``paper`` or ``reference`` (a preset, fitted to the image size, its first
            stage at least :data:`SMALL_IMAGE_FLOOR` px: see the module docstring), ``off``
            (one stage: fixed image size, regularization at the preset's maximum throughout),
            or the path of a YAML schedule.
        stages: overrides the number of stages (not with ``off``).
        image_size: the largest training image size for a preset, the fixed one for ``off``;
            ``None`` means the spec's ``train_resolution``. A YAML file gives its own sizes.
        size: the preset column ``s``, ``m`` or ``l``; ``None`` picks it with
            :func:`preset_size_for`.

    Raises:
        ScheduleError: an unknown preset or bad file, a bad override, or a stage whose image size
            is below the net's total stride.
    """
    stride = spec.total_stride
    if size is not None and size not in PRESETS["paper"]:
        raise ScheduleError(f"schedule size must be one of s, m, l, got {size!r}")
    size = size or preset_size_for(spec)
    if progressive == "off":
        if stages is not None:
            raise ScheduleError("--stages does not apply to --progressive off (one stage)")
        fixed = spec.train_resolution if image_size is None else image_size
        schedule = PRESETS["paper"][size].replace(stages=1, image_size=Range(fixed, fixed))
    elif progressive in PRESETS:
        largest = spec.train_resolution if image_size is None else image_size
        floor = max(stride, min(SMALL_IMAGE_FLOOR, largest))
        schedule = PRESETS[progressive][size].fit_image_size(largest, floor=floor)
    else:
        if image_size is not None:
            raise ScheduleError(
                f"--image-size does not apply to a schedule file ({progressive}); "
                "the file gives the image sizes"
            )
        schedule = load_schedule(progressive)
    if stages is not None:
        schedule = schedule.replace(stages=stages)
    for settings in schedule.all_stages():
        if settings.image_size < stride:
            raise ScheduleError(
                f"image size {settings.image_size} of stage {settings.stage + 1} is below the "
                f"net's total stride {stride}"
            )
    return schedule
