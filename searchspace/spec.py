"""Architectures as plain data: :class:`StageSpec`, :class:`ArchSpec` and their serial forms.

An :class:`ArchSpec` is a frozen, validated value. It round-trips exactly through a dict, YAML and a
short canonical string, and has a stable hash of the architecture (the string form), so that a
search can de-duplicate candidates and a result can be traced to the net that produced it.

Validation happens at construction: a spec that exists can be built. Errors are
:class:`~searchspace.errors.SpecError` and name the field as a dotted path and the bad value.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from searchspace.checks import check_int, check_number
from searchspace.errors import SpecError
from searchspace.files import atomic_write, parse_yaml, read_text_file

__all__ = [
    "BLOCK_TYPES",
    "MAX_CHANNELS",
    "MAX_CLASSES",
    "MAX_EXPAND",
    "MAX_KERNEL",
    "MAX_REPEATS",
    "MAX_RESOLUTION",
    "ArchSpec",
    "Lineage",
    "StageSpec",
]

#: Block types a stage may use: MBConv (depthwise) and Fused-MBConv (one regular kxk conv).
BLOCK_TYPES = ("mbconv", "fused")
_BLOCK_LETTER = {"mbconv": "m", "fused": "f"}

# Bounds that no real convnet crosses, so that a typo (a kernel of 99, a million channels) is
# refused when the spec is made rather than by an out-of-memory error when it is built. The
# largest published nets stay far inside: EfficientNetV2-XL has 32 blocks in a stage and 640
# channels, EfficientNet-L2 a 5,504-wide head; large-kernel convnets (RepLKNet) reach 31x31.
MAX_KERNEL = 31
MAX_CHANNELS = 16_384
MAX_REPEATS = 256
MAX_EXPAND = 32.0
MAX_RESOLUTION = 4096
MAX_CLASSES = 1_000_000
_LETTER_BLOCK = {letter: block for block, letter in _BLOCK_LETTER.items()}


# ---------------------------------------------------------------------------------------------
# Field checks. Each returns the normalized value or raises SpecError naming ``where``.


def _fmt(value: float) -> str:
    """Shortest exact text of a number: 4.0 -> '4', 0.25 -> '0.25' (float() parses it back)."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def _fmt_positional(value: float) -> str:
    """:func:`_fmt` without an exponent: 3e-05 -> '0.00003' (float() parses it back exactly).

    Stage tokens use letters as delimiters (``e4`` is the expansion), so a number written as
    ``1e-05`` inside a token would not parse back; the shortest repr's digits written out
    positionally are the same number.
    """
    text = format(Decimal(repr(float(value))), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _check_keys(where: str, data: Mapping[str, Any], allowed: Sequence[str]) -> None:
    if not isinstance(data, Mapping):
        raise SpecError(f"{where or 'spec'} must be a mapping, got {type(data).__name__} {data!r}")
    for key in data:
        if key not in allowed:
            prefix = f"{where}." if where else ""
            raise SpecError(f"unknown key {prefix}{key!s} (allowed: {', '.join(allowed)})")


def _required(where: str, data: Mapping[str, Any], names: Sequence[str]) -> None:
    for name in names:
        if name not in data:
            prefix = f"{where}." if where else ""
            raise SpecError(f"{prefix}{name} is required")


# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StageSpec:
    """One stage: ``repeats`` blocks of one type; the first block carries the stride.

    Attributes:
        block: ``"mbconv"`` or ``"fused"`` (Fused-MBConv).
        repeats: number of blocks in the stage.
        kernel: odd kernel size of the depthwise (MBConv) or fused (Fused-MBConv) conv.
        stride: 1 or 2, applied by the stage's first block only.
        expand_ratio: width multiplier of the block's hidden layer (1 = no expansion).
        out_channels: the stage's output width.
        se_ratio: squeeze-excitation ratio against the block's *input* width; 0 disables SE.
    """

    block: str
    repeats: int
    kernel: int
    stride: int
    expand_ratio: float
    out_channels: int
    se_ratio: float = 0.0

    def __post_init__(self) -> None:
        self._validate("stage")

    def _validate(self, where: str) -> None:
        if self.block not in BLOCK_TYPES:
            raise SpecError(
                f"{where}.block must be one of {', '.join(BLOCK_TYPES)}, got {self.block!r}"
            )
        check_int(f"{where}.repeats", self.repeats, 1, SpecError, maximum=MAX_REPEATS)
        kernel = check_int(f"{where}.kernel", self.kernel, 1, SpecError, maximum=MAX_KERNEL)
        if kernel % 2 == 0:
            raise SpecError(f"{where}.kernel must be an odd positive integer, got {kernel!r}")
        stride = check_int(f"{where}.stride", self.stride, 1, SpecError)
        if stride not in (1, 2):
            raise SpecError(f"{where}.stride must be 1 or 2, got {stride!r}")
        check_int(f"{where}.out_channels", self.out_channels, 1, SpecError, maximum=MAX_CHANNELS)
        # Normalize numbers so that 4 and 4.0 give one spec, one string and one hash.
        expand = check_number(
            f"{where}.expand_ratio", self.expand_ratio, 1.0, MAX_EXPAND, SpecError
        )
        object.__setattr__(self, "expand_ratio", expand)
        se_ratio = check_number(f"{where}.se_ratio", self.se_ratio, 0.0, 1.0, SpecError)
        object.__setattr__(self, "se_ratio", se_ratio)

    @property
    def has_se(self) -> bool:
        return self.se_ratio > 0

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "stage") -> StageSpec:
        names = [f.name for f in fields(cls)]
        _check_keys(where, data, names)
        _required(where, data, [n for n in names if n != "se_ratio"])
        try:
            return cls(**data)
        except SpecError as error:
            # Re-raise with the stage's position (stages[3].kernel, not stage.kernel).
            raise SpecError(str(error).replace("stage.", f"{where}.", 1)) from None

    def to_token(self) -> str:
        """The stage's canonical token, e.g. ``m6k3s2e4c128se0.25``."""
        token = (
            f"{_BLOCK_LETTER[self.block]}{self.repeats}k{self.kernel}s{self.stride}"
            f"e{_fmt_positional(self.expand_ratio)}c{self.out_channels}"
        )
        return token + (f"se{_fmt_positional(self.se_ratio)}" if self.has_se else "")


_STAGE_TOKEN = re.compile(
    r"^(?P<block>[fm])(?P<repeats>\d+)k(?P<kernel>\d+)s(?P<stride>\d+)"
    r"e(?P<expand>[0-9.]+)c(?P<channels>\d+)(?:se(?P<se>[0-9.]+))?$"
)


@dataclass(frozen=True)
class Lineage:
    """Where a scaled spec came from: the base architecture's hash and the coefficients applied.

    Attributes:
        base_hash: :attr:`ArchSpec.hash` of the base.
        base_name: the base's name, if it had one.
        width: channel multiplier applied (before rounding).
        depth: repeat multiplier applied to every stage (before rounding up).
        resolution: eval image size of the result over the base's (after any size cap).
        variant: the preset or budget that chose the coefficients (``s``, ``params=22e6``, ...).
        phi: EfficientNet's compound coefficient, when width, depth and resolution came from it.
        late_depth: extra repeat multiplier given to the last ``late_stages`` stages only
            (EfficientNetV2's rule of adding layers to the later stages); 1 when none.
        late_stages: how many of the last stages received ``late_depth``; 0 when none.
    """

    base_hash: str
    base_name: str = ""
    width: float = 1.0
    depth: float = 1.0
    resolution: float = 1.0
    variant: str = ""
    phi: float | None = None
    late_depth: float = 1.0
    late_stages: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Lineage:
        names = [f.name for f in fields(cls)]
        _check_keys("lineage", data, names)
        _required("lineage", data, ["base_hash"])
        numbers = ("width", "depth", "resolution", "late_depth")
        for key in numbers:
            if key in data:
                check_number(f"lineage.{key}", data[key], 0.0, error=SpecError)
        if data.get("phi") is not None:
            check_number("lineage.phi", data["phi"], error=SpecError)
        if "late_stages" in data:
            check_int("lineage.late_stages", data["late_stages"], 0, SpecError)
        for key in ("base_hash", "base_name", "variant"):
            if key in data and not isinstance(data[key], str):
                raise SpecError(f"lineage.{key} must be a string, got {data[key]!r}")
        return cls(
            **{
                k: (float(v) if k in numbers or (k == "phi" and v is not None) else v)
                for k, v in data.items()
            }
        )


# Keys of the string form's trailing fields, for the ArchSpec fields that have defaults.
_OPTION_KEYS = {
    "num_classes": "classes",
    "dropout": "dropout",
    "drop_path_rate": "droppath",
    "bn_eps": "eps",
    "bn_momentum": "momentum",
    "channel_divisor": "divisor",
    "channel_round_limit": "roundlimit",
}
_KEY_OPTIONS = {key: name for name, key in _OPTION_KEYS.items()}


@dataclass(frozen=True)
class ArchSpec:
    """A whole network: stem, stages, head, classifier and the settings it is trained with.

    Equality, the string form and :attr:`hash` cover the architecture only; ``name`` and
    ``lineage`` are labels carried along (they do not change what gets built).

    Attributes:
        stages: the stages in order; the first takes the stem's output.
        stem_channels: width of the 3x3 stride-2 stem conv.
        head_channels: width of the final 1x1 conv before pooling (1280 in the published nets).
        num_classes: classifier outputs.
        dropout: classifier dropout rate.
        drop_path_rate: stochastic depth rate; block ``i`` of ``n`` drops with ``rate * i / n``.
        train_resolution: image size the net trains at (square).
        eval_resolution: image size the net is evaluated at.
        bn_eps: BatchNorm epsilon (1e-3 in the published models).
        bn_momentum: BatchNorm momentum in PyTorch's convention (TF's 0.9 is PyTorch's 0.1).
        channel_divisor: channels are rounded to multiples of this when scaling.
        channel_round_limit: EfficientNet V1's rule that rounding may not drop below this
            fraction of the exact width (0.9 in V1); 0 disables it, as V2's base nets do.
        name: a label, e.g. ``efficientnetv2-s``.
        lineage: for a scaled spec, the base it came from and the coefficients.
    """

    stages: tuple[StageSpec, ...]
    stem_channels: int
    head_channels: int = 1280
    num_classes: int = 1000
    dropout: float = 0.2
    drop_path_rate: float = 0.2
    train_resolution: int = 224
    eval_resolution: int = 224
    bn_eps: float = 1e-3
    bn_momentum: float = 0.1
    channel_divisor: int = 8
    channel_round_limit: float = 0.0
    name: str = field(default="", compare=False)
    lineage: Lineage | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        stages = self.stages
        if isinstance(stages, (str, bytes)) or not isinstance(stages, Sequence):
            raise SpecError(f"stages must be a list of stages, got {stages!r}")
        if len(stages) == 0:
            raise SpecError("stages must hold at least one stage, got an empty list")
        for index, stage in enumerate(stages):
            if not isinstance(stage, StageSpec):
                raise SpecError(f"stages[{index}] must be a stage, got {stage!r}")
        object.__setattr__(self, "stages", tuple(stages))
        check_int("stem_channels", self.stem_channels, 1, SpecError, maximum=MAX_CHANNELS)
        check_int("head_channels", self.head_channels, 1, SpecError, maximum=MAX_CHANNELS)
        check_int("num_classes", self.num_classes, 1, SpecError, maximum=MAX_CLASSES)
        check_int("channel_divisor", self.channel_divisor, 1, SpecError)
        # Rates and BN settings: checked, and normalized to floats (one spec, one hash).
        for name, low, high, above, below in (
            ("dropout", 0.0, 1.0, False, True),
            ("drop_path_rate", 0.0, 1.0, False, True),
            ("bn_eps", 0.0, 1.0, True, False),
            ("bn_momentum", 0.0, 1.0, False, False),
            ("channel_round_limit", 0.0, 1.0, False, True),
        ):
            value = check_number(
                name, getattr(self, name), low, high, SpecError, above=above, below=below
            )
            object.__setattr__(self, name, value)
        if not isinstance(self.name, str):
            raise SpecError(f"name must be a string, got {self.name!r}")
        if self.lineage is not None and not isinstance(self.lineage, Lineage):
            raise SpecError(f"lineage must be a Lineage, got {self.lineage!r}")
        stride = self.total_stride
        for key in ("train_resolution", "eval_resolution"):
            value = check_int(key, getattr(self, key), 1, SpecError, maximum=MAX_RESOLUTION)
            if value < stride:
                raise SpecError(
                    f"{key} must be at least the net's total stride {stride}, got {value}"
                )

    # -- derived facts ------------------------------------------------------------------------

    @property
    def total_stride(self) -> int:
        """Downsampling factor of the whole net: the stem's 2 times every stage's stride."""
        return 2 * math.prod(stage.stride for stage in self.stages)

    @property
    def total_blocks(self) -> int:
        return sum(stage.repeats for stage in self.stages)

    @property
    def hash(self) -> str:
        """A stable 12-hex-digit hash of the architecture (of :meth:`to_string`)."""
        return hashlib.sha256(self.to_string().encode()).hexdigest()[:12]

    @property
    def label(self) -> str:
        """The name if there is one, else the hash: how a spec is shown in tables."""
        return self.name or self.hash

    def replace(self, **changes: Any) -> ArchSpec:
        """A copy with ``changes`` applied and validated (specs are immutable)."""
        return dataclasses.replace(self, **changes)

    # -- dict and YAML ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.name:
            data["name"] = self.name
        data["stem_channels"] = self.stem_channels
        data["stages"] = [stage.to_dict() for stage in self.stages]
        for f in fields(self):
            if f.name in ("name", "stem_channels", "stages", "lineage"):
                continue
            data[f.name] = getattr(self, f.name)
        if self.lineage is not None:
            data["lineage"] = self.lineage.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ArchSpec:
        names = [f.name for f in fields(cls)]
        _check_keys("", data, names)
        _required("", data, ["stages", "stem_channels"])
        raw_stages = data["stages"]
        if isinstance(raw_stages, (str, bytes, Mapping)) or not isinstance(raw_stages, Sequence):
            raise SpecError(f"stages must be a list of stages, got {raw_stages!r}")
        stages = tuple(
            StageSpec.from_dict(stage, where=f"stages[{index}]")
            for index, stage in enumerate(raw_stages)
        )
        kwargs = {key: value for key, value in data.items() if key not in ("stages", "lineage")}
        lineage = data.get("lineage")
        if lineage is not None:
            kwargs["lineage"] = Lineage.from_dict(lineage)
        if kwargs.get("name") is None:
            kwargs.pop("name", None)
        return cls(stages=stages, **kwargs)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=120)

    @classmethod
    def from_yaml(cls, text: str, source: str = "<string>") -> ArchSpec:
        data = parse_yaml(text, source, SpecError)
        if not isinstance(data, Mapping):
            raise SpecError(f"{source}: a spec must be a YAML mapping, got {data!r}")
        try:
            return cls.from_dict(data)
        except SpecError as error:
            raise SpecError(f"{source}: {error}") from None

    @classmethod
    def load(cls, path: str | Path) -> ArchSpec:
        """Read a spec from a YAML file."""
        return cls.from_yaml(read_text_file(path, "spec", SpecError), source=str(path))

    def save(self, path: str | Path) -> Path:
        """Write the spec as YAML (atomically; parent folders are created)."""
        return atomic_write(path, self.to_yaml(), SpecError)

    # -- canonical string ---------------------------------------------------------------------

    def to_string(self) -> str:
        """Short canonical form, e.g.
        ``stem24,f2k3s1e1c24,...,m15k3s2e6c256se0.25,head1280,res=300/384``.

        Fields at their defaults are left out; :meth:`from_string` parses it back to an equal spec.
        """
        parts = [f"stem{self.stem_channels}"]
        parts += [stage.to_token() for stage in self.stages]
        parts.append(f"head{self.head_channels}")
        defaults = {f.name: f.default for f in fields(self)}
        for name, key in _OPTION_KEYS.items():
            value = getattr(self, name)
            if value != defaults[name]:
                parts.append(f"{key}={_fmt(value) if isinstance(value, float) else value}")
        if (self.train_resolution, self.eval_resolution) != (
            defaults["train_resolution"],
            defaults["eval_resolution"],
        ):
            parts.append(f"res={self.train_resolution}/{self.eval_resolution}")
        return ",".join(parts)

    def __str__(self) -> str:
        return self.to_string()

    @classmethod
    def from_string(cls, text: str, name: str = "") -> ArchSpec:
        """Parse :meth:`to_string`'s form."""
        if not isinstance(text, str) or not text.strip():
            raise SpecError(f"spec string must be non-empty, got {text!r}")
        parts = [part.strip() for part in text.strip().split(",")]
        kwargs: dict[str, Any] = {}
        stages: list[StageSpec] = []
        for part in parts:
            if part.startswith("stem") and part[4:].isdecimal():
                found = {"stem_channels": int(part[4:])}
            elif part.startswith("head") and part[4:].isdecimal():
                found = {"head_channels": int(part[4:])}
            elif "=" in part:
                key, _, value = part.partition("=")
                found = _parse_option(key, value)
            else:
                found = {}
            # A field given twice would silently take the last value; say so instead.
            for field_name in found:
                if field_name in kwargs:
                    raise SpecError(f"spec string gives {field_name} twice (in {part!r})")
            kwargs.update(found)
            if found:
                continue
            if match := _STAGE_TOKEN.match(part):
                where = f"stages[{len(stages)}]"
                try:
                    stages.append(
                        StageSpec(
                            block=_LETTER_BLOCK[match["block"]],
                            repeats=int(match["repeats"]),
                            kernel=int(match["kernel"]),
                            stride=int(match["stride"]),
                            expand_ratio=_parse_float(f"{where}.expand_ratio", match["expand"]),
                            out_channels=int(match["channels"]),
                            se_ratio=_parse_float(f"{where}.se_ratio", match["se"] or "0"),
                        )
                    )
                except SpecError as error:
                    raise SpecError(str(error).replace("stage.", f"{where}.", 1)) from None
            else:
                raise SpecError(
                    f"spec string has an unknown part {part!r} (expected stemN, headN, a stage "
                    "such as m6k3s2e4c128se0.25, or KEY=VALUE)"
                )
        if "stem_channels" not in kwargs:
            raise SpecError(f"spec string {text!r} has no stem part (e.g. stem24)")
        return cls(stages=tuple(stages), name=name, **kwargs)


def _parse_float(where: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise SpecError(f"{where} must be a number, got {text!r}") from None


def _parse_option(key: str, value: str) -> dict[str, Any]:
    if key == "res":
        train, _, evaluation = value.partition("/")
        if not (train.isdecimal() and evaluation.isdecimal()):
            raise SpecError(f"res must be TRAIN/EVAL image sizes, got {value!r}")
        return {"train_resolution": int(train), "eval_resolution": int(evaluation)}
    if key not in _KEY_OPTIONS:
        raise SpecError(
            f"spec string has an unknown option {key!r} (allowed: res, {', '.join(_KEY_OPTIONS)})"
        )
    name = _KEY_OPTIONS[key]
    if name in ("num_classes", "channel_divisor"):
        if not value.isdecimal():
            raise SpecError(f"{name} must be an integer, got {value!r}")
        return {name: int(value)}
    return {name: _parse_float(name, value)}
