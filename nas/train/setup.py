"""Setting up a run of ``nas train``: the checks before anything loads, where the epochs run
(:class:`Context`), and the run itself, built or restored from its checkpoint
(:func:`setup_run`, which :func:`nas.train.progressive.train_progressive` and every
data-parallel worker of :mod:`nas.train.distributed` call).

A :class:`Context` says the process's rank among how many, wraps the model
(DistributedDataParallel, or nothing) and is told when an epoch is done; :class:`LocalContext`
is one process's. How the ranks share batches, random draws, evaluation and files:
docs/training.md, "On several workers or a cluster".
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from nas.data.bundle import DataBundle
from nas.errors import CheckpointError, ConfigError, ScheduleError
from nas.train.checkpoint import (
    CHECKPOINT_NAME,
    check_checkpoint,
    read_checkpoint,
    restore_checkpoint,
)
from nas.train.config import ProgressiveConfig
from nas.train.device import device_name, memory_format_for, memory_shortfall
from nas.train.epoch import stage_plan
from nas.train.initial import load_initial_weights
from nas.train.loop import EpochCallback, LossReduction, TrainState, weight_ema
from nas.train.metrics import EpochMetrics, FinalMetrics, run_record
from nas.train.optim import build_optimizer, build_scheduler, make_loss
from searchspace.builder import build_model
from searchspace.files import make_output_dir
from searchspace.spec import ArchSpec

__all__ = [
    "Context",
    "LocalContext",
    "ModelBuilder",
    "TrainingRun",
    "check_memory",
    "check_schedule",
    "checkpoint_to_resume",
    "setup_run",
]

#: ``build(spec) -> model``: the net a run trains, from the spec with the dataset's classes.
ModelBuilder = Callable[[ArchSpec], nn.Module]


class Context(Protocol):
    """Where a run's epochs execute: this process alone (:class:`LocalContext`) or one worker
    of a data-parallel group (``nas.train.distributed``). Rank 0 evaluates, keeps the EMA and
    the history and writes the run's files into :attr:`directory`; every rank trains its share
    of each global batch (the loader is sharded by ``rank`` and ``world_size``).

    Attributes:
        rank: this process's rank, 0 .. ``world_size - 1``.
        world_size: the number of processes training together.
        directory: where rank 0 writes the run directory's files (None on the other ranks).
        reduce_loss: averages a step's loss over the workers (None in one process).
    """

    rank: int
    world_size: int
    directory: Path | None
    reduce_loss: LossReduction | None

    def wrap(self, model: nn.Module) -> nn.Module:
        """The model as the training steps run it (e.g. in DistributedDataParallel)."""

    def begin_epoch(self, epoch: int) -> None:
        """Called on every rank before epoch ``epoch`` (0-based) trains."""

    def epoch_done(self, epoch: int, metrics: EpochMetrics | None) -> None:
        """Called on every rank after ``epoch`` epochs; rank 0 has written the files by then.
        ``metrics`` is the epoch's row on rank 0, None elsewhere."""

    def run_done(self, final: FinalMetrics | None) -> None:
        """Called on every rank at the end; ``final`` is metrics.json's ``final`` on rank 0."""


class LocalContext:
    """One process: the run directory is ``out_dir``, the model is trained as it is;
    ``on_epoch_end(epoch, metrics)`` gets each epoch's row as a dict."""

    rank = 0
    world_size = 1
    reduce_loss = None

    def __init__(self, out_dir: Path, on_epoch_end: EpochCallback | None = None) -> None:
        self.directory: Path | None = out_dir
        self.on_epoch_end = on_epoch_end

    def wrap(self, model: nn.Module) -> nn.Module:
        return model

    def begin_epoch(self, epoch: int) -> None:
        pass

    def epoch_done(self, epoch: int, metrics: EpochMetrics | None) -> None:
        if self.on_epoch_end is not None and metrics is not None:
            self.on_epoch_end(epoch, metrics.to_dict())

    def run_done(self, final: FinalMetrics | None) -> None:
        pass


@dataclass
class TrainingRun:
    """One process's state of a run: what :func:`setup_run` sets up, the epochs advance and
    :func:`nas.train.progressive.finish_run` ends. ``out_dir`` is the run directory the user
    named (the files may be written elsewhere first: see :class:`Context`). ``history`` (rank
    0's) holds the rows of ``metrics.csv`` as written, older checkpoints' included (which may
    lack a later column), and ``record`` the document ``metrics.json`` holds
    (:func:`~nas.train.metrics.run_record`)."""

    spec: ArchSpec
    config: ProgressiveConfig
    out_dir: Path
    device: torch.device
    precision: str
    state: TrainState
    eval_data: DataBundle
    eval_loader: Any
    history: list[dict[str, Any]]
    start_epoch: int
    record: dict[str, Any]


def check_schedule(spec: ArchSpec, config: ProgressiveConfig) -> None:
    """Refuse a stage whose images are smaller than the net's total stride.

    Raises:
        ScheduleError: naming the stage and its size.
    """
    for settings in config.schedule.all_stages():
        if settings.image_size < spec.total_stride:
            raise ScheduleError(
                f"image size {settings.image_size} of stage {settings.stage + 1} is below the "
                f"net's total stride {spec.total_stride}"
            )


def check_memory(
    spec: ArchSpec, config: ProgressiveConfig, batch_size: int, device: torch.device, precision: str
) -> None:
    """Refuse a step (``batch_size`` images at the largest stage size) that cannot fit in the
    device's memory, before the data loads.

    Raises:
        ConfigError: what is short.
    """
    largest = max(settings.image_size for settings in config.schedule.all_stages())
    shortfall = memory_shortfall(spec, batch_size, largest, device, precision)
    if shortfall is not None:
        raise ConfigError(f"{spec.label} {shortfall}; lower --batch-size or the image size")


def checkpoint_to_resume(
    out_dir: Path, resume: bool, data: bytes | None = None
) -> dict[str, Any] | None:
    """The checkpoint in ``out_dir`` to resume from (read and checked to be intact), or None for
    a fresh run. ``data``: the checkpoint file's content, if the caller read it already.

    Raises:
        CheckpointError: ``resume`` without a checkpoint, an unreadable one, or a fresh run
            into a directory that holds one.
    """
    checkpoint_path = out_dir / CHECKPOINT_NAME
    if resume:
        if not checkpoint_path.is_file():
            raise CheckpointError(
                f"--resume: there is no checkpoint {str(checkpoint_path)!r} to resume"
            )
        return read_checkpoint(checkpoint_path, data)
    if checkpoint_path.exists():
        raise CheckpointError(
            f"{str(out_dir)!r} already holds a checkpoint; pass --resume to continue that run, "
            "or choose another --out"
        )
    return None


def setup_run(
    spec: ArchSpec,
    config: ProgressiveConfig,
    checkpoint: dict[str, Any] | None,
    context: Context,
    device: torch.device,
    precision: str,
    out_dir: Path,
    say: Callable[[str], None],
    build: ModelBuilder | None = None,
) -> TrainingRun:
    """Load the held-out data, build (or restore from ``checkpoint``, the one in ``out_dir``,
    the run directory the user named) what training carries, let the context wrap the model;
    on rank 0 write spec.yaml into the context's directory and say the plan. ``build``: as
    :func:`~nas.train.progressive.train_progressive`'s."""
    # Accuracy is measured on the held-out split at the spec's eval size; the training split is
    # loaded per stage, at that stage's size.
    eval_data = config.load(spec.eval_resolution, seed=config.seed)
    spec = spec.replace(num_classes=eval_data.num_classes)
    eval_loader = eval_data.heldout_loader(config.batch_size, num_workers=config.num_workers)
    steps_per_epoch = len(eval_data.train_loader(config.batch_size, num_workers=0))
    main = context.rank == 0
    init = checkpoint is None
    state = _build_state(spec, config, device, steps_per_epoch, init, main, say, build)
    history: list[dict[str, Any]] = []
    start_epoch = 0
    if checkpoint is not None:
        check_checkpoint(checkpoint, spec, config.to_dict(), out_dir / CHECKPOINT_NAME)
        history, start_epoch = restore_checkpoint(checkpoint, state.modules(), device)
        say(f"resuming {out_dir} after epoch {start_epoch} of {config.epochs}")
    state.wrapped = context.wrap(state.model)
    net = type(state.model)
    model = None if build is None else f"{net.__module__}.{net.__qualname__}"
    record = run_record(spec, config, device_name(device), context.world_size, history, model)
    if main and context.directory is not None:
        make_output_dir(context.directory, "run directory", ConfigError)
        spec.save(context.directory / "spec.yaml")
        say(f"{eval_data.describe()}; evaluating at {spec.eval_resolution} px")
        for line in stage_plan(config):
            say(line)
    return TrainingRun(
        spec, config, out_dir, device, precision, state, eval_data, eval_loader, history,
        start_epoch, record,
    )  # fmt: skip


def _build_state(
    spec: ArchSpec,
    config: ProgressiveConfig,
    device: torch.device,
    steps_per_epoch: int,
    init: bool,
    ema: bool,
    say: Callable[[str], None],
    build: ModelBuilder | None,
) -> TrainState:
    """Model (its initial weights from ``config.init`` if ``init``), EMA (if ``ema`` and the
    config has one), optimizer, LR schedule and loss: built once, carried across every stage.
    The same seed builds the same weights on every worker."""
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    model = build_model(spec) if build is None else build(spec)
    if config.init and init:
        say(load_initial_weights(model, config.init))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes within a stage
    model.to(device, memory_format=memory_format_for(device))
    averaged = weight_ema(model, config.ema_decay) if config.ema_decay > 0 and ema else None
    optimizer = build_optimizer(model, config)
    return TrainState(
        model=model,
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, config, steps_per_epoch),
        loss_fn=make_loss(config),
        ema=averaged,
    )
