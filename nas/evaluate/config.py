"""How a candidate is evaluated: :class:`EvalConfig`, the settings of every search trial and of
``nas evaluate``. Imports no torch: a search config is checked before anything heavy loads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nas.data.config import DataConfig
from nas.errors import ConfigError
from nas.evaluate.reward import DEFAULT_REWARD_V, DEFAULT_REWARD_W
from nas.train.recipe import Recipe
from searchspace.checks import check_choice, check_int, check_number
from searchspace.spec import ArchSpec

__all__ = ["CLOCKS", "DEFAULT_REFERENCE", "REWARD_COSTS", "EvalConfig"]

#: CPU clocks for step timing: the wall clock or the process's CPU time (shared CPUs; see
#: :mod:`nas.evaluate.timing`).
CLOCKS = ("wall", "cpu")

#: What the reward's cost term S measures: the training step time (the paper's, and the default)
#: or the FLOP count (what FLOP-counting NAS tools use; for comparing the two, see
#: ``bench/search_quality.py``), each normalized by the reference net's.
REWARD_COSTS = ("step_time", "flops")

#: The net every step time and parameter count is normalized by.
DEFAULT_REFERENCE = "efficientnetv2-b0"


@dataclass(frozen=True, kw_only=True)
class EvalConfig(Recipe, DataConfig):
    """How to evaluate a candidate: the brief training recipe (:class:`~nas.train.recipe.Recipe`,
    whose ``epochs`` the paper set at about 10), the data (:class:`~nas.data.config.DataConfig`)
    and these. Validated at construction; see :meth:`check_spec` too.

    Attributes:
        image_size: training and evaluation image size; ``None`` means the spec's
            ``train_resolution``. Must be at least the net's total stride.
        timing_image_size: image size at which the training step is timed and FLOPs counted,
            for the candidate and the reference alike: the size the final training pays for.
            ``None`` means :attr:`image_size` (a search sets its space's train resolution).
        warmup_epochs: the recipe's warm-up, half an epoch for brief training.
        timing_steps: timed training steps (K).
        timing_warmup: untimed warm-up steps before them.
        timing_clock: on a CPU, ``wall`` (default) or ``cpu`` (process CPU time, for a CPU shared
            by concurrent trials, with one torch thread each; see :mod:`nas.evaluate.timing`).
        reference: the net step time and parameters are normalized by (catalog name, file or
            spec string).
        reward_w: reward exponent of the normalized step time (paper: -0.07), at most 0.
        reward_v: reward exponent of the normalized parameter count (paper: -0.05), at most 0.
        reward_cost: what ``S`` in the reward is: ``step_time`` (``step_time_norm``, the paper's)
            or ``flops`` (``flops_norm``: FLOPs over the reference's at the same image size).

    ``seed`` seeds the held-out split too: the same seed, the same split and the same result on a
    CPU.
    """

    image_size: int | None = None
    timing_image_size: int | None = None
    warmup_epochs: float | None = 0.5
    timing_steps: int = 20
    timing_warmup: int = 5
    timing_clock: str = "wall"
    reference: str = DEFAULT_REFERENCE
    reward_w: float = DEFAULT_REWARD_W
    reward_v: float = DEFAULT_REWARD_V
    reward_cost: str = "step_time"

    def __post_init__(self) -> None:
        DataConfig.__post_init__(self)
        Recipe.__post_init__(self)
        if self.image_size is not None:
            check_int("image_size", self.image_size, 1, ConfigError)
        if self.timing_image_size is not None:
            check_int("timing_image_size", self.timing_image_size, 1, ConfigError)
        check_int("timing_steps", self.timing_steps, 1, ConfigError)
        check_int("timing_warmup", self.timing_warmup, 0, ConfigError)
        check_choice("timing_clock", self.timing_clock, CLOCKS, ConfigError)
        check_choice("reward_cost", self.reward_cost, REWARD_COSTS, ConfigError)
        # A slower or bigger net never scores higher for being slower or bigger.
        check_number("reward_w", self.reward_w, maximum=0.0, error=ConfigError)
        check_number("reward_v", self.reward_v, maximum=0.0, error=ConfigError)
        if not isinstance(self.reference, str) or not self.reference:
            raise ConfigError(
                f"reference must be a catalog name, file or spec string, got {self.reference!r}"
            )

    def image_size_for(self, spec: ArchSpec) -> int:
        """The image size used for ``spec``: :attr:`image_size`, or the spec's train resolution."""
        return spec.train_resolution if self.image_size is None else self.image_size

    def timing_size_for(self, spec: ArchSpec) -> int:
        """The image size ``spec``'s step is timed at: :attr:`timing_image_size`, else the
        training size."""
        if self.timing_image_size is None:
            return self.image_size_for(spec)
        return self.timing_image_size

    def check_spec(self, spec: ArchSpec) -> None:
        """Check the settings against a spec.

        Raises:
            ConfigError: the image size or the timing image size is below the net's total
                stride.
        """
        for name, size in (
            ("image_size", self.image_size_for(spec)),
            ("timing_image_size", self.timing_size_for(spec)),
        ):
            if size < spec.total_stride:
                raise ConfigError(
                    f"{name} must be at least the net's total stride {spec.total_stride}, "
                    f"got {size}"
                )

    def load_data(self, spec: ArchSpec | None = None) -> Any:
        """The dataset these settings split, at the image size for ``spec`` (a ``DataBundle``;
        load it once to share it across candidates).

        Raises:
            ConfigError: :attr:`image_size` is ``None`` and no spec gives one.
        """
        if self.image_size is None and spec is None:
            raise ConfigError("image_size is None: give it, or a spec to take it from")
        size = self.image_size if spec is None else self.image_size_for(spec)
        return self.load(size, seed=self.seed)
