"""The training recipe: optimizer, learning-rate schedule, loss and precision, as plain data.

:class:`Recipe` is what brief training (every search candidate, ``nas evaluate``) and full
training (``nas train``) share, so each setting and its default is written once;
:class:`~nas.evaluate.config.EvalConfig` and :class:`~nas.train.progressive.ProgressiveConfig`
extend it. The defaults are the paper's ImageNet recipe (shared/REFERENCE.md section 6): RMSProp
(decay 0.9, momentum 0.9) at 0.016 per 256 images, weight decay 1e-5 on conv and linear weights
only, label smoothing 0.1, a linear warm-up, bf16 autocast on a GPU.

This module imports no torch: a config is checked before anything heavy loads.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from nas.errors import ConfigError
from searchspace.checks import check_choice, check_int, check_number

__all__ = [
    "DEFAULT_LR_PER_256",
    "LR_SCHEDULES",
    "OPTIMIZERS",
    "PRECISIONS",
    "Recipe",
    "scaled_lr",
]

OPTIMIZERS = ("rmsprop", "sgd", "adamw")
LR_SCHEDULES = ("cosine", "exponential")
#: ``auto`` is bf16 autocast on a CUDA GPU and fp32 elsewhere.
PRECISIONS = ("auto", "fp32", "bf16")

#: Learning rate per 256 images, scaled linearly with the batch size (Goyal et al. 2017).
#: RMSProp's 0.016 is the paper's; SGD's 0.1 and AdamW's 1e-3 are the usual ImageNet values.
DEFAULT_LR_PER_256 = {"rmsprop": 0.016, "sgd": 0.1, "adamw": 1e-3}


def scaled_lr(optimizer: str, batch_size: int, lr_per_256: float | None = None) -> float:
    """The linear scaling rule: ``lr_per_256 * batch_size / 256``.

    ``lr_per_256`` defaults to :data:`DEFAULT_LR_PER_256` for the optimizer.

    Raises:
        ConfigError: an unknown optimizer.
    """
    check_choice("optimizer", optimizer, OPTIMIZERS, ConfigError)
    base = DEFAULT_LR_PER_256[optimizer] if lr_per_256 is None else lr_per_256
    return base * batch_size / 256


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """How to train: everything the loop needs besides the model and the data.

    Attributes:
        epochs: passes over the training split.
        batch_size: training batch size (and the timed step's).
        lr: peak learning rate; ``None``: the optimizer's per-256-images rate scaled to
            ``batch_size`` (:func:`scaled_lr`; 0.016 per 256 images for RMSProp, the paper's).
        optimizer: ``rmsprop`` (the paper's), ``sgd`` (Nesterov momentum) or ``adamw``.
        weight_decay: L2 / decoupled decay on conv and linear weights only (not BN or biases).
        momentum: RMSProp and SGD momentum.
        label_smoothing: cross-entropy label smoothing.
        warmup_epochs: linear warm-up length (may be fractional; capped below the whole run);
            ``None``: the paper's 5 epochs, or a tenth of the run when that is shorter.
        lr_schedule: after warm-up, ``cosine`` annealing to 0, or the paper's ``exponential``
            decay (x ``decay_rate`` every ``decay_epochs`` epochs, applied smoothly per step).
        decay_rate: factor of the exponential schedule.
        decay_epochs: period of the exponential schedule, in epochs.
        precision: ``auto`` (bf16 autocast on a GPU, fp32 on a CPU), ``fp32`` or ``bf16``.
        seed: seeds the weights, the shuffle order, dropout and augmentation; the same seed gives
            the same result on a CPU.
        device: ``auto`` (a GPU if there is one), ``cpu``, ``cuda`` or ``cuda:N``.
    """

    epochs: int = 3
    batch_size: int = 64
    lr: float | None = None
    optimizer: str = "rmsprop"
    weight_decay: float = 1e-5
    momentum: float = 0.9
    label_smoothing: float = 0.1
    warmup_epochs: float | None = None
    lr_schedule: str = "cosine"
    decay_rate: float = 0.97
    decay_epochs: float = 2.4
    precision: str = "auto"
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        check_int("epochs", self.epochs, 1, ConfigError)
        check_int("batch_size", self.batch_size, 1, ConfigError)
        check_int("seed", self.seed, 0, ConfigError)
        if self.lr is not None:
            check_number("lr", self.lr, 0.0, error=ConfigError, above=True)
        check_choice("optimizer", self.optimizer, OPTIMIZERS, ConfigError)
        check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES, ConfigError)
        check_choice("precision", self.precision, PRECISIONS, ConfigError)
        check_number("weight_decay", self.weight_decay, 0.0, error=ConfigError)
        check_number("momentum", self.momentum, 0.0, 1.0, ConfigError, below=True)
        check_number("label_smoothing", self.label_smoothing, 0.0, 1.0, ConfigError, below=True)
        if self.warmup_epochs is not None:
            check_number("warmup_epochs", self.warmup_epochs, 0.0, error=ConfigError)
        check_number("decay_rate", self.decay_rate, 0.0, error=ConfigError, above=True)
        check_number("decay_epochs", self.decay_epochs, 0.0, error=ConfigError, above=True)
        if not isinstance(self.device, str) or not self.device:
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")

    @property
    def peak_lr(self) -> float:
        """:attr:`lr`, or the per-256 rule for the optimizer at :attr:`batch_size`."""
        return self.lr if self.lr is not None else scaled_lr(self.optimizer, self.batch_size)

    @property
    def warmup(self) -> float:
        """The warm-up in epochs, the default resolved."""
        return min(5.0, self.epochs / 10) if self.warmup_epochs is None else self.warmup_epochs

    def recipe(self) -> Recipe:
        """Just the recipe's own fields (a subclass's config narrowed to what the loop reads)."""
        names = [f.name for f in dataclasses.fields(Recipe)]
        return Recipe(**{name: getattr(self, name) for name in names})

    def replace(self, **changes: Any) -> Any:
        """A copy with ``changes`` applied and validated."""
        return dataclasses.replace(self, **changes)
