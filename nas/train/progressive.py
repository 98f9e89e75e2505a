"""Full training with progressive learning and adaptive regularization: what ``nas train`` runs.

:func:`train_progressive` reads top to bottom as the recipe of the paper (Tan and Le 2021, sec. 4
and shared/REFERENCE.md section 6):

- Training is split into the schedule's M stages (:mod:`nas.train.schedule`). The epochs split
  evenly: stage ``i`` covers epochs ``floor(E * i / M)`` up to ``floor(E * (i + 1) / M)``, the
  reference code's stage boundaries ``int(total * (i + 1) / M)`` counted in epochs, so the
  remainder is spread over the stages (10 epochs in 4 stages: 2, 3, 2, 3).
- Each stage trains on random-resized crops of the images at its size (the reference code's
  scale augmentation, ``config.train_crop``; or the whole images resized), augmented by
  torchvision's ``RandAugment`` (two ops) at its magnitude rounded to a whole bin, mixed by
  torchvision's ``v2.MixUp`` at its alpha, with the model's classifier dropout set to its rate. A
  magnitude or an alpha of 0 turns that augmentation off.
- Weights, optimizer state, the learning-rate schedule and the weight EMA carry over from stage
  to stage; nothing is reset. The learning-rate schedule (warm-up, then cosine or the paper's
  exponential decay) runs over the whole training, not per stage.
- The training step and its pieces are the search's own (:mod:`nas.train.loop`,
  :mod:`nas.train.optim`): the optimizer (RMSProp as in the paper, SGD or AdamW) without weight
  decay on BatchNorm and biases, label smoothing, bf16 autocast and channels_last on a GPU.
- A weight EMA (``torch.optim.swa_utils.AveragedModel``, parameters and BatchNorm statistics)
  follows every step; the held-out split is evaluated at the spec's eval size with the EMA
  weights (``accuracy``) and the raw weights (``accuracy_raw``) after every epoch, and with the
  EMA weights at the stage's own training size (``accuracy_at_train_size``): the two differ by
  the train-test resolution discrepancy the paper discusses (sec. 4.1).

Everything a run writes goes to its run directory: ``checkpoint.pt`` after every epoch
(:mod:`nas.train.checkpoint`; ``resume=True`` continues exactly where it stopped), ``metrics.csv``
and ``metrics.json`` (:mod:`nas.train.metrics`), ``spec.yaml`` (the spec trained, with the
dataset's classes) and at the end ``weights.pt``, an effnas weights file of the evaluated (EMA)
model. Initial weights for fine-tuning come from :mod:`nas.train.initial`.

Another net (a torchvision model, to compare with: ``bench/end_to_end.py``) trains under the same
loop, recipe, schedule and data when :func:`train_progressive` is given its ``build``.

One loop serves one process and data-parallel training: :func:`open_run`, :func:`run_epochs`
and :func:`finish_run` run in a :class:`Context` that says the process's rank among how many,
wraps the model (DistributedDataParallel, or nothing) and is told when an epoch is done
(:class:`LocalContext` here; ``nas.train.distributed`` reports to Ray Train). Each rank trains
on its share of every global batch of ``batch_size`` (one seeded permutation per epoch, dealt
out by a ``DistributedSampler``; one process takes all of it), every epoch reseeds each rank's
random draws from the run's seed, and rank 0 alone evaluates, keeps the EMA and writes files.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torchvision.transforms import v2

from nas.data.bundle import DataBundle, shard_seed
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
from nas.train.initial import check_initial_weights, load_initial_weights
from nas.train.loop import (
    EpochCallback,
    EpochStats,
    LossReduction,
    TrainState,
    evaluate_accuracy,
    train_one_epoch,
    weight_ema,
)
from nas.train.metrics import write_metrics
from nas.train.optim import build_optimizer, build_scheduler, make_loss
from nas.train.schedule import StageSettings
from searchspace.builder import EfficientNetV2, build_model
from searchspace.files import atomic_write, check_output_path, make_output_dir
from searchspace.spec import ArchSpec
from searchspace.weights import save_weights

__all__ = [
    "Context",
    "LocalContext",
    "ModelBuilder",
    "ProgressiveResult",
    "TrainingRun",
    "finish_run",
    "open_run",
    "run_epochs",
    "set_dropout",
    "train_progressive",
]

#: ``build(spec) -> model``: the net a run trains, from the spec with the dataset's classes.
ModelBuilder = Callable[[ArchSpec], nn.Module]


@dataclass
class ProgressiveResult:
    """What :func:`train_progressive` returns.

    Attributes:
        spec: the spec trained (with the dataset's number of classes).
        accuracy: held-out top-1 (0..1) of the evaluated weights (EMA, if on) after the last
            epoch.
        accuracy_raw: the same for the raw (non-averaged) weights.
        test_accuracy: top-1 on the test split (the dataset's official one, else carved by seed).
        train_seconds: wall time spent in training epochs (without evaluation), all sessions.
        train_cpu_seconds: this process's CPU time in those epochs (rank 0's), all sessions.
        history: one metrics dict per epoch (see :func:`train_progressive`).
        out_dir: the run directory.
        resumed_from: the epochs already done when this call started (0 for a fresh run).
    """

    spec: ArchSpec
    accuracy: float
    accuracy_raw: float
    test_accuracy: float | None
    train_seconds: float
    train_cpu_seconds: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)
    out_dir: Path = Path()
    resumed_from: int = 0

    @classmethod
    def from_record(
        cls, spec: ArchSpec, record: dict[str, Any], out_dir: Path, resumed_from: int
    ) -> ProgressiveResult:
        """The result a run's ``metrics.json`` record (its ``final`` written) describes."""
        final = record["final"]
        return cls(
            spec=spec,
            accuracy=final["accuracy"],
            accuracy_raw=final["accuracy_raw"],
            test_accuracy=final["test_accuracy"],
            train_seconds=final["train_seconds"],
            train_cpu_seconds=final["train_cpu_seconds"],
            history=record["history"],
            out_dir=out_dir,
            resumed_from=resumed_from,
        )


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

    def epoch_done(self, epoch: int, metrics: dict[str, Any] | None) -> None:
        """Called on every rank after ``epoch`` epochs; rank 0 has written the files by then.
        ``metrics`` is the epoch's row on rank 0, None elsewhere."""

    def run_done(self, final: dict[str, Any] | None) -> None:
        """Called on every rank at the end; ``final`` is metrics.json's ``final`` on rank 0."""


class LocalContext:
    """One process: the run directory is ``out_dir``, the model is trained as it is."""

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

    def epoch_done(self, epoch: int, metrics: dict[str, Any] | None) -> None:
        if self.on_epoch_end is not None and metrics is not None:
            self.on_epoch_end(epoch, metrics)

    def run_done(self, final: dict[str, Any] | None) -> None:
        pass


@dataclass
class TrainingRun:
    """One process's state of a run: what :func:`open_run` sets up, the epochs advance and
    :func:`finish_run` ends. ``out_dir`` is the run directory the user named (the files may be
    written elsewhere first: see :class:`Context`); ``history`` and ``record`` are rank 0's."""

    spec: ArchSpec
    config: ProgressiveConfig
    out_dir: Path
    device: torch.device
    precision: str
    parts: TrainState
    eval_data: DataBundle
    eval_loader: Any
    history: list[dict[str, float]]
    start_epoch: int
    record: dict[str, Any]


def train_progressive(
    spec: ArchSpec,
    config: ProgressiveConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    on_epoch_end: EpochCallback | None = None,
    build: ModelBuilder | None = None,
) -> ProgressiveResult:
    """Train ``spec`` on ``config.dataset`` with progressive learning in this process; write the
    run directory. (``nas.train.distributed.train_distributed`` runs the same epochs on Ray
    Train's data-parallel workers.)

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
        build: makes another net than ``spec``'s (e.g. a torchvision model for a comparison)
            from ``spec`` with the dataset's classes. ``spec`` then only sets the image sizes
            (train, eval, the schedule's check) and names the run; the net's classifier dropout
            (:func:`set_dropout`) follows the schedule; metrics.json records the net's class
            as ``model``, and its final (EMA) weights are a plain state dict, ``state_dict.pt``.
            The memory estimate, an effnas net's, is skipped.

    Each epoch's metrics are :func:`_evaluate_epoch`'s.

    Raises:
        CheckpointError: ``resume`` without a checkpoint, a checkpoint that cannot be read or
            that belongs to another spec or config, or a checkpoint in the way of a fresh run.
        ScheduleError: a stage image size below the net's total stride.
        DataError, WeightsError, ConfigError: bad dataset, ``--init`` file or settings.
        NonFiniteLossError: the loss became NaN or infinite (the last checkpoint stays).
    """
    say = log if log is not None else (lambda line: None)
    out_dir = check_output_path(out_dir, "run directory", ConfigError, folder=True)
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    check_schedule(spec, config)
    if build is None:
        check_memory(spec, config, config.batch_size, device, precision)
    check_initial_weights(config.init)
    checkpoint = checkpoint_to_resume(out_dir, resume)
    context = LocalContext(out_dir, on_epoch_end)
    run = open_run(spec, config, checkpoint, context, device, precision, out_dir, say, build)
    run_epochs(run, context, progress=progress, say=say)
    result = finish_run(run, context)
    assert result is not None  # rank 0
    return result


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


def open_run(
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
    :func:`train_progressive`'s."""
    # Accuracy is measured on the held-out split at the spec's eval size; the training split is
    # loaded per stage, at that stage's size.
    eval_data = config.load(spec.eval_resolution, seed=config.seed)
    spec = spec.replace(num_classes=eval_data.num_classes)
    eval_loader = eval_data.heldout_loader(config.batch_size, num_workers=config.num_workers)
    steps_per_epoch = len(eval_data.train_loader(config.batch_size, num_workers=0))
    main = context.rank == 0
    init = checkpoint is None
    parts = _build(spec, config, device, steps_per_epoch, init=init, ema=main, say=say, build=build)
    history: list[dict[str, float]] = []
    start_epoch = 0
    if checkpoint is not None:
        check_checkpoint(checkpoint, spec, config.to_dict(), out_dir / CHECKPOINT_NAME)
        history, start_epoch = restore_checkpoint(checkpoint, parts.modules(), device)
        say(f"resuming {out_dir} after epoch {start_epoch} of {config.epochs}")
    parts.wrapped = context.wrap(parts.model)
    record = _start_record(spec, config, device, history, context.world_size)
    if build is not None:
        record["model"] = f"{type(parts.model).__module__}.{type(parts.model).__qualname__}"
    if main and context.directory is not None:
        make_output_dir(context.directory, "run directory", ConfigError)
        spec.save(context.directory / "spec.yaml")
        say(f"{eval_data.describe()}; evaluating at {spec.eval_resolution} px")
        for line in _stage_plan(config):
            say(line)
    return TrainingRun(
        spec,
        config,
        out_dir,
        device,
        precision,
        parts,
        eval_data,
        eval_loader,
        history,
        start_epoch,
        record,
    )


def run_epochs(
    run: TrainingRun,
    context: Context,
    *,
    progress: bool = False,
    say: Callable[[str], None] = lambda line: None,
) -> None:
    """Train the epochs from ``run.start_epoch`` on: what every process of a run executes.

    Each rank trains its share of every global batch; rank 0 then evaluates, appends the epoch's
    metrics to the history and writes the checkpoint and metrics into the context's directory,
    and every rank tells the context that the epoch is done.
    """
    config = run.config
    stage_data = _StageData(config)
    for epoch in range(run.start_epoch, config.epochs):
        context.begin_epoch(epoch)
        settings = config.schedule.at(config.stage_of(epoch))
        loader = stage_data.loader(settings, epoch, context, pin_memory=run.device.type == "cuda")
        stats = _train_epoch(run, loader, settings, epoch, context, progress)
        metrics = None
        if context.rank == 0:
            metrics = _evaluate_epoch(run, settings, stats, stage_data.heldout_loader())
            before = run.history[-1] if run.history else {}
            metrics.update(
                epoch=epoch + 1,
                train_seconds=before.get("train_seconds", 0.0) + stats.seconds,
                # .get: a run resumed from a checkpoint older than this column starts it at 0.
                train_cpu_seconds=before.get("train_cpu_seconds", 0.0) + stats.cpu_seconds,
            )
            run.history.append(metrics)
            _write_run_files(run, context, epoch + 1)
            say(_epoch_line(metrics, settings, config, run))
        context.epoch_done(epoch + 1, metrics)


def _build(
    spec: ArchSpec,
    config: ProgressiveConfig,
    device: torch.device,
    steps_per_epoch: int,
    *,
    init: bool,
    ema: bool,
    say: Callable[[str], None],
    build: ModelBuilder | None = None,
) -> TrainState:
    """Model, EMA (if ``ema`` and the config has one), optimizer, LR schedule and loss: built
    once, carried across every stage. The same seed builds the same weights on every worker."""
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


class _StageData:
    """The training split at the current stage's image size, crop and RandAugment magnitude,
    loaded when the stage begins (the same seed carves the same split at every size), and the
    held-out split at that size."""

    def __init__(self, config: ProgressiveConfig) -> None:
        self.config = config
        self.stage = -1
        self.data: DataBundle | None = None
        self._heldout: Any = None

    def loader(
        self, settings: StageSettings, epoch: int, context: Context, *, pin_memory: bool
    ) -> Any:
        """This rank's share of the epoch's global batches, shuffled by the epoch's seed."""
        if settings.stage != self.stage or self.data is None:
            magnitude = _randaugment_bin(settings)
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
            shard=(context.rank, context.world_size),
        )

    def heldout_loader(self) -> Any:
        """The held-out split at the current stage's size (made on first use: rank 0's)."""
        assert self.data is not None, "loader() first"
        if self._heldout is None:
            self._heldout = self.data.heldout_loader(
                self.config.batch_size, num_workers=self.config.num_workers
            )
        return self._heldout


def _train_epoch(
    run: TrainingRun,
    loader: Any,
    settings: StageSettings,
    epoch: int,
    context: Context,
    progress: bool,
) -> EpochStats:
    """One epoch at the stage's dropout and MixUp; the EMA follows every step. Every random
    draw of the epoch (dropout, stochastic depth, RandAugment, MixUp) comes from the epoch's
    seed, each rank's its own; ``images`` counts all ranks' images."""
    parts, config = run.parts, run.config
    seed = shard_seed(epoch_seed(config.seed, epoch), context.rank)
    torch.manual_seed(seed)
    random.seed(seed)
    set_dropout(parts.model, settings.dropout)
    mixup = (
        v2.MixUp(alpha=settings.mixup_alpha, num_classes=run.spec.num_classes)
        if settings.mixup_alpha > 0
        else None
    )
    show = progress and context.rank == 0
    stats = train_one_epoch(
        parts,
        loader,
        device=run.device,
        precision=run.precision,
        epoch=epoch + 1,
        mixup=mixup,
        reduce_loss=context.reduce_loss,
        progress=_epoch_description(epoch, config, settings) if show else None,
    )
    return dataclasses.replace(stats, images=stats.images * context.world_size)


def _evaluate_epoch(
    run: TrainingRun, settings: StageSettings, stats: EpochStats, at_train_size: Any
) -> dict[str, Any]:
    """The epoch's metrics: ``epoch``, ``stage`` (from 1), ``image_size`` (the stage's training
    size), ``randaug_magnitude`` (the bin used, 0 = off), ``mixup_alpha``, ``dropout``,
    ``train_loss`` (over the global batches), ``accuracy`` (EMA weights, at the spec's eval
    size), ``accuracy_raw`` (raw weights, eval size), ``accuracy_at_train_size`` (EMA weights,
    on the held-out images of ``at_train_size``, a loader at the stage's training size), ``lr``
    (after the epoch), ``epoch_seconds``, ``epoch_cpu_seconds`` (this process's CPU time in the
    epoch's training), ``epoch_data_cpu_seconds`` (the part of it spent reading and augmenting
    the batches, when the loader works in this process), ``eval_seconds``, ``train_seconds``
    and ``train_cpu_seconds`` (cumulative), ``images_per_second`` (all workers together)."""
    parts, device, precision = run.parts, run.device, run.precision
    eval_start = time.perf_counter()

    def score(model: nn.Module, loader: Any) -> float:
        return evaluate_accuracy(model, loader, device=device, precision=precision)

    accuracy_raw = score(parts.model, run.eval_loader)
    accuracy = score(parts.evaluated, run.eval_loader) if parts.ema is not None else accuracy_raw
    # At the eval size the held-out images are the same ones, resized alike: no second pass.
    same_size = settings.image_size == run.spec.eval_resolution
    at_train = accuracy if same_size else score(parts.evaluated, at_train_size)
    return {
        "epoch": 0,  # set by the caller, which knows the epoch
        "stage": settings.stage + 1,
        "image_size": settings.image_size,
        "randaug_magnitude": _randaugment_bin(settings),
        "mixup_alpha": settings.mixup_alpha,
        "dropout": settings.dropout,
        "train_loss": stats.train_loss,
        "accuracy": accuracy,
        "accuracy_raw": accuracy_raw,
        "accuracy_at_train_size": at_train,
        "lr": float(parts.optimizer.param_groups[0]["lr"]),
        "epoch_seconds": stats.seconds,
        "epoch_cpu_seconds": stats.cpu_seconds,
        "epoch_data_cpu_seconds": stats.data_cpu_seconds,
        "eval_seconds": time.perf_counter() - eval_start,
        "train_seconds": 0.0,  # set by the caller: cumulative over the run
        "train_cpu_seconds": 0.0,  # likewise
        "images_per_second": stats.images / max(stats.seconds, 1e-9),
    }


def _write_run_files(run: TrainingRun, context: Context, epoch: int) -> None:
    """The checkpoint after ``epoch`` epochs and the metrics files, into the context's
    directory (rank 0)."""
    assert context.directory is not None
    write_checkpoint(
        context.directory / CHECKPOINT_NAME,
        spec=run.spec,
        config=run.config.to_dict(),
        epoch=epoch,
        modules=run.parts.modules(),
        history=run.history,
        device=run.device,
    )
    write_metrics(context.directory, run.record)


def _start_record(
    spec: ArchSpec,
    config: ProgressiveConfig,
    device: torch.device,
    history: list[dict[str, float]],
    workers: int,
) -> dict[str, Any]:
    """The record metrics.json is written from (``history`` is the run's, appended to)."""
    return {
        "spec": spec.to_string(),
        "name": spec.label,
        "hash": spec.hash,
        "dataset": config.dataset,
        "device": device_name(device),
        "workers": workers,
        "config": config.to_dict(),
        "recipe": asdict(config.recipe()),
        "stages": [
            {**asdict(config.schedule.at(i)), "epochs": [epochs.start + 1, epochs.stop]}
            for i, epochs in enumerate(config.stage_epochs())
        ],
        "history": history,
        "final": None,
    }


def finish_run(run: TrainingRun, context: Context) -> ProgressiveResult | None:
    """Rank 0: save the evaluated (EMA) model as the run's weights file, score the test split if
    any, write the final metrics; every rank then tells the context. None on other ranks."""
    if context.rank != 0 or context.directory is None:
        context.run_done(None)
        return None
    config, record = run.config, run.record
    final_model = run.parts.evaluated
    if isinstance(final_model, EfficientNetV2):
        save_weights(
            final_model, context.directory / "weights.pt", source=f"nas train {run.out_dir}"
        )
    else:
        state = final_model.state_dict()
        path = context.directory / "state_dict.pt"
        atomic_write(path, lambda file: torch.save(state, file), CheckpointError)
    test_accuracy = None
    if run.eval_data.test is not None:
        test_loader = run.eval_data.test_loader(config.batch_size, num_workers=config.num_workers)
        test_accuracy = evaluate_accuracy(
            final_model, test_loader, device=run.device, precision=run.precision
        )
    last = run.history[-1]
    record["final"] = {
        "accuracy": last["accuracy"],
        "accuracy_raw": last["accuracy_raw"],
        "accuracy_at_train_size": last.get("accuracy_at_train_size"),
        "test_accuracy": test_accuracy,
        "train_seconds": last["train_seconds"],
        "train_cpu_seconds": last.get("train_cpu_seconds", 0.0),
        "epochs": config.epochs,
        "eval_image_size": run.spec.eval_resolution,
        "train_image_size": last["image_size"],
    }
    write_metrics(context.directory, record)
    context.run_done(record["final"])
    return ProgressiveResult.from_record(run.spec, record, run.out_dir, run.start_epoch)


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
    metrics: dict[str, float], settings: StageSettings, config: ProgressiveConfig, run: TrainingRun
) -> str:
    """One line per epoch: the stage, the loss, held-out accuracy at the eval size (EMA and raw)
    and at the stage's training size, and the epoch's training time."""
    note = f" (EMA; raw {metrics['accuracy_raw']:.2%})" if run.parts.ema is not None else ""
    return (
        f"epoch {metrics['epoch']}/{config.epochs} "
        f"{_describe_stage(settings, config.schedule.stages)}: "
        f"loss {metrics['train_loss']:.4f}, held-out accuracy {metrics['accuracy']:.2%}{note} "
        f"at the eval size {run.spec.eval_resolution} px, "
        f"{metrics['accuracy_at_train_size']:.2%} at the train size {settings.image_size} px, "
        f"{metrics['epoch_seconds']:.1f} s"
    )


def _epoch_description(epoch: int, config: ProgressiveConfig, settings: StageSettings) -> str:
    """The progress bar's description: the epoch, its stage and what is in force."""
    stage = _describe_stage(settings, config.schedule.stages)
    return f"epoch {epoch + 1}/{config.epochs} {stage}"
