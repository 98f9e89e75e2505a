"""Full training with progressive learning and adaptive regularization: what ``nas train`` runs.

:func:`train_progressive` reads top to bottom as the recipe of the paper (Tan and Le 2021, sec. 4
and shared/REFERENCE.md section 6):

- Training is split into the schedule's M stages (:mod:`nas.train.schedule`). The epochs split
  evenly: stage ``i`` covers epochs ``floor(E * i / M)`` up to ``floor(E * (i + 1) / M)``, the
  reference code's stage boundaries ``int(total * (i + 1) / M)`` counted in epochs, so the
  remainder is spread over the stages (10 epochs in 4 stages: 2, 3, 2, 3).
- Each stage trains on images resized to its size, augmented by torchvision's ``RandAugment``
  (two ops) at its magnitude rounded to a whole bin, mixed by torchvision's ``v2.MixUp`` at its
  alpha, with the model's classifier dropout set to its rate. A magnitude or an alpha of 0 turns
  that augmentation off.
- Weights, optimizer state, the learning-rate schedule and the weight EMA carry over from stage
  to stage; nothing is reset. The learning-rate schedule (warm-up, then cosine or the paper's
  exponential decay) runs over the whole training, not per stage.
- The training step and its pieces are the search's own (:mod:`nas.train.loop`,
  :mod:`nas.train.optim`): the optimizer (RMSProp as in the paper, SGD or AdamW) without weight
  decay on BatchNorm and biases, label smoothing, bf16 autocast and channels_last on a GPU.
- A weight EMA (``torch.optim.swa_utils.AveragedModel``, parameters and BatchNorm statistics)
  follows every step; the held-out split is evaluated at the spec's eval size with the EMA
  weights (``accuracy``) and the raw weights (``accuracy_raw``) after every epoch.

Everything a run writes goes to its run directory: ``checkpoint.pt`` after every epoch
(:mod:`nas.train.checkpoint`; ``resume=True`` continues exactly where it stopped), ``metrics.csv``
and ``metrics.json`` (:mod:`nas.train.metrics`), ``spec.yaml`` (the spec trained, with the
dataset's classes) and at the end ``weights.pt``, an effnas weights file of the evaluated (EMA)
model. Initial weights for fine-tuning come from :mod:`nas.train.initial`.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torchvision.transforms import v2

from nas.data.bundle import DataBundle
from nas.errors import CheckpointError, ConfigError, ScheduleError
from nas.train.checkpoint import (
    CHECKPOINT_NAME,
    check_checkpoint,
    epoch_seed,
    read_checkpoint,
    restore_checkpoint,
    write_checkpoint,
)
from nas.train.config import ProgressiveConfig
from nas.train.device import (
    device_name,
    memory_format_for,
    memory_shortfall,
    resolve_device,
    resolve_precision,
)
from nas.train.initial import load_initial_weights
from nas.train.loop import EpochCallback, evaluate_accuracy, train_one_epoch
from nas.train.metrics import write_metrics
from nas.train.optim import build_optimizer, build_scheduler, make_loss
from nas.train.schedule import StageSettings
from searchspace.builder import EfficientNetV2, build_model
from searchspace.spec import ArchSpec
from searchspace.weights import save_weights

__all__ = ["ProgressiveResult", "ema_multi_avg_fn", "train_progressive"]


@dataclass
class ProgressiveResult:
    """What :func:`train_progressive` returns.

    Attributes:
        spec: the spec trained (with the dataset's number of classes).
        accuracy: held-out top-1 (0..1) of the evaluated weights (EMA, if on) after the last
            epoch.
        accuracy_raw: the same for the raw (non-averaged) weights.
        test_accuracy: top-1 on the dataset's official test split, if it has one, else ``None``.
        train_seconds: wall time spent in training epochs (without evaluation), all sessions.
        history: one metrics dict per epoch (see :func:`train_progressive`).
        out_dir: the run directory.
        resumed_from: the epochs already done when this call started (0 for a fresh run).
    """

    spec: ArchSpec
    accuracy: float
    accuracy_raw: float
    test_accuracy: float | None
    train_seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    out_dir: Path = Path()
    resumed_from: int = 0


def ema_multi_avg_fn(decay: float) -> Callable[[list, list, torch.Tensor], None]:
    """torch's EMA update (``get_ema_multi_avg_fn``) with the reference code's warm-up.

    The reference code averages with TensorFlow's ``ExponentialMovingAverage(decay,
    num_updates=global_step)``, whose decay after ``n`` updates is ``min(decay, (1 + n) / (10 +
    n))``. torch's function takes a fixed decay; without the warm-up a 0.9999 EMA would hold the
    initial weights for tens of thousands of steps, longer than most fine-tuning runs.
    """

    def update(ema_params: list, model_params: list, num_averaged: torch.Tensor) -> None:
        updates = int(num_averaged)
        warmed = min(decay, (1 + updates) / (10 + updates))
        get_ema_multi_avg_fn(warmed)(ema_params, model_params, num_averaged)

    return update


@dataclass
class _Parts:
    """What training carries from stage to stage: the model, its EMA, the optimizer, the LR
    schedule and the loss."""

    model: EfficientNetV2
    ema: AveragedModel | None
    optimizer: Optimizer
    scheduler: LRScheduler
    loss_fn: nn.Module

    @property
    def evaluated(self) -> nn.Module:
        """The weights that are evaluated and saved: the EMA's, if there is one."""
        return self.ema.module if self.ema is not None else self.model

    def modules(self) -> dict[str, Any]:
        """What a checkpoint saves and restores, by name (``ema`` is None when off)."""
        return {
            "model": self.model,
            "ema": self.ema,
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
        }


def train_progressive(
    spec: ArchSpec,
    config: ProgressiveConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    on_epoch_end: EpochCallback | None = None,
) -> ProgressiveResult:
    """Train ``spec`` on ``config.dataset`` with progressive learning; write the run directory.

    Args:
        spec: the architecture; its classifier is sized for the dataset, its eval size is where
            accuracy is measured.
        config: the training settings and the schedule.
        out_dir: the run directory (created).
        resume: continue from ``out_dir/checkpoint.pt``, which must exist and match ``spec``
            and ``config`` (device and workers may differ). Without it, a run directory that
            already holds a checkpoint is refused rather than overwritten.
        progress: show a tqdm progress bar per epoch on stderr.
        log: receives one line per stage plan and per epoch (e.g. ``print`` to stderr).
        on_epoch_end: called after each epoch's checkpoint is written, as
            ``on_epoch_end(epoch, metrics)``; it may raise to stop (the checkpoint stays).

    Each epoch's metrics are :func:`_evaluate_epoch`'s.

    Raises:
        CheckpointError: ``resume`` without a checkpoint, a checkpoint that cannot be read or
            that belongs to another spec or config, or a checkpoint in the way of a fresh run.
        ScheduleError: a stage image size below the net's total stride.
        DataError, WeightsError, ConfigError: bad dataset, ``--init`` file or settings.
        NonFiniteLossError: the loss became NaN or infinite (the last checkpoint stays).
    """
    say = log if log is not None else (lambda line: None)
    out_dir = Path(out_dir)
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    checkpoint = _preflight(spec, config, out_dir, resume, device, precision)

    # Accuracy is measured on the held-out split at the spec's eval size; the training split is
    # loaded per stage, at that stage's size.
    eval_data = config.load(spec.eval_resolution, seed=config.seed)
    spec = spec.replace(num_classes=eval_data.num_classes)
    eval_loader = eval_data.heldout_loader(config.batch_size, num_workers=config.num_workers)
    steps_per_epoch = len(eval_data.train_loader(config.batch_size, num_workers=0))
    parts = _build(spec, config, device, steps_per_epoch, init=checkpoint is None, say=say)
    history: list[dict[str, float]] = []
    start_epoch = 0
    if checkpoint is not None:
        check_checkpoint(checkpoint, spec, config.to_dict(), out_dir / CHECKPOINT_NAME)
        history, start_epoch = restore_checkpoint(checkpoint, parts.modules(), device)
        say(f"resuming {out_dir} after epoch {start_epoch} of {config.epochs}")
    record = _start_record(spec, config, out_dir, device, history)
    say(f"{eval_data.describe()}; evaluating at {spec.eval_resolution} px")
    for line in _stage_plan(config):
        say(line)

    stage_data = _StageData(config)
    train_seconds = history[-1]["train_seconds"] if history else 0.0
    for epoch in range(start_epoch, config.epochs):
        settings = config.schedule.at(config.stage_of(epoch))
        loader = stage_data.loader(settings, epoch, pin_memory=device.type == "cuda")
        stats = _train_epoch(parts, loader, settings, config, epoch, device, precision, progress)
        train_seconds += stats["seconds"]
        metrics = _evaluate_epoch(parts, eval_loader, settings, stats, device, precision)
        metrics.update(epoch=epoch + 1, train_seconds=train_seconds)
        history.append(metrics)
        write_checkpoint(
            out_dir / CHECKPOINT_NAME,
            spec=spec,
            config=config.to_dict(),
            epoch=epoch + 1,
            modules=parts.modules(),
            history=history,
            device=device,
        )
        write_metrics(out_dir, record)
        say(_epoch_line(metrics, settings, config, parts.ema is not None))
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, metrics)
    return _finish(spec, config, out_dir, parts, eval_data, record, device, precision, start_epoch)


def _preflight(
    spec: ArchSpec,
    config: ProgressiveConfig,
    out_dir: Path,
    resume: bool,
    device: torch.device,
    precision: str,
) -> dict[str, Any] | None:
    """Refuse at once what would otherwise fail after the data has loaded (a stage below the
    net's stride, a step that cannot fit in memory, a checkpoint in the way or missing); the
    checkpoint to resume from, if any."""
    for settings in config.schedule.all_stages():
        if settings.image_size < spec.total_stride:
            raise ScheduleError(
                f"image size {settings.image_size} of stage {settings.stage + 1} is below the "
                f"net's total stride {spec.total_stride}"
            )
    largest = max(settings.image_size for settings in config.schedule.all_stages())
    shortfall = memory_shortfall(spec, config.batch_size, largest, device, precision)
    if shortfall is not None:
        raise ConfigError(f"{spec.label} {shortfall}; lower --batch-size or the image size")
    checkpoint_path = out_dir / CHECKPOINT_NAME
    if resume:
        if not checkpoint_path.is_file():
            raise CheckpointError(
                f"--resume: there is no checkpoint {str(checkpoint_path)!r} to resume"
            )
        return read_checkpoint(checkpoint_path)
    if checkpoint_path.exists():
        raise CheckpointError(
            f"{str(out_dir)!r} already holds a checkpoint; pass --resume to continue that run, "
            "or choose another --out"
        )
    return None


def _build(
    spec: ArchSpec,
    config: ProgressiveConfig,
    device: torch.device,
    steps_per_epoch: int,
    *,
    init: bool,
    say: Callable[[str], None],
) -> _Parts:
    """Model, EMA, optimizer, LR schedule and loss: built once, carried across every stage."""
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    model = build_model(spec)
    if config.init and init:
        say(load_initial_weights(model, config.init))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes within a stage
    model.to(device, memory_format=memory_format_for(device))
    ema = (
        AveragedModel(model, multi_avg_fn=ema_multi_avg_fn(config.ema_decay), use_buffers=True)
        if config.ema_decay > 0
        else None
    )
    optimizer = build_optimizer(model, config)
    return _Parts(
        model=model,
        ema=ema,
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, config, steps_per_epoch),
        loss_fn=make_loss(config),
    )


class _StageData:
    """The training split at the current stage's image size and RandAugment magnitude, loaded
    when the stage begins (the same seed carves the same split at every size)."""

    def __init__(self, config: ProgressiveConfig) -> None:
        self.config = config
        self.stage = -1
        self.data: DataBundle | None = None

    def loader(self, settings: StageSettings, epoch: int, *, pin_memory: bool) -> Any:
        if settings.stage != self.stage or self.data is None:
            magnitude = _randaugment_bin(settings)
            augment = v2.RandAugment(num_ops=2, magnitude=magnitude) if magnitude > 0 else None
            self.data = self.config.load(
                settings.image_size, seed=self.config.seed, train_augment=augment
            )
            self.stage = settings.stage
        return self.data.train_loader(
            self.config.batch_size,
            seed=epoch_seed(self.config.seed, epoch),
            num_workers=self.config.num_workers,
            pin_memory=pin_memory,
        )


def _train_epoch(
    parts: _Parts,
    loader: Any,
    settings: StageSettings,
    config: ProgressiveConfig,
    epoch: int,
    device: torch.device,
    precision: str,
    progress: bool,
) -> dict[str, float]:
    """One epoch at the stage's dropout and MixUp; the EMA follows every step."""
    parts.model.set_dropout(settings.dropout)
    mixup = (
        v2.MixUp(alpha=settings.mixup_alpha, num_classes=parts.model.spec.num_classes)
        if settings.mixup_alpha > 0
        else None
    )
    bar = _progress_bar(loader, epoch, config.epochs, settings, config.schedule.stages, progress)
    steps = len(loader)

    def after_step(step: int, loss: float) -> None:
        if parts.ema is not None:
            parts.ema.update_parameters(parts.model)
        if bar is not None and (step % 10 == 0 or step == steps):
            bar.set_postfix_str(f"loss {loss:.4f}", refresh=False)

    try:
        return train_one_epoch(
            parts.model,
            bar if bar is not None else loader,
            parts.optimizer,
            parts.scheduler,
            parts.loss_fn,
            device=device,
            precision=precision,
            epoch=epoch + 1,
            batch_transform=mixup,
            on_step=after_step,
        )
    finally:
        if bar is not None:
            bar.close()


def _evaluate_epoch(
    parts: _Parts,
    eval_loader: Any,
    settings: StageSettings,
    stats: dict[str, float],
    device: torch.device,
    precision: str,
) -> dict[str, Any]:
    """The epoch's metrics: ``epoch``, ``stage`` (from 1), ``image_size``, ``randaug_magnitude``
    (the bin used, 0 = off), ``mixup_alpha``, ``dropout``, ``train_loss``, ``accuracy`` (EMA
    weights, at the eval size), ``accuracy_raw``, ``lr`` (after the epoch), ``epoch_seconds``,
    ``eval_seconds``, ``train_seconds`` (cumulative training time), ``images_per_second``."""
    eval_start = time.perf_counter()
    accuracy_raw = evaluate_accuracy(parts.model, eval_loader, device=device, precision=precision)
    accuracy = (
        evaluate_accuracy(parts.evaluated, eval_loader, device=device, precision=precision)
        if parts.ema is not None
        else accuracy_raw
    )
    return {
        "epoch": 0,  # set by the caller, which knows the epoch
        "stage": settings.stage + 1,
        "image_size": settings.image_size,
        "randaug_magnitude": _randaugment_bin(settings),
        "mixup_alpha": settings.mixup_alpha,
        "dropout": settings.dropout,
        "train_loss": stats["train_loss"],
        "accuracy": accuracy,
        "accuracy_raw": accuracy_raw,
        "lr": float(parts.optimizer.param_groups[0]["lr"]),
        "epoch_seconds": stats["seconds"],
        "eval_seconds": time.perf_counter() - eval_start,
        "train_seconds": 0.0,  # set by the caller: cumulative over the run
        "images_per_second": stats["images"] / max(stats["seconds"], 1e-9),
    }


def _start_record(
    spec: ArchSpec,
    config: ProgressiveConfig,
    out_dir: Path,
    device: torch.device,
    history: list[dict[str, float]],
) -> dict[str, Any]:
    """The run directory's spec.yaml, and the record metrics.json is written from."""
    out_dir.mkdir(parents=True, exist_ok=True)
    spec.save(out_dir / "spec.yaml")
    return {
        "spec": spec.to_string(),
        "name": spec.label,
        "hash": spec.hash,
        "dataset": config.dataset,
        "device": device_name(device),
        "config": config.to_dict(),
        "recipe": asdict(config.recipe()),
        "stages": [
            {**asdict(config.schedule.at(i)), "epochs": [epochs.start + 1, epochs.stop]}
            for i, epochs in enumerate(config.stage_epochs())
        ],
        "history": history,
        "final": None,
    }


def _finish(
    spec: ArchSpec,
    config: ProgressiveConfig,
    out_dir: Path,
    parts: _Parts,
    eval_data: DataBundle,
    record: dict[str, Any],
    device: torch.device,
    precision: str,
    resumed_from: int,
) -> ProgressiveResult:
    """Save the evaluated (EMA) model as the run's weights file, score the test split if any."""
    final_model = parts.evaluated
    save_weights(final_model, out_dir / "weights.pt", source=f"nas train {out_dir}")
    test_accuracy = None
    if eval_data.test is not None:
        test_loader = eval_data.test_loader(config.batch_size, num_workers=config.num_workers)
        test_accuracy = evaluate_accuracy(
            final_model, test_loader, device=device, precision=precision
        )
    history = record["history"]
    last = history[-1]
    train_seconds = last["train_seconds"]
    record["final"] = {
        "accuracy": last["accuracy"],
        "accuracy_raw": last["accuracy_raw"],
        "test_accuracy": test_accuracy,
        "train_seconds": train_seconds,
        "epochs": config.epochs,
        "eval_image_size": spec.eval_resolution,
    }
    write_metrics(out_dir, record)
    return ProgressiveResult(
        spec=spec,
        accuracy=last["accuracy"],
        accuracy_raw=last["accuracy_raw"],
        test_accuracy=test_accuracy,
        train_seconds=train_seconds,
        history=history,
        out_dir=out_dir,
        resumed_from=resumed_from,
    )


def _randaugment_bin(settings: StageSettings) -> int:
    # torchvision's RandAugment takes a whole magnitude bin (0..30); schedules interpolate
    # fractions (8.33...), so round half up.
    return int(settings.randaug_magnitude + 0.5)


def _describe_stage(settings: StageSettings, stages: int) -> str:
    magnitude = _randaugment_bin(settings)
    return (
        f"stage {settings.stage + 1}/{stages}: {settings.image_size} px, "
        f"RandAugment {magnitude if magnitude else 'off'}, "
        f"Mixup {f'{settings.mixup_alpha:.3g}' if settings.mixup_alpha > 0 else 'off'}, "
        f"dropout {settings.dropout:.3g}"
    )


def _stage_plan(config: ProgressiveConfig) -> list[str]:
    """One line per stage: what is in force and for which epochs."""
    return [
        f"{_describe_stage(config.schedule.at(i), config.schedule.stages)}, "
        f"epochs {epochs.start + 1}-{epochs.stop}"
        for i, epochs in enumerate(config.stage_epochs())
    ]


def _epoch_line(
    metrics: dict[str, float], settings: StageSettings, config: ProgressiveConfig, ema: bool
) -> str:
    note = f" (EMA; raw {metrics['accuracy_raw']:.2%})" if ema else ""
    return (
        f"epoch {metrics['epoch']}/{config.epochs} "
        f"{_describe_stage(settings, config.schedule.stages)}: "
        f"loss {metrics['train_loss']:.4f}, held-out accuracy {metrics['accuracy']:.2%}{note}, "
        f"{metrics['epoch_seconds']:.1f} s"
    )


def _progress_bar(
    loader: Any, epoch: int, epochs: int, settings: StageSettings, stages: int, show: bool
) -> Any:
    """A tqdm bar over ``loader`` naming the stage and what is in force, or ``None``."""
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(
        loader,
        total=len(loader),
        desc=f"epoch {epoch + 1}/{epochs} {_describe_stage(settings, stages)}",
        unit="step",
        leave=False,
        file=sys.stderr,
        dynamic_ncols=True,
    )
