"""The search space: which architectures a search may sample (shared/REFERENCE.md section 5).

The space is stage-based and factorized, after MnasNet and EfficientNetV2: the backbone fixes each
stage's output channels and stride (the paper reuses the backbone's channel sizes rather than
searching them); per stage the search picks the conv op (MBConv or Fused-MBConv), the number of
layers, the kernel size, the expansion ratio and, where the space allows it, SE.

:meth:`SearchSpace.suggest` draws an :class:`ArchSpec` from an Optuna trial (define-by-run, so
TPE, NSGA-II and random sampling all work unchanged); :meth:`SearchSpace.sample` draws one with a
plain random generator, for baselines and benchmarks; :meth:`SearchSpace.all_specs` lists every
spec a sampler can draw, for a space small enough to train whole (a recorded benchmark).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

from searchspace.errors import SpecError
from searchspace.spec import BLOCK_TYPES, ArchSpec, StageSpec

__all__ = ["SearchSpace", "StageChoices"]


class _Trial(Protocol):
    """The part of ``optuna.Trial`` that the space uses."""

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...

    def suggest_int(self, name: str, low: int, high: int) -> int: ...


def _choices(where: str, value: Any, check) -> tuple:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) == 0:
        raise SpecError(f"{where} must be a non-empty list, got {value!r}")
    for item in value:
        check(item)
    if len(set(value)) != len(value):
        raise SpecError(f"{where} has repeated choices: {list(value)!r}")
    return tuple(value)


@dataclass(frozen=True)
class StageChoices:
    """What one stage may be. Channels and stride are fixed by the backbone.

    Attributes:
        out_channels: the stage's output width (from the backbone).
        stride: 1 or 2 (from the backbone).
        repeats: inclusive ``(low, high)`` range of layer counts.
        blocks: allowed block types.
        kernels: allowed (odd) kernel sizes.
        expand_ratios: allowed expansion ratios.
        se_ratios: allowed SE ratios for MBConv blocks (0 = no SE).
        fused_se_ratios: allowed SE ratios for Fused-MBConv blocks (the published nets use none).
    """

    out_channels: int
    stride: int
    repeats: tuple[int, int]
    blocks: tuple[str, ...] = BLOCK_TYPES
    kernels: tuple[int, ...] = (3, 5)
    expand_ratios: tuple[float, ...] = (1.0, 4.0, 6.0)
    se_ratios: tuple[float, ...] = (0.25,)
    fused_se_ratios: tuple[float, ...] = (0.0,)

    def validate(self, where: str) -> None:
        # A probe StageSpec validates every single value the way a built spec would.
        def probe(**overrides: Any) -> None:
            base = {
                "block": "mbconv",
                "repeats": 1,
                "kernel": 3,
                "stride": self.stride,
                "expand_ratio": 1,
                "out_channels": self.out_channels,
                "se_ratio": 0.0,
            }
            try:
                StageSpec(**{**base, **overrides})
            except SpecError as error:
                raise SpecError(str(error).replace("stage.", f"{where}.", 1)) from None

        probe()
        low_high = self.repeats
        if (
            isinstance(low_high, (str, bytes))
            or not isinstance(low_high, Sequence)
            or len(low_high) != 2
        ):
            raise SpecError(f"{where}.repeats must be [low, high], got {low_high!r}")
        low, high = low_high
        probe(repeats=low)
        probe(repeats=high)
        if low > high:
            raise SpecError(f"{where}.repeats low must not exceed high, got {list(low_high)!r}")
        _choices(f"{where}.blocks", self.blocks, lambda b: probe(block=b))
        _choices(f"{where}.kernels", self.kernels, lambda k: probe(kernel=k))
        _choices(f"{where}.expand_ratios", self.expand_ratios, lambda e: probe(expand_ratio=e))
        _choices(f"{where}.se_ratios", self.se_ratios, lambda s: probe(se_ratio=s))
        _choices(f"{where}.fused_se_ratios", self.fused_se_ratios, lambda s: probe(se_ratio=s))

    @property
    def size(self) -> int:
        """Number of distinct stages this allows."""
        per_block = {
            "mbconv": len(self.se_ratios),
            "fused": len(self.fused_se_ratios),
        }
        options = sum(per_block[b] for b in self.blocks)
        repeats = self.repeats[1] - self.repeats[0] + 1
        return options * repeats * len(self.kernels) * len(self.expand_ratios)


_STAGE_KEYS = [f.name for f in fields(StageChoices)]
_ARCH_DEFAULTS = {f.name: f.default for f in fields(ArchSpec)}
#: ArchSpec fields a space fixes for every spec it samples (everything but the stages).
_FIXED_FIELDS = (
    "stem_channels", "head_channels", "num_classes", "dropout", "drop_path_rate",
    "train_resolution", "eval_resolution", "bn_eps", "bn_momentum",
)  # fmt: skip
_SHARED_KEYS = ["blocks", "kernels", "expand_ratios", "se_ratios", "fused_se_ratios"]


@dataclass(frozen=True)
class SearchSpace:
    """A factorized, stage-based space over :class:`ArchSpec`.

    Everything but the per-stage choices (stem and head widths, dropout, resolutions, BN settings)
    is fixed by the space's own fields and copied into every sampled spec.
    """

    stem_channels: int
    stages: tuple[StageChoices, ...]
    # The fixed fields default to ArchSpec's own defaults, so the two cannot drift apart.
    head_channels: int = _ARCH_DEFAULTS["head_channels"]
    num_classes: int = _ARCH_DEFAULTS["num_classes"]
    dropout: float = _ARCH_DEFAULTS["dropout"]
    drop_path_rate: float = _ARCH_DEFAULTS["drop_path_rate"]
    train_resolution: int = _ARCH_DEFAULTS["train_resolution"]
    eval_resolution: int = _ARCH_DEFAULTS["eval_resolution"]
    bn_eps: float = _ARCH_DEFAULTS["bn_eps"]
    bn_momentum: float = _ARCH_DEFAULTS["bn_momentum"]
    name: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.stages:
            raise SpecError("space.stages must hold at least one stage, got an empty list")
        for index, stage in enumerate(self.stages):
            stage.validate(f"space.stages[{index}]")
        # Validate the fixed fields by building the smallest spec in the space.
        try:
            self.spec_with(
                [
                    StageSpec(
                        block=s.blocks[0],
                        repeats=s.repeats[0],
                        kernel=s.kernels[0],
                        stride=s.stride,
                        expand_ratio=s.expand_ratios[0],
                        out_channels=s.out_channels,
                    )
                    for s in self.stages
                ]
            )
        except SpecError as error:
            raise SpecError(f"space: {error}") from None

    # -- construction from data -----------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchSpace:
        """Build from the ``space:`` mapping of a search config.

        Lists ``blocks``, ``kernels``, ``expand_ratios``, ``se_ratios`` and ``fused_se_ratios``
        given at the top level apply to every stage; a stage may override any of them.
        """
        if not isinstance(data, Mapping):
            raise SpecError(f"space must be a mapping, got {data!r}")
        top_keys = [f.name for f in fields(cls)] + _SHARED_KEYS
        for key in data:
            if key not in top_keys:
                raise SpecError(f"unknown key space.{key} (allowed: {', '.join(top_keys)})")
        for key in ("stem_channels", "stages"):
            if key not in data:
                raise SpecError(f"space.{key} is required")
        raw_stages = data["stages"]
        if isinstance(raw_stages, (str, bytes, Mapping)) or not isinstance(raw_stages, Sequence):
            raise SpecError(f"space.stages must be a list, got {raw_stages!r}")
        shared = {key: data[key] for key in _SHARED_KEYS if key in data}
        stages = []
        for index, raw in enumerate(raw_stages):
            where = f"space.stages[{index}]"
            if not isinstance(raw, Mapping):
                raise SpecError(f"{where} must be a mapping, got {raw!r}")
            for key in raw:
                if key not in _STAGE_KEYS:
                    raise SpecError(
                        f"unknown key {where}.{key} (allowed: {', '.join(_STAGE_KEYS)})"
                    )
            for key in ("out_channels", "stride", "repeats"):
                if key not in raw:
                    raise SpecError(f"{where}.{key} is required")
            merged = {**shared, **raw}
            repeats = merged["repeats"]
            if isinstance(repeats, int) and not isinstance(repeats, bool):
                repeats = (repeats, repeats)
            stage = StageChoices(
                **{
                    key: tuple(value) if isinstance(value, list) else value
                    for key, value in {**merged, "repeats": repeats}.items()
                }
            )
            stage.validate(where)
            stages.append(stage)
        kwargs = {k: v for k, v in data.items() if k not in _SHARED_KEYS and k != "stages"}
        return cls(stages=tuple(stages), **kwargs)

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "stages"}
        data["stages"] = [
            {
                f.name: list(v) if isinstance(v := getattr(s, f.name), tuple) else v
                for f in fields(s)
            }
            for s in self.stages
        ]
        return data

    @property
    def hash(self) -> str:
        """Stable hash of the space, to refuse resuming a study with a different space."""
        text = json.dumps(self.to_dict(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def size(self) -> int:
        """Number of distinct architectures in the space."""
        return math.prod(stage.size for stage in self.stages)

    # -- sampling -------------------------------------------------------------------------------

    def spec_with(self, stages: Sequence[StageSpec]) -> ArchSpec:
        """The spec of this space with these stages (and the space's fixed fields)."""
        fixed = {name: getattr(self, name) for name in _FIXED_FIELDS}
        return ArchSpec(stages=tuple(stages), **fixed)

    def suggest(self, trial: _Trial) -> ArchSpec:
        """Draw a spec from an Optuna trial (define-by-run); parameter names are ``s<i>_<field>``.

        A parameter with a single choice is not suggested (it is not a decision), which keeps
        Optuna's samplers from spending effort on it.
        """

        def pick(name: str, options: Sequence[Any]) -> Any:
            return options[0] if len(options) == 1 else trial.suggest_categorical(name, options)

        stages = []
        for index, choices in enumerate(self.stages):
            prefix = f"s{index + 1}_"
            block = pick(prefix + "block", list(choices.blocks))
            low, high = choices.repeats
            repeats = low if low == high else trial.suggest_int(prefix + "repeats", low, high)
            kernel = pick(prefix + "kernel", list(choices.kernels))
            expand = pick(prefix + "expand", list(choices.expand_ratios))
            se_options = choices.se_ratios if block == "mbconv" else choices.fused_se_ratios
            # Separate names per block type keep each Optuna distribution fixed across trials.
            se_ratio = pick(f"{prefix}{block}_se", list(se_options))
            stages.append(
                StageSpec(
                    block=block,
                    repeats=repeats,
                    kernel=kernel,
                    stride=choices.stride,
                    expand_ratio=expand,
                    out_channels=choices.out_channels,
                    se_ratio=se_ratio,
                )
            )
        return self.spec_with(stages)

    def all_specs(self) -> Iterator[ArchSpec]:
        """Every spec :meth:`suggest` can draw, each once, in a fixed order.

        :meth:`suggest` itself is driven through every branch of its decisions (a depth-first
        walk: each call replays a prefix of choices and takes the first option after it), so the
        set is the sampler's by construction, conditional choices included (SE options follow
        the block type). There are :attr:`size` of them: list only a small space.
        """
        prefix: list[int] = []
        while True:
            script = _ScriptedTrial(prefix)
            yield self.suggest(script)
            # The next branch: the last decision with an option left moves on, those after it
            # start again from their first option.
            while script.arities and script.taken[-1] + 1 >= script.arities[-1]:
                script.arities.pop()
                script.taken.pop()
            if not script.arities:
                return
            prefix = [*script.taken[:-1], script.taken[-1] + 1]

    def sample(self, rng: random.Random) -> ArchSpec:
        """Draw a spec uniformly per decision with ``rng`` (random-search baselines)."""

        class _RandomTrial:
            def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
                return rng.choice(list(choices))

            def suggest_int(self, name: str, low: int, high: int) -> int:
                return rng.randint(low, high)

        return self.suggest(_RandomTrial())


class _ScriptedTrial:
    """A stand-in trial that answers :meth:`SearchSpace.suggest` from a list of option indices,
    then with each decision's first option; it records how many options each decision had."""

    def __init__(self, prefix: Sequence[int]) -> None:
        self.prefix = list(prefix)
        self.taken: list[int] = []
        self.arities: list[int] = []

    def _take(self, arity: int) -> int:
        position = len(self.taken)
        index = self.prefix[position] if position < len(self.prefix) else 0
        self.taken.append(index)
        self.arities.append(arity)
        return index

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return choices[self._take(len(choices))]

    def suggest_int(self, name: str, low: int, high: int) -> int:
        return low + self._take(high - low + 1)
