"""The training loop: optimizer, LR schedule with warm-up, label smoothing, top-1 evaluation.

The search trains every candidate briefly with :func:`train`; the full progressive trainer reuses
the pieces (:func:`build_optimizer`, :func:`build_scheduler`, :func:`train_step`,
:func:`train_one_epoch`, :func:`evaluate_accuracy`). Step timing runs :func:`train_step` itself,
so the step that is timed is the step that trains.

Defaults follow the paper's ImageNet recipe (shared/REFERENCE.md, section 6): RMSProp with decay
0.9 and momentum 0.9, weight decay 1e-5 on weights but not on BatchNorm parameters or biases,
label smoothing 0.1, linear warm-up. A loss that becomes NaN or infinite stops training at once
with :class:`NonFiniteLossError`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    ExponentialLR,
    LinearLR,
    LRScheduler,
    SequentialLR,
)
from torch.utils.data import DataLoader

from nas.device import autocast, memory_format_for, resolve_precision
from searchspace.checks import check_choice
from searchspace.errors import EffnasError

__all__ = [
    "DEFAULT_LR_PER_256",
    "OPTIMIZERS",
    "SCHEDULES",
    "BatchTransform",
    "EpochCallback",
    "NonFiniteLossError",
    "StepCallback",
    "TrainConfig",
    "TrainResult",
    "build_optimizer",
    "build_scheduler",
    "evaluate_accuracy",
    "make_loss",
    "scaled_lr",
    "train",
    "train_one_epoch",
    "train_step",
]

OPTIMIZERS = ("rmsprop", "sgd", "adamw")
SCHEDULES = ("cosine", "exponential")

#: Learning rate per 256 images, scaled linearly with the batch size (Goyal et al. 2017).
#: RMSProp's 0.016 is the paper's; SGD's 0.1 and AdamW's 1e-3 are the usual ImageNet values.
DEFAULT_LR_PER_256 = {"rmsprop": 0.016, "sgd": 0.1, "adamw": 1e-3}

#: ``on_epoch_end(epoch, metrics)``: epoch counts from 1; metrics as in :func:`train`.
EpochCallback = Callable[[int, dict[str, float]], None]

#: ``batch_transform(images, labels) -> (images, labels)``, applied to each batch on the device.
BatchTransform = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

#: ``on_step(step, loss)``: step counts from 1 within the epoch; loss is the step's, as a float.
StepCallback = Callable[[int, float], None]


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the candidate failed and must not be scored.

    Attributes:
        reason: a one-line description, for the result record's ``failure`` field.
        loss: the offending loss value (NaN if not given).
        epoch: the epoch it happened in (from 1; 0 if not given).
        step: the step within that epoch (from 1; 0 if not given).
        seconds: training wall time until the failure (set by :func:`train`; 0 before).
    """

    def __init__(
        self, reason: str, *, loss: float = math.nan, epoch: int = 0, step: int = 0
    ) -> None:
        self.reason = reason
        self.loss = loss
        self.epoch = epoch
        self.step = step
        self.seconds = 0.0
        super().__init__(reason)


@dataclass(frozen=True)
class TrainConfig:
    """How to train: everything the loop needs besides the model and the data.

    Attributes:
        epochs: passes over the training loader.
        lr: peak learning rate given to the optimizer (see :func:`scaled_lr` for the paper's
            per-256-images rule).
        optimizer: ``rmsprop`` (the paper's), ``sgd`` (Nesterov momentum) or ``adamw``.
        weight_decay: L2 / decoupled decay on conv and linear weights only.
        momentum: RMSProp and SGD momentum.
        label_smoothing: passed to ``nn.CrossEntropyLoss``.
        warmup_epochs: linear warm-up length (may be fractional); capped below ``epochs``.
        schedule: after warm-up, ``cosine`` annealing to 0, or the paper's ``exponential`` decay
            (x ``decay_rate`` every ``decay_epochs`` epochs, applied smoothly per step).
        decay_rate: factor of the exponential schedule.
        decay_epochs: period of the exponential schedule, in epochs.
        precision: ``auto`` (bf16 autocast on a GPU, fp32 on a CPU), ``fp32`` or ``bf16``.
    """

    epochs: int = 3
    lr: float = 0.004
    optimizer: str = "rmsprop"
    weight_decay: float = 1e-5
    momentum: float = 0.9
    label_smoothing: float = 0.1
    warmup_epochs: float = 1.0
    schedule: str = "cosine"
    decay_rate: float = 0.97
    decay_epochs: float = 2.4
    precision: str = "auto"

    def __post_init__(self) -> None:
        def positive(name: str, value: Any, integer: bool = False) -> None:
            kinds = (int,) if integer else (int, float)
            if isinstance(value, bool) or not isinstance(value, kinds) or not value > 0:
                kind = "a positive integer" if integer else "a positive number"
                raise EffnasError(f"{name} must be {kind}, got {value!r}")
            if not integer and not math.isfinite(value):
                raise EffnasError(f"{name} must be finite, got {value!r}")

        positive("epochs", self.epochs, integer=True)
        positive("lr", self.lr)
        positive("decay_rate", self.decay_rate)
        positive("decay_epochs", self.decay_epochs)
        check_choice("optimizer", self.optimizer, OPTIMIZERS, EffnasError)
        check_choice("schedule", self.schedule, SCHEDULES, EffnasError)
        for name, low, high in (
            ("weight_decay", 0.0, math.inf),
            ("momentum", 0.0, 1.0),
            ("label_smoothing", 0.0, 1.0),
            ("warmup_epochs", 0.0, math.inf),
        ):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not low <= value < high
            ):
                raise EffnasError(f"{name} must be in [{low:g}, {high:g}), got {value!r}")


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        accuracy: top-1 accuracy (0..1) on the evaluation loader after the last epoch.
        train_loss: mean training loss of the last epoch.
        train_seconds: wall time of the training epochs, without evaluation.
        history: one metrics dict per epoch (see :func:`train`).
    """

    accuracy: float
    train_loss: float
    train_seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


def scaled_lr(optimizer: str, batch_size: int, lr_per_256: float | None = None) -> float:
    """The linear scaling rule: ``lr_per_256 * batch_size / 256``.

    ``lr_per_256`` defaults to :data:`DEFAULT_LR_PER_256` for the optimizer.

    Raises:
        EffnasError: an unknown optimizer.
    """
    if optimizer not in DEFAULT_LR_PER_256:
        raise EffnasError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
    base = DEFAULT_LR_PER_256[optimizer] if lr_per_256 is None else lr_per_256
    return base * batch_size / 256


def _parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    # No weight decay on BatchNorm scales/shifts or biases (all the 1-D parameters), as in the
    # paper's code: decaying them only fights the normalization.
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim <= 1 else decay).append(parameter)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, config: TrainConfig) -> Optimizer:
    """The optimizer ``config`` names, with weight decay on conv/linear weights only."""
    groups = _parameter_groups(model, config.weight_decay)
    if config.optimizer == "rmsprop":
        # The paper's RMSProp (decay 0.9, momentum 0.9, epsilon 1e-3) is TensorFlow's, whose
        # epsilon sits inside the square root: sqrt(v + 1e-3). torch adds it outside, sqrt(v) + eps,
        # so eps = sqrt(1e-3) gives the same floor on the denominator.
        return torch.optim.RMSprop(
            groups, lr=config.lr, alpha=0.9, momentum=config.momentum, eps=math.sqrt(1e-3)
        )
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0
        )
    return torch.optim.AdamW(groups, lr=config.lr)


def build_scheduler(optimizer: Optimizer, config: TrainConfig, steps_per_epoch: int) -> LRScheduler:
    """A per-step LR schedule: linear warm-up, then cosine annealing or exponential decay.

    Call ``scheduler.step()`` after every optimizer step.
    """
    total_steps = max(1, config.epochs * steps_per_epoch)
    warmup_steps = min(total_steps - 1, round(config.warmup_epochs * steps_per_epoch))
    if config.schedule == "cosine":
        main: LRScheduler = CosineAnnealingLR(optimizer, T_max=max(1, total_steps - warmup_steps))
    else:
        # The paper decays by 0.97 every 2.4 epochs; per step that is this factor.
        gamma = config.decay_rate ** (1.0 / (config.decay_epochs * steps_per_epoch))
        main = ExponentialLR(optimizer, gamma=gamma)
    if warmup_steps <= 0:
        return main
    warmup = LinearLR(optimizer, start_factor=1.0 / warmup_steps, total_iters=warmup_steps)
    return SequentialLR(optimizer, [warmup, main], milestones=[warmup_steps])


def make_loss(config: TrainConfig) -> nn.Module:
    """Cross-entropy with the configured label smoothing."""
    return nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)


def train_step(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    optimizer: Optimizer,
    loss_fn: nn.Module,
    *,
    device: torch.device,
    precision: str,
) -> torch.Tensor:
    """One training step: zero grads, forward and loss (under autocast), backward, optimizer step.

    ``images`` and ``labels`` must already be on ``device`` in the model's memory format;
    ``precision`` must be resolved (``fp32`` or ``bf16``). Returns the detached loss, not synced.
    """
    optimizer.zero_grad(set_to_none=True)
    with autocast(device, precision):
        logits = model(images)  # (N, classes)
        loss = loss_fn(logits, labels)
    loss.backward()
    optimizer.step()
    return loss.detach()


def train_one_epoch(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: Optimizer,
    scheduler: LRScheduler | None,
    loss_fn: nn.Module,
    *,
    device: torch.device,
    precision: str = "auto",
    epoch: int = 1,
    batch_transform: BatchTransform | None = None,
    on_step: StepCallback | None = None,
) -> dict[str, float]:
    """Train for one pass over ``loader``; the scheduler (if any) steps after every batch.

    ``batch_transform(images, labels)``, if given, acts on each batch once it is on the device
    (e.g. torchvision's ``v2.MixUp``, which turns the labels into class probabilities);
    ``on_step(step, loss)``, if given, runs after every optimizer and scheduler step (e.g. a
    weight EMA update, a progress bar).

    Returns:
        ``{"train_loss": mean loss, "steps": steps, "images": images seen, "seconds": wall time}``.

    Raises:
        NonFiniteLossError: the loss of some step was NaN or infinite (training stops there).
    """
    precision = resolve_precision(precision, device)
    memory_format = memory_format_for(device)
    non_blocking = device.type == "cuda"
    model.train()
    loss_sum, steps, images_seen = 0.0, 0, 0
    start = time.perf_counter()
    for images, labels in loader:
        images = images.to(device, non_blocking=non_blocking, memory_format=memory_format)
        labels = labels.to(device, non_blocking=non_blocking)
        if batch_transform is not None:
            images, labels = batch_transform(images, labels)
            images = images.contiguous(memory_format=memory_format)
        loss = train_step(
            model, images, labels, optimizer, loss_fn, device=device, precision=precision
        )
        value = float(loss)  # one host sync per step: the price of stopping at the first NaN
        steps += 1
        if not math.isfinite(value):
            raise NonFiniteLossError(
                f"training loss became {value} at epoch {epoch}, step {steps}",
                loss=value,
                epoch=epoch,
                step=steps,
            )
        if scheduler is not None:
            scheduler.step()
        if on_step is not None:
            on_step(steps, value)
        loss_sum += value
        images_seen += len(labels)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return {
        "train_loss": loss_sum / max(1, steps),
        "steps": float(steps),
        "images": float(images_seen),
        "seconds": time.perf_counter() - start,
    }


@torch.no_grad()
def evaluate_accuracy(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    device: torch.device,
    precision: str = "auto",
) -> float:
    """Top-1 accuracy (0..1) of ``model`` in eval mode over every batch of ``loader``.

    The model's train/eval mode is restored afterwards.
    """
    precision = resolve_precision(precision, device)
    memory_format = memory_format_for(device)
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=device)
    total = 0
    try:
        for images, labels in loader:
            images = images.to(device, memory_format=memory_format)
            labels = labels.to(device)
            with autocast(device, precision):
                logits = model(images)
            correct += (logits.argmax(dim=1) == labels).sum()
            total += len(labels)
    finally:
        model.train(was_training)
    if total == 0:
        raise EffnasError("the evaluation split is empty")
    return int(correct) / total


def train(
    model: nn.Module,
    train_loader: DataLoader | Iterable[tuple[torch.Tensor, torch.Tensor]],
    eval_loader: DataLoader | Iterable[tuple[torch.Tensor, torch.Tensor]],
    config: TrainConfig,
    *,
    device: torch.device,
    seed: int | None = None,
    on_epoch_end: EpochCallback | None = None,
) -> TrainResult:
    """Train ``model`` for ``config.epochs`` epochs, then measure top-1 accuracy on ``eval_loader``.

    The model is moved to ``device`` (channels_last on a GPU) and trained in place. With a
    ``seed``, the global torch RNG (dropout, stochastic depth) is seeded first; with the loader's
    own seeded shuffle, two runs on the CPU give identical results.

    Args:
        model: the network, freshly built.
        train_loader: training batches ``(images, labels)``; its length gives steps per epoch.
        eval_loader: held-out batches for top-1 accuracy.
        config: optimizer, schedule, label smoothing and precision.
        device: where to train.
        seed: seeds the global RNG when given.
        on_epoch_end: called after every epoch as ``on_epoch_end(epoch, metrics)`` with
            ``metrics = {"epoch", "train_loss", "accuracy", "lr", "epoch_seconds",
            "images_per_second"}``; when given, accuracy is measured after every epoch (for
            early stopping such as ASHA), otherwise only after the last. It may raise to stop.

    Returns:
        The final accuracy, last epoch's loss, training wall time and per-epoch history.

    Raises:
        NonFiniteLossError: the loss became NaN or infinite; training stopped at that step.
    """
    if seed is not None:
        torch.manual_seed(seed)
    if device.type == "cuda":
        # Let cuDNN pick the fastest kernels for these fixed shapes, as the timed step did.
        torch.backends.cudnn.benchmark = True
    model.to(device, memory_format=memory_format_for(device))
    optimizer = build_optimizer(model, config)
    steps_per_epoch = len(train_loader)  # type: ignore[arg-type]
    if steps_per_epoch == 0:
        raise EffnasError("the training loader yields no batches (batch size larger than the data)")
    scheduler = build_scheduler(optimizer, config, steps_per_epoch)
    loss_fn = make_loss(config)
    history: list[dict[str, float]] = []
    train_seconds = 0.0
    accuracy = float("nan")
    stats: dict[str, float] = {"train_loss": float("nan")}
    for epoch in range(1, config.epochs + 1):
        epoch_start = time.perf_counter()
        try:
            stats = train_one_epoch(
                model,
                train_loader,
                optimizer,
                scheduler,
                loss_fn,
                device=device,
                precision=config.precision,
                epoch=epoch,
            )
        except NonFiniteLossError as error:
            error.seconds = train_seconds + time.perf_counter() - epoch_start
            raise
        train_seconds += stats["seconds"]
        last = epoch == config.epochs
        if on_epoch_end is not None or last:
            accuracy = evaluate_accuracy(
                model, eval_loader, device=device, precision=config.precision
            )
        metrics = {
            "epoch": float(epoch),
            "train_loss": stats["train_loss"],
            "accuracy": accuracy,
            "lr": float(optimizer.param_groups[0]["lr"]),
            "epoch_seconds": stats["seconds"],
            "images_per_second": stats["images"] / max(stats["seconds"], 1e-9),
        }
        history.append(metrics)
        if on_epoch_end is not None:
            on_epoch_end(epoch, metrics)
    return TrainResult(
        accuracy=accuracy,
        train_loss=stats["train_loss"],
        train_seconds=train_seconds,
        history=history,
    )
