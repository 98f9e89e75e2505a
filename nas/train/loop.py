"""The training loop: one step, one epoch, top-1 evaluation, and brief training (:func:`fit`).

The search trains every candidate briefly with :func:`fit`; ``nas train``'s progressive trainer
runs the same :func:`train_one_epoch` and :func:`evaluate_accuracy`, and step timing runs
:func:`train_step` itself, so the step that is timed is the step that trains. A loss that becomes
NaN or infinite stops training at once with :class:`~nas.errors.NonFiniteLossError`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import DataLoader

from nas.errors import DataError, NonFiniteLossError
from nas.train.device import autocast, memory_format_for, resolve_precision
from nas.train.optim import build_optimizer, build_scheduler, make_loss
from nas.train.recipe import Recipe

__all__ = [
    "BatchTransform",
    "EpochCallback",
    "FitResult",
    "LossReduction",
    "StepCallback",
    "evaluate_accuracy",
    "fit",
    "train_one_epoch",
    "train_step",
]

#: ``on_epoch_end(epoch, metrics)``: epoch counts from 1; metrics as in :func:`fit`.
EpochCallback = Callable[[int, dict[str, float]], None]

#: ``batch_transform(images, labels) -> (images, labels)``, applied to each batch on the device.
BatchTransform = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

#: ``on_step(step, loss)``: step counts from 1 within the epoch; loss is the step's, as a float.
StepCallback = Callable[[int, float], None]

#: ``reduce_loss(loss) -> loss``: a step's detached loss (a 0-d tensor) -> the one to report.
LossReduction = Callable[[torch.Tensor], torch.Tensor]


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
    reduce_loss: LossReduction | None = None,
) -> dict[str, float]:
    """Train for one pass over ``loader``; the scheduler (if any) steps after every batch.

    ``batch_transform(images, labels)``, if given, acts on each batch once it is on the device
    (e.g. torchvision's ``v2.MixUp``, which turns the labels into class probabilities);
    ``on_step(step, loss)``, if given, runs after every optimizer and scheduler step (e.g. a
    weight EMA update, a progress bar). ``reduce_loss(loss)``, if given, turns each step's loss
    into the one that is checked and averaged: under data parallelism, the mean over the
    workers, so that every worker reports the global batch's loss and all of them stop at the
    same step when it is not finite (none is left waiting in a collective for one that stopped).

    Returns:
        ``{"train_loss": mean loss, "steps": steps, "images": images seen, "seconds": wall time,
        "cpu_seconds": this process's CPU time, "data_cpu_seconds": the part of it spent
        getting the batches from ``loader``}`` (on a shared CPU with one torch thread and
        in-process data loading, the CPU time is what the wall time would be on an idle machine;
        the data part is the input pipeline's, near 0 when loader workers do it).

    Raises:
        NonFiniteLossError: the loss of some step was NaN or infinite (training stops there).
    """
    precision = resolve_precision(precision, device)
    memory_format = memory_format_for(device)
    non_blocking = device.type == "cuda"
    model.train()
    loss_sum, steps, images_seen, data_cpu = 0.0, 0, 0, [0.0]
    start, cpu_start = time.perf_counter(), time.process_time()
    for images, labels in _fetch_timed(loader, data_cpu):
        images = images.to(device, non_blocking=non_blocking, memory_format=memory_format)
        labels = labels.to(device, non_blocking=non_blocking)
        if batch_transform is not None:
            images, labels = batch_transform(images, labels)
            images = images.contiguous(memory_format=memory_format)
        loss = train_step(
            model, images, labels, optimizer, loss_fn, device=device, precision=precision
        )
        if reduce_loss is not None:
            loss = reduce_loss(loss)
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
        "cpu_seconds": time.process_time() - cpu_start,
        "data_cpu_seconds": data_cpu[0],
    }


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
            ``metrics = {"epoch", "train_loss", "accuracy", "lr", "epoch_seconds",
            "epoch_cpu_seconds", "images_per_second"}``; when given, accuracy is measured after
            every epoch (for early stopping such as ASHA), otherwise only after the last. It may
            raise to stop.

    Returns:
        The final accuracy, last epoch's loss, training wall time and per-epoch history.

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
    step = {
        "optimizer": optimizer,
        "scheduler": build_scheduler(optimizer, recipe, steps_per_epoch),
        "loss_fn": make_loss(recipe),
    }
    history: list[dict[str, float]] = []
    train_seconds, accuracy = 0.0, float("nan")
    stats: dict[str, float] = {"train_loss": float("nan")}
    for epoch in range(1, recipe.epochs + 1):
        epoch_start = time.perf_counter()
        try:
            stats = train_one_epoch(
                model, train_loader, **step, device=device, precision=recipe.precision, epoch=epoch
            )
        except NonFiniteLossError as error:
            error.seconds = train_seconds + time.perf_counter() - epoch_start
            raise
        train_seconds += stats["seconds"]
        last = epoch == recipe.epochs
        if on_epoch_end is not None or last:
            accuracy = evaluate_accuracy(
                model, eval_loader, device=device, precision=recipe.precision
            )
        metrics = {
            "epoch": float(epoch),
            "train_loss": stats["train_loss"],
            "accuracy": accuracy,
            "lr": float(optimizer.param_groups[0]["lr"]),
            "epoch_seconds": stats["seconds"],
            "epoch_cpu_seconds": stats["cpu_seconds"],
            "images_per_second": stats["images"] / max(stats["seconds"], 1e-9),
        }
        history.append(metrics)
        if on_epoch_end is not None:
            on_epoch_end(epoch, metrics)
    return FitResult(
        accuracy=accuracy,
        train_loss=stats["train_loss"],
        train_seconds=train_seconds,
        history=history,
    )
