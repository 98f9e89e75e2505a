"""The training loop: one step, one epoch, top-1 evaluation, and brief training (:func:`fit`).

The search trains every candidate briefly with :func:`fit`; ``nas train``'s progressive trainer
runs the same :func:`train_one_epoch` (with its MixUp and weight EMA, which the loop applies
inline) and :func:`evaluate_accuracy`, and step timing runs :func:`train_step` itself, so the
step that is timed is the step that trains. A loss that becomes NaN or infinite stops training
at once with :class:`~nas.errors.NonFiniteLossError`.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader

from nas.errors import DataError, NonFiniteLossError
from nas.train.device import autocast, memory_format_for, resolve_precision
from nas.train.optim import build_optimizer, build_scheduler, make_loss
from nas.train.recipe import Recipe

__all__ = [
    "BatchTransform",
    "EpochCallback",
    "EpochStats",
    "FitResult",
    "LossReduction",
    "TrainState",
    "ema_multi_avg_fn",
    "evaluate_accuracy",
    "fit",
    "train_one_epoch",
    "train_step",
    "weight_ema",
]

#: ``on_epoch_end(epoch, metrics)``: epoch counts from 1; metrics as in :func:`fit`.
EpochCallback = Callable[[int, dict[str, float]], None]

#: ``batch_transform(images, labels) -> (images, labels)``, applied to each batch on the device.
BatchTransform = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

#: ``reduce_loss(loss) -> loss``: a step's detached loss (a 0-d tensor) -> the one to report.
LossReduction = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class TrainState:
    """What the steps train: the model, the optimizer, the LR schedule (stepped after every
    batch; None: none), the loss and the weight EMA that follows every step (None: none).

    ``wrapped`` is the model as the steps run it when that is another module sharing its
    parameters (DistributedDataParallel); the EMA always follows ``model`` itself.
    """

    model: nn.Module
    optimizer: Optimizer
    scheduler: LRScheduler | None
    loss_fn: nn.Module
    ema: AveragedModel | None = None
    wrapped: nn.Module | None = None

    @property
    def stepped(self) -> nn.Module:
        """The module the training steps call."""
        return self.wrapped if self.wrapped is not None else self.model

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


@dataclass(frozen=True)
class EpochStats:
    """What :func:`train_one_epoch` measured.

    Attributes:
        train_loss: the mean loss of the epoch's steps.
        steps: the steps taken.
        images: the images this process trained on.
        seconds: wall time.
        cpu_seconds: this process's CPU time (on a shared CPU with one torch thread and
            in-process data loading, what the wall time would be on an idle machine).
        data_cpu_seconds: the part of it spent getting the batches from the loader (the input
            pipeline's, near 0 when loader workers do it).
    """

    train_loss: float
    steps: int
    images: int
    seconds: float
    cpu_seconds: float
    data_cpu_seconds: float


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        accuracy: top-1 accuracy (0..1) on the evaluation loader after the last epoch.
        train_loss: mean training loss of the last epoch.
        train_seconds: wall time of the training epochs, without evaluation.
        history: one metrics dict per epoch (see :func:`fit`).
    """

    accuracy: float
    train_loss: float
    train_seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


def weight_ema(model: nn.Module, decay: float) -> AveragedModel:
    """torch's weight EMA of ``model`` (parameters and BatchNorm statistics) at ``decay``, with
    the reference code's warm-up (:func:`ema_multi_avg_fn`); ``update_parameters(model)``
    after every step."""
    return AveragedModel(model, multi_avg_fn=ema_multi_avg_fn(decay), use_buffers=True)


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
    state: TrainState,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    device: torch.device,
    precision: str = "auto",
    epoch: int = 1,
    mixup: BatchTransform | None = None,
    reduce_loss: LossReduction | None = None,
    progress: str | None = None,
) -> EpochStats:
    """Train ``state`` for one pass over ``loader``: each step reads top to bottom below.

    ``mixup(images, labels)``, if given, mixes each batch on the device (e.g. torchvision's
    ``v2.MixUp``, which turns the labels into class probabilities). ``reduce_loss`` turns each
    step's loss into the one checked and averaged: under data parallelism the workers' mean, so
    that all of them stop at the same step when it is not finite. ``progress``: a tqdm bar on
    stderr with this description.

    Raises:
        NonFiniteLossError: the loss of some step was NaN or infinite (training stops there).
    """
    precision = resolve_precision(precision, device)
    memory_format = memory_format_for(device)
    non_blocking = device.type == "cuda"
    model = state.stepped.train()
    loss_sum, steps, images_seen, data_cpu = 0.0, 0, 0, [0.0]
    start, cpu_start = time.perf_counter(), time.process_time()
    with _progress_bar(loader, progress) as bar:
        for images, labels in _fetch_timed(loader if bar is None else bar, data_cpu):
            images = images.to(device, non_blocking=non_blocking, memory_format=memory_format)
            labels = labels.to(device, non_blocking=non_blocking)
            if mixup is not None:
                images, labels = mixup(images, labels)
                images = images.contiguous(memory_format=memory_format)
            loss = train_step(
                model, images, labels, state.optimizer, state.loss_fn,
                device=device, precision=precision,
            )  # fmt: skip
            if reduce_loss is not None:
                loss = reduce_loss(loss)
            value = float(loss)  # one host sync per step: the price of stopping at the first NaN
            steps += 1
            _check_finite(value, epoch, steps)
            if state.scheduler is not None:
                state.scheduler.step()
            if state.ema is not None:
                state.ema.update_parameters(state.model)
            if bar is not None and (steps % 10 == 0 or steps == len(bar)):
                bar.set_postfix_str(f"loss {value:.4f}", refresh=False)
            loss_sum += value
            images_seen += len(labels)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    mean_loss = loss_sum / max(1, steps)
    return EpochStats(mean_loss, steps, images_seen, seconds, cpu_seconds, data_cpu[0])


def _check_finite(loss: float, epoch: int, step: int) -> None:
    if not math.isfinite(loss):
        raise NonFiniteLossError(
            f"training loss became {loss} at epoch {epoch}, step {step}",
            loss=loss,
            epoch=epoch,
            step=step,
        )


def _progress_bar(loader: Iterable, description: str | None) -> Any:
    """A tqdm bar on stderr over ``loader`` (which has a length), closed at the end of its
    ``with``; without a description, a ``with`` that gives None."""
    if description is None:
        return contextlib.nullcontext()
    from tqdm import tqdm

    return tqdm(
        loader,
        total=len(loader),  # type: ignore[arg-type]
        desc=description,
        unit="step",
        leave=False,
        file=sys.stderr,
        dynamic_ncols=True,
    )


def _fetch_timed(loader: Iterable, cpu_seconds: list[float]) -> Iterator:
    """``loader``'s batches; the CPU time this process spends getting each one (the input
    pipeline's, when it runs here: decoding, crops, RandAugment) is added to ``cpu_seconds[0]``,
    so that an epoch's CPU time splits into data and step."""
    batches = iter(loader)
    while True:
        fetch_start = time.process_time()
        batch = next(batches, None)
        cpu_seconds[0] += time.process_time() - fetch_start
        if batch is None:
            return
        yield batch


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
        raise DataError("the evaluation split is empty")
    return int(correct) / total


def fit(
    model: nn.Module,
    train_loader: DataLoader | Iterable[tuple[torch.Tensor, torch.Tensor]],
    eval_loader: DataLoader | Iterable[tuple[torch.Tensor, torch.Tensor]],
    recipe: Recipe,
    *,
    device: torch.device,
    on_epoch_end: EpochCallback | None = None,
) -> FitResult:
    """Train ``model`` for ``recipe.epochs`` epochs, then measure top-1 accuracy on ``eval_loader``.

    The model is moved to ``device`` (channels_last on a GPU) and trained in place. The global
    torch RNG (dropout, stochastic depth) is seeded with ``recipe.seed`` first; with the loader's
    own seeded shuffle, two runs on the CPU give identical results.

    Args:
        model: the network, freshly built.
        train_loader: training batches ``(images, labels)``; its length gives steps per epoch.
        eval_loader: held-out batches for top-1 accuracy.
        recipe: epochs, optimizer, LR schedule, label smoothing, precision and seed.
        device: where to train.
        on_epoch_end: called after every epoch as ``on_epoch_end(epoch, metrics)`` with
            :func:`_fit_metrics`'s metrics; when given, accuracy is measured after every epoch
            (for early stopping such as ASHA), otherwise only after the last. It may raise.

    Raises:
        NonFiniteLossError: the loss became NaN or infinite; training stopped at that step.
    """
    torch.manual_seed(recipe.seed)
    if device.type == "cuda":
        # Let cuDNN pick the fastest kernels for these fixed shapes, as the timed step did.
        torch.backends.cudnn.benchmark = True
    model.to(device, memory_format=memory_format_for(device))
    steps_per_epoch = len(train_loader)  # type: ignore[arg-type]
    if steps_per_epoch == 0:
        raise DataError("the training loader yields no batches (batch size larger than the data)")
    optimizer = build_optimizer(model, recipe)
    scheduler = build_scheduler(optimizer, recipe, steps_per_epoch)
    state = TrainState(model, optimizer, scheduler, make_loss(recipe))
    history: list[dict[str, float]] = []
    train_seconds, accuracy, train_loss = 0.0, float("nan"), float("nan")
    for epoch in range(1, recipe.epochs + 1):
        epoch_start = time.perf_counter()
        try:
            stats = train_one_epoch(
                state, train_loader, device=device, precision=recipe.precision, epoch=epoch
            )
        except NonFiniteLossError as error:
            error.seconds = train_seconds + time.perf_counter() - epoch_start
            raise
        train_seconds, train_loss = train_seconds + stats.seconds, stats.train_loss
        if on_epoch_end is not None or epoch == recipe.epochs:
            accuracy = evaluate_accuracy(
                model, eval_loader, device=device, precision=recipe.precision
            )
        history.append(_fit_metrics(epoch, stats, accuracy, optimizer))
        if on_epoch_end is not None:
            on_epoch_end(epoch, history[-1])
    return FitResult(accuracy, train_loss, train_seconds, history)


def _fit_metrics(
    epoch: int, stats: EpochStats, accuracy: float, optimizer: Optimizer
) -> dict[str, float]:
    """One epoch of :func:`fit`: ``epoch``, ``train_loss``, ``accuracy``, ``lr``,
    ``epoch_seconds``, ``epoch_cpu_seconds``, ``images_per_second``; what its ``on_epoch_end``
    receives (the search reports it to Ray Tune, which takes a dict)."""
    return {
        "epoch": float(epoch),
        "train_loss": stats.train_loss,
        "accuracy": accuracy,
        "lr": float(optimizer.param_groups[0]["lr"]),
        "epoch_seconds": stats.seconds,
        "epoch_cpu_seconds": stats.cpu_seconds,
        "images_per_second": stats.images / max(stats.seconds, 1e-9),
    }
