"""Full training with progressive learning and adaptive regularization: what ``nas train`` runs.

:func:`train_progressive` trains a spec through its schedule's stages (:mod:`nas.train.schedule`),
each at its image size and regularization, carrying the weights, optimizer, learning-rate
schedule and weight EMA from stage to stage, and evaluating the held-out split every epoch; a
run writes its run directory and resumes from it. :func:`run_epochs` and :func:`finish_run` are
the loop and its end, shared with the data-parallel workers; :mod:`nas.train.setup` sets a run
up and :mod:`nas.train.epoch` prepares and evaluates each epoch. The recipe, its sources and the
run directory's files: docs/training.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nas.errors import CheckpointError, ConfigError
from nas.train.checkpoint import CHECKPOINT_NAME, epoch_seed, write_checkpoint
from nas.train.config import ProgressiveConfig
from nas.train.device import resolve_device, resolve_precision
from nas.train.epoch import (
    StageData,
    epoch_description,
    epoch_line,
    evaluate_epoch,
    stage_regularization,
)
from nas.train.initial import check_initial_weights
from nas.train.loop import EpochCallback, evaluate_accuracy, train_one_epoch
from nas.train.metrics import FinalMetrics, write_metrics
from nas.train.setup import (
    Context,
    LocalContext,
    ModelBuilder,
    TrainingRun,
    check_memory,
    check_schedule,
    checkpoint_to_resume,
    setup_run,
)
from searchspace.builder import EfficientNetV2
from searchspace.files import atomic_write, check_output_path
from searchspace.spec import ArchSpec
from searchspace.weights import save_weights

__all__ = ["ProgressiveResult", "finish_run", "run_epochs", "train_progressive"]


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
        history: one metrics dict per epoch, as ``metrics.csv`` holds them
            (:class:`~nas.train.metrics.EpochMetrics`; rows a checkpoint older than a column
            holds lack it).
        out_dir: the run directory.
        resumed_from: the epochs already done when this call started (0 for a fresh run).
    """

    spec: ArchSpec
    accuracy: float
    accuracy_raw: float
    test_accuracy: float | None
    train_seconds: float
    train_cpu_seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    out_dir: Path = Path()
    resumed_from: int = 0

    @classmethod
    def from_record(
        cls, spec: ArchSpec, record: dict[str, Any], out_dir: Path, resumed_from: int
    ) -> ProgressiveResult:
        """The result a run's ``metrics.json`` record (its ``final`` written) describes."""
        final = FinalMetrics(**record["final"])
        return cls(
            spec=spec,
            accuracy=final.accuracy,
            accuracy_raw=final.accuracy_raw,
            test_accuracy=final.test_accuracy,
            train_seconds=final.train_seconds,
            train_cpu_seconds=final.train_cpu_seconds,
            history=record["history"],
            out_dir=out_dir,
            resumed_from=resumed_from,
        )


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
            (train, eval, the schedule's check) and names the run; the net's classifier
            dropout (:func:`~nas.train.epoch.set_dropout`) follows the schedule; metrics.json
            records the net's class as ``model``, and its final (EMA) weights are a plain state
            dict, ``state_dict.pt``. The memory estimate, an effnas net's, is skipped.

    Each epoch's metrics are :class:`~nas.train.metrics.EpochMetrics`.

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
    run = setup_run(spec, config, checkpoint, context, device, precision, out_dir, say, build)
    run_epochs(run, context, progress=progress, say=say)
    result = finish_run(run, context)
    assert result is not None  # rank 0
    return result


def run_epochs(
    run: TrainingRun,
    context: Context,
    *,
    progress: bool = False,
    say: Callable[[str], None] = lambda line: None,
) -> None:
    """Train the epochs from ``run.start_epoch`` on: what every process of a run executes.

    Each rank trains its share of every global batch at the stage's settings; rank 0 then
    evaluates, appends the epoch's metrics to the history and writes the checkpoint and metrics
    into the context's directory, and every rank tells the context that the epoch is done.
    """
    config, state, main = run.config, run.state, context.rank == 0
    stage_data = StageData(config)
    for epoch in range(run.start_epoch, config.epochs):
        context.begin_epoch(epoch)
        settings = config.schedule.at(config.stage_of(epoch))
        shard = (context.rank, context.world_size)
        loader = stage_data.loader(settings, epoch, shard, pin_memory=run.device.type == "cuda")
        # Every random draw of the epoch comes from its seed (each rank's own): a resumed run
        # draws what the uninterrupted one drew.
        seed, classes = epoch_seed(config.seed, epoch), run.spec.num_classes
        mixup = stage_regularization(state.model, settings, classes, seed, context.rank)
        stats = train_one_epoch(
            state,
            loader,
            device=run.device,
            precision=run.precision,
            epoch=epoch + 1,
            mixup=mixup,
            reduce_loss=context.reduce_loss,
            progress=epoch_description(epoch, config, settings) if progress and main else None,
        )
        metrics = None
        if main:
            heldout = stage_data.heldout_loader()
            metrics = evaluate_epoch(run, settings, stats, epoch + 1, heldout, context.world_size)
            run.history.append(metrics.to_dict())
            _write_run_files(run, context, epoch + 1)
            say(epoch_line(metrics, settings, run))
        context.epoch_done(epoch + 1, metrics)


def _write_run_files(run: TrainingRun, context: Context, epoch: int) -> None:
    """The checkpoint after ``epoch`` epochs and the metrics files, into the context's
    directory (rank 0)."""
    assert context.directory is not None
    write_checkpoint(
        context.directory / CHECKPOINT_NAME,
        spec=run.spec,
        config=run.config.to_dict(),
        epoch=epoch,
        modules=run.state.modules(),
        history=run.history,
        device=run.device,
    )
    write_metrics(context.directory, run.record)


def finish_run(run: TrainingRun, context: Context) -> ProgressiveResult | None:
    """Rank 0: save the evaluated (EMA) model as the run's weights file, score the test split if
    any, write the final metrics; every rank then tells the context. None on other ranks."""
    if context.rank != 0 or context.directory is None:
        context.run_done(None)
        return None
    config, record = run.config, run.record
    final_model = run.state.evaluated
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
    final = FinalMetrics(
        accuracy=last["accuracy"],
        accuracy_raw=last["accuracy_raw"],
        accuracy_at_train_size=last.get("accuracy_at_train_size"),
        test_accuracy=test_accuracy,
        train_seconds=last["train_seconds"],
        train_cpu_seconds=last.get("train_cpu_seconds", 0.0),
        epochs=config.epochs,
        eval_image_size=run.spec.eval_resolution,
        train_image_size=last["image_size"],
    )
    record["final"] = final.to_dict()
    write_metrics(context.directory, record)
    context.run_done(final)
    return ProgressiveResult.from_record(run.spec, record, run.out_dir, run.start_epoch)
