"""One epoch of ``nas train``: the stage's data (:class:`StageData`), its dropout and MixUp
(:func:`stage_regularization`), the held-out evaluation that makes the epoch's metrics
(:func:`evaluate_epoch`), and the lines that describe them. The epoch itself, step by step, is
:func:`nas.train.loop.train_one_epoch`; :func:`nas.train.progressive.run_epochs` runs the
epochs."""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torchvision.transforms import v2

from nas.data.bundle import DataBundle, shard_seed
from nas.train.checkpoint import epoch_seed
from nas.train.config import ProgressiveConfig
from nas.train.loop import BatchTransform, EpochStats, evaluate_accuracy
from nas.train.metrics import EpochMetrics
from nas.train.schedule import StageSettings
from searchspace.builder import EfficientNetV2

if TYPE_CHECKING:
    from nas.train.setup import TrainingRun

__all__ = [
    "StageData",
    "describe_stage",
    "epoch_description",
    "epoch_line",
    "evaluate_epoch",
    "set_dropout",
    "stage_plan",
    "stage_regularization",
]


class StageData:
    """The training split at the current stage's image size, crop and RandAugment magnitude,
    loaded when the stage begins (the same seed carves the same split at every size), and the
    held-out split at that size."""

    def __init__(self, config: ProgressiveConfig) -> None:
        self.config = config
        self.stage = -1
        self.data: DataBundle | None = None
        self._heldout: Any = None

    def loader(
        self, settings: StageSettings, epoch: int, shard: tuple[int, int], *, pin_memory: bool
    ) -> Any:
        """The epoch's global batches, shuffled by the epoch's seed; of each, the share of
        worker ``shard = (rank, world_size)``."""
        if settings.stage != self.stage or self.data is None:
            magnitude = randaugment_bin(settings)
            augment = v2.RandAugment(num_ops=2, magnitude=magnitude) if magnitude > 0 else None
            self.data = self.config.load(
                settings.image_size,
                seed=self.config.seed,
                train_augment=augment,
                train_crop=self.config.train_crop,
            )
            self.stage, self._heldout = settings.stage, None
        return self.data.train_loader(
            self.config.batch_size,
            seed=epoch_seed(self.config.seed, epoch),
            num_workers=self.config.num_workers,
            pin_memory=pin_memory,
            shard=shard,
        )

    def heldout_loader(self) -> Any:
        """The held-out split at the current stage's size (made on first use: rank 0's)."""
        assert self.data is not None, "loader() first"
        if self._heldout is None:
            self._heldout = self.data.heldout_loader(
                self.config.batch_size, num_workers=self.config.num_workers
            )
        return self._heldout


def stage_regularization(
    model: nn.Module, settings: StageSettings, num_classes: int, seed: int, rank: int
) -> BatchTransform | None:
    """Before an epoch: reseed this rank's random draws (dropout, stochastic depth,
    RandAugment, MixUp) from the epoch's ``seed``, each rank its own; set the stage's dropout;
    the stage's MixUp (None: off)."""
    seed = shard_seed(seed, rank)
    torch.manual_seed(seed)
    random.seed(seed)
    set_dropout(model, settings.dropout)
    if settings.mixup_alpha <= 0:
        return None
    return v2.MixUp(alpha=settings.mixup_alpha, num_classes=num_classes)


def evaluate_epoch(
    run: TrainingRun,
    settings: StageSettings,
    stats: EpochStats,
    epoch: int,
    at_train_size: Any,
    world_size: int,
) -> EpochMetrics:
    """Evaluate after ``epoch`` epochs (rank 0): the raw and the evaluated (EMA) weights on
    the held-out split at the spec's eval size, the evaluated ones also on ``at_train_size``
    (a loader at the stage's training size); with the training's ``stats`` (of this process's
    share, ``world_size`` shares in all), the epoch's :class:`EpochMetrics`."""
    state, device, precision = run.state, run.device, run.precision
    eval_start = time.perf_counter()

    def score(model: nn.Module, loader: Any) -> float:
        return evaluate_accuracy(model, loader, device=device, precision=precision)

    accuracy_raw = score(state.model, run.eval_loader)
    accuracy = score(state.evaluated, run.eval_loader) if state.ema is not None else accuracy_raw
    # At the eval size the held-out images are the same ones, resized alike: no second pass.
    same_size = settings.image_size == run.spec.eval_resolution
    at_train = accuracy if same_size else score(state.evaluated, at_train_size)
    eval_seconds = time.perf_counter() - eval_start
    before = run.history[-1] if run.history else {}
    return EpochMetrics(
        epoch=epoch,
        stage=settings.stage + 1,
        image_size=settings.image_size,
        randaug_magnitude=randaugment_bin(settings),
        mixup_alpha=settings.mixup_alpha,
        dropout=settings.dropout,
        train_loss=stats.train_loss,
        accuracy=accuracy,
        accuracy_raw=accuracy_raw,
        accuracy_at_train_size=at_train,
        lr=float(state.optimizer.param_groups[0]["lr"]),
        epoch_seconds=stats.seconds,
        epoch_cpu_seconds=stats.cpu_seconds,
        epoch_data_cpu_seconds=stats.data_cpu_seconds,
        eval_seconds=eval_seconds,
        train_seconds=before.get("train_seconds", 0.0) + stats.seconds,
        # .get: a run resumed from a checkpoint older than this column starts it at 0.
        train_cpu_seconds=before.get("train_cpu_seconds", 0.0) + stats.cpu_seconds,
        images_per_second=stats.images * world_size / max(stats.seconds, 1e-9),
    )


def set_dropout(model: nn.Module, rate: float) -> None:
    """Set ``model``'s classifier dropout to ``rate``: an effnas net's own ``set_dropout``; for
    another net, the rate of each of its ``nn.Dropout`` layers (torchvision's classification
    nets have one, before the last linear layer; a net without one, such as a ResNet, keeps
    having none)."""
    if isinstance(model, EfficientNetV2):
        model.set_dropout(rate)
        return
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = rate


def randaugment_bin(settings: StageSettings) -> int:
    """The stage's RandAugment magnitude as torchvision takes it, a whole bin (0..30):
    schedules interpolate fractions (8.33...), so it rounds half up."""
    return int(settings.randaug_magnitude + 0.5)


def describe_stage(settings: StageSettings, stages: int) -> str:
    magnitude = randaugment_bin(settings)
    return (
        f"stage {settings.stage + 1}/{stages}: {settings.image_size} px, "
        f"RandAugment {magnitude if magnitude else 'off'}, "
        f"Mixup {f'{settings.mixup_alpha:.3g}' if settings.mixup_alpha > 0 else 'off'}, "
        f"dropout {settings.dropout:.3g}"
    )


def stage_plan(config: ProgressiveConfig) -> list[str]:
    """One line per stage: what is in force and for which epochs."""
    return [
        f"{describe_stage(config.schedule.at(i), config.schedule.stages)}, "
        f"epochs {epochs.start + 1}-{epochs.stop}"
        for i, epochs in enumerate(config.stage_epochs())
    ]


def epoch_description(epoch: int, config: ProgressiveConfig, settings: StageSettings) -> str:
    """The progress bar's description of ``epoch`` (0-based): its stage, what is in force."""
    return f"epoch {epoch + 1}/{config.epochs} {describe_stage(settings, config.schedule.stages)}"


def epoch_line(metrics: EpochMetrics, settings: StageSettings, run: TrainingRun) -> str:
    """One line per epoch: the stage, the loss, held-out accuracy at the eval size (EMA and raw)
    and at the stage's training size, and the epoch's training time."""
    config = run.config
    note = f" (EMA; raw {metrics.accuracy_raw:.2%})" if run.state.ema is not None else ""
    return (
        f"epoch {metrics.epoch}/{config.epochs} "
        f"{describe_stage(settings, config.schedule.stages)}: "
        f"loss {metrics.train_loss:.4f}, held-out accuracy {metrics.accuracy:.2%}{note} "
        f"at the eval size {run.spec.eval_resolution} px, "
        f"{metrics.accuracy_at_train_size:.2%} at the train size {settings.image_size} px, "
        f"{metrics.epoch_seconds:.1f} s"
    )
