"""``nas train --workers N``: the progressive trainer on Ray Train's data-parallel workers.

:func:`train_distributed` checks its input before Ray starts, then runs :func:`train_worker` on N
workers with Ray Train's ``TorchTrainer`` (DistributedDataParallel) on a local Ray or the cluster
named. Each worker runs the single-process trainer's own pieces
(:func:`~nas.train.setup.setup_run`, :func:`~nas.train.progressive.run_epochs`,
:func:`~nas.train.progressive.finish_run`) in a :class:`_RayContext`, from the
:class:`WorkerSettings` the driver sends; :class:`RunDirectoryMirror` copies each Ray Train
checkpoint into the run directory. What data parallelism changes in the recipe and how failures
resume: docs/training.md, "On several workers or a cluster".
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from ray.train import UserCallback

from nas.cluster import ray_session, requested_address
from nas.data.bundle import available_cpus
from nas.data.sources import load_source
from nas.errors import ConfigError, NonFiniteLossError, WorkerError, WorkerFailureError
from nas.train.checkpoint import CHECKPOINT_NAME, check_checkpoint, read_checkpoint
from nas.train.config import DistributedConfig, ProgressiveConfig
from nas.train.device import resolve_precision
from nas.train.initial import check_initial_weights
from nas.train.metrics import METRICS_CSV, METRICS_JSON, EpochMetrics, FinalMetrics
from nas.train.progressive import ProgressiveResult, finish_run, run_epochs
from nas.train.setup import (
    TrainingRun,
    check_memory,
    check_schedule,
    checkpoint_to_resume,
    setup_run,
)
from searchspace.errors import EffnasError
from searchspace.files import atomic_write, check_output_path
from searchspace.spec import ArchSpec

__all__ = ["RUN_FILES", "RunDirectoryMirror", "WorkerSettings", "train_distributed", "train_worker"]

#: The run directory's files, in the order they are copied out of a reported checkpoint (the
#: checkpoint first: the metrics never describe an epoch the checkpoint does not hold).
RUN_FILES = (CHECKPOINT_NAME, "weights.pt", "spec.yaml", METRICS_CSV, METRICS_JSON)
#: The default Ray Train storage, inside the run directory; removed when the run ends.
RAY_STORAGE_DIR = ".ray-train"

_API_SERVER_VARIABLE = "RAY_API_SERVER_ADDRESS"

#: ``on_epoch_start(rank, epoch)``: called on every worker before each epoch (0-based) trains.
EpochStartHook = Callable[[int, int], None]


@dataclass(frozen=True)
class WorkerSettings:
    """What every worker receives from the driver (:func:`train_worker`'s argument).

    Attributes:
        spec: the architecture, with the dataset's classes.
        config: the training settings; ``batch_size`` is the global batch.
        out_dir: the run directory on the driver's node (named in lines; the workers write
            their files elsewhere: see :class:`RunDirectoryMirror`).
        checkpoint: the run directory's checkpoint file in Ray's object store (``--resume``; a
            ``ray.ObjectRef`` to its bytes), or None.
        cpus_per_worker: the CPUs Ray reserved for each worker, and its torch threads.
        gpus_per_worker: 0 (CPUs), or 1 (each worker drives a GPU).
        progress: a progress bar per epoch on rank 0's stderr.
        on_epoch_start: a picklable hook every worker calls before each epoch, or None.
    """

    spec: ArchSpec
    config: ProgressiveConfig
    out_dir: str
    checkpoint: Any
    cpus_per_worker: int
    gpus_per_worker: int
    progress: bool = False
    on_epoch_start: EpochStartHook | None = None


def train_distributed(
    spec: ArchSpec,
    config: ProgressiveConfig,
    out_dir: str | Path,
    scaling: DistributedConfig,
    *,
    resume: bool = False,
    address: str | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    on_epoch_start: EpochStartHook | None = None,
) -> ProgressiveResult:
    """Train ``spec`` as :func:`~nas.train.progressive.train_progressive` does, on
    ``scaling.workers`` Ray Train workers; the run directory ends the same.

    Args:
        spec, config, out_dir, resume: as for ``train_progressive``; ``config.batch_size`` is
            the global batch.
        scaling: the workers, their CPUs and GPUs, the failures to recover from, the storage.
        address: a Ray cluster (default ``RAY_ADDRESS``, else a local Ray on 127.0.0.1).
        progress: a progress bar per epoch on rank 0's stderr.
        log: receives this process's lines; rank 0's own (the plan, one line per epoch) reach
            stderr through Ray's log forwarding, prefixed with the worker's name.
        on_epoch_start: a picklable ``hook(rank, epoch)`` every worker calls before each epoch
            (tests inject a worker failure at an exact point with it).

    Raises:
        ConfigError, DataError, CheckpointError, ScheduleError, RayAddressError: bad input,
            before any worker starts.
        WorkerError: bad input a worker found (every worker stopped before training).
        NonFiniteLossError: the loss became NaN or infinite (the last checkpoint stays).
        WorkerFailureError: workers failed more than ``scaling.max_failures`` times.
    """
    say = log if log is not None else (lambda line: None)
    out_dir = Path(out_dir).absolute()
    check_output_path(out_dir, "run directory", ConfigError, folder=True)
    cluster = requested_address(address)
    spec = _check_input(spec, config, scaling, cluster)
    data, resumed_from = _checkpoint_file(spec, config, out_dir, resume)
    # Ray Train's workers would otherwise run in a per-run directory of their own, where a
    # relative dataset or --init path means something else than here.
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    with _ray_for_training(address):
        import ray

        if cluster:
            _check_resources(scaling, ray.cluster_resources(), where="the cluster")
        settings = WorkerSettings(
            spec=spec,
            config=config,
            out_dir=str(out_dir),
            checkpoint=ray.put(data) if data is not None else None,
            cpus_per_worker=scaling.cpus_per_worker,
            gpus_per_worker=scaling.gpus_per_worker,
            progress=progress,
            on_epoch_start=on_epoch_start,
        )
        say(_workers_line(scaling, config.batch_size))
        outcome = _fit(settings, scaling, out_dir)
    return _result(spec, out_dir, outcome, resumed_from)


def _check_input(
    spec: ArchSpec, config: ProgressiveConfig, scaling: DistributedConfig, cluster: str | None
) -> ArchSpec:
    """Refuse bad input before Ray starts (once, rather than on every worker); the spec with
    the dataset's classes. The resources are this machine's, unless a ``cluster`` is named.

    Raises:
        ConfigError, DataError, ScheduleError, WeightsError: what is wrong.
    """
    scaling.check(config)
    if not cluster:
        _check_resources(scaling, _local_resources())
    check_schedule(spec, config)
    check_initial_weights(config.init)
    _, source = load_source(config.dataset)  # a missing dataset is refused here, not N times
    return spec.replace(num_classes=len(source.classes))


def _checkpoint_file(
    spec: ArchSpec, config: ProgressiveConfig, out_dir: Path, resume: bool
) -> tuple[bytes | None, int]:
    """The run directory's checkpoint file to resume from (None: a fresh run), read once and
    checked (the bytes checked here are the bytes the workers get), and the epochs it holds.

    Raises:
        CheckpointError: as :func:`~nas.train.setup.checkpoint_to_resume`, or a checkpoint of
            another spec or config.
    """
    checkpoint_path = out_dir / CHECKPOINT_NAME
    data = checkpoint_path.read_bytes() if resume and checkpoint_path.is_file() else None
    checkpoint = checkpoint_to_resume(out_dir, resume, data)
    if checkpoint is None:
        return data, 0
    check_checkpoint(checkpoint, spec, config.to_dict(), checkpoint_path)
    return data, int(checkpoint["epoch"])


@contextlib.contextmanager
def _ray_for_training(address: str | None) -> Iterator[None]:
    """``ray_session(address)``; a local Ray with its dashboard, which Ray Train needs.

    Ray Train's placement-group cleaner (an actor) asks the state API, served by the dashboard,
    whether the run's controller lives: without a dashboard it warns every second. It finds the
    dashboard through ``RAY_API_SERVER_ADDRESS``, else by guessing the cluster, which fails
    when another Ray runs on the machine (another ``nas`` command, say). So the local Ray gets
    its dashboard on a port chosen here, on 127.0.0.1, and the variable names it; Ray's
    processes inherit it.
    """
    import ray

    if requested_address(address) or ray.is_initialized() or os.environ.get(_API_SERVER_VARIABLE):
        with ray_session(address):
            yield
        return
    with socket.socket() as probe:  # a free port now; Ray refuses to start if it is taken since
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    os.environ[_API_SERVER_VARIABLE] = f"http://127.0.0.1:{port}"
    try:
        with ray_session(None, local_kwargs={"include_dashboard": True, "dashboard_port": port}):
            yield
    finally:
        del os.environ[_API_SERVER_VARIABLE]


def _workers_line(scaling: DistributedConfig, batch_size: int) -> str:
    return (
        f"training on {scaling.workers} Ray Train worker{'s' if scaling.workers > 1 else ''}"
        f" ({_per_worker(scaling)} each), {batch_size // scaling.workers} of every "
        f"global batch of {batch_size} images each"
    )


def _per_worker(scaling: DistributedConfig) -> str:
    gpus = f", {scaling.gpus_per_worker} GPU" if scaling.gpus_per_worker else ""
    return f"{scaling.cpus_per_worker} CPU{'s' if scaling.cpus_per_worker > 1 else ''}{gpus}"


def _local_resources() -> dict[str, float]:
    """What a local Ray would offer: this process's CPUs and the GPUs torch sees."""
    return {"CPU": float(available_cpus()), "GPU": float(torch.cuda.device_count())}


def _check_resources(
    scaling: DistributedConfig, available: dict[str, float], where: str = "this machine"
) -> None:
    """Refuse workers that could never all be placed: Ray would wait for them forever.

    Raises:
        ConfigError: naming what is short.
    """
    for resource, each, flag in (
        ("GPU", scaling.gpus_per_worker, "gpus_per_worker"),
        ("CPU", scaling.cpus_per_worker, "cpus_per_worker"),
    ):
        needed = scaling.workers * each
        have = available.get(resource, 0.0)
        if needed > have:
            raise ConfigError(
                f"{flag} {each} with {scaling.workers} workers needs {needed} {resource}s; "
                f"{where} has {have:g}"
            )


def _fit(settings: WorkerSettings, scaling: DistributedConfig, out_dir: Path) -> dict[str, Any]:
    """Run the workers with ``TorchTrainer``; the final report's metrics (rank 0's)."""
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train import TrainingFailedError as RayTrainingFailed
    from ray.train.torch import TorchTrainer

    default_storage = scaling.storage_path is None
    storage = str(out_dir / RAY_STORAGE_DIR) if default_storage else scaling.storage_path
    if "://" not in storage:
        storage = str(Path(storage).absolute())
    name = f"effnas-train-{uuid.uuid4().hex[:12]}"  # never an old run's: V2 would resume it
    trainer = TorchTrainer(
        functools.partial(train_worker, settings),  # Ray Train calls it without arguments
        scaling_config=ScalingConfig(
            num_workers=scaling.workers,
            use_gpu=scaling.gpus_per_worker > 0,
            resources_per_worker={
                "CPU": scaling.cpus_per_worker,
                **({"GPU": scaling.gpus_per_worker} if scaling.gpus_per_worker else {}),
            },
        ),
        run_config=RunConfig(
            name=name,
            storage_path=storage,
            failure_config=FailureConfig(max_failures=scaling.max_failures),
            # The last two: the newest, and the one before it while the newest registers.
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            callbacks=[RunDirectoryMirror(str(out_dir))],
            # Not a line per report and checkpoint; failures and restarts are warnings.
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
    )
    try:
        result = trainer.fit()
    except RayTrainingFailed as error:
        raise WorkerFailureError(_failure_line(error, scaling.max_failures)) from None
    except SystemExit:
        # Ctrl-C (or SIGTERM, which ``nas`` turns into it) while fit() waits: Ray Train's
        # handler aborts the run, and Ray ends the wait with SystemExit (0 or 1). Every finished
        # epoch is in the run directory; say so as for one process.
        raise KeyboardInterrupt from None
    finally:
        _remove_storage(storage, name, default_storage)
    if result.checkpoint is not None and not (out_dir / "weights.pt").exists():
        mirror_checkpoint(result.checkpoint, out_dir)  # in case the last report was not copied
    return dict(result.metrics or {})


def _failure_line(error: BaseException, max_failures: int) -> str:
    """One line for a run Ray Train gave up on: the first worker's error, or the controller's."""
    failures = getattr(error, "worker_failures", None) or {}
    if failures:
        rank, first = min(failures.items())
        cause = f"worker {rank}: {type(first).__name__}: {_one_line(first)}"
    else:
        cause = _one_line(error)
    return f"training failed after {max_failures} recovered failure(s): {cause}"


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text[:300] + ("..." if len(text) > 300 else "")


def _remove_storage(storage: str, name: str, whole: bool) -> None:
    """Remove this run's Ray Train storage (the run directory holds what is needed)."""
    import pyarrow.fs

    try:
        filesystem, path = pyarrow.fs.FileSystem.from_uri(storage)
    except (pyarrow.ArrowInvalid, ValueError):
        filesystem, path = pyarrow.fs.LocalFileSystem(), str(Path(storage).absolute())
    with contextlib.suppress(OSError):  # never made, or gone: nothing to keep either way
        filesystem.delete_dir(path if whole else f"{path.rstrip('/')}/{name}")


def _result(
    spec: ArchSpec, out_dir: Path, outcome: dict[str, Any], resumed_from: int
) -> ProgressiveResult:
    """The run's result from its run directory, or the error the workers agreed on."""
    kind, message = outcome.get("outcome"), outcome.get("message", "")
    if kind == "error":
        raise WorkerError(message)
    if kind == "nonfinite":
        raise NonFiniteLossError(message)
    record = json.loads((out_dir / METRICS_JSON).read_text())
    return ProgressiveResult.from_record(spec, record, out_dir, resumed_from)


# -- the run directory, copied out of Ray Train's checkpoints -------------------------------------


def mirror_checkpoint(checkpoint: Any, out_dir: Path) -> None:
    """Copy the run files a reported checkpoint holds into ``out_dir``, each atomically."""
    with checkpoint.as_directory() as directory:
        for name in RUN_FILES:
            source = Path(directory) / name
            if source.is_file():
                with source.open("rb") as file:
                    atomic_write(out_dir / name, lambda target, file=file: _copy(file, target))


def _copy(source: Any, target: Any) -> None:
    shutil.copyfileobj(source, target, 1 << 20)


class RunDirectoryMirror(UserCallback):
    """Ray Train callback: after every report, copy the checkpoint's run files into the run
    directory. It runs on the controller, which Ray Train places on the driver's node, so
    ``out_dir`` is a path there, wherever rank 0 runs."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def after_report(self, run_context: Any, metrics: Any, checkpoint: Any) -> None:
        if checkpoint is not None:
            mirror_checkpoint(checkpoint, Path(self.out_dir))


# -- on each worker -------------------------------------------------------------------------------


class _PeerFailed(Exception):
    """Another worker could not set its run up; ``message`` is its one line."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class _RayContext:
    """A Ray Train worker as the trainer's :class:`~nas.train.setup.Context`."""

    def __init__(self, settings: WorkerSettings) -> None:
        import ray.train

        context = ray.train.get_context()
        self.rank = context.get_world_rank()
        self.world_size = context.get_world_size()
        self.directory = Path(tempfile.mkdtemp(prefix="effnas-train-")) if self.rank == 0 else None
        self.reduce_loss = self._mean if self.world_size > 1 else None
        self.on_epoch_start = settings.on_epoch_start
        self.agreed = False

    def say(self, line: str) -> None:
        # Straight to stderr: Ray Train V2 reroutes print() through its logger, which shows it
        # twice on the driver.
        if self.rank == 0:
            sys.stderr.write(f"nas train: {line}\n")
            sys.stderr.flush()

    def agree(self, problem: str | None) -> str | None:
        """Every worker's setup problem (None: none), gathered once on every worker; the first
        one, in rank order, or None when all went well."""
        self.agreed = True
        if self.world_size == 1:
            return problem
        import torch.distributed as dist

        problems: list[str | None] = [None] * self.world_size
        dist.all_gather_object(problems, problem)
        return next((p for p in problems if p is not None), None)

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """After every worker has set up without a problem: the model in DDP, its BatchNorm
        layers synchronized on GPUs (SyncBatchNorm refuses CPU tensors)."""
        problem = self.agree(None)
        if problem is not None:
            raise _PeerFailed(problem)
        if self.world_size == 1:
            return model
        from ray.train.torch import prepare_model

        device = next(model.parameters()).device
        if device.type == "cuda":
            # Converts the children in place, keeping the parameters the optimizer holds.
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return prepare_model(model, move_to_device=False)

    def _mean(self, value: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        total = value.detach().clone()
        dist.all_reduce(total)  # a sum
        return total / self.world_size

    def begin_epoch(self, epoch: int) -> None:
        if self.on_epoch_start is not None:
            self.on_epoch_start(self.rank, epoch)

    def epoch_done(self, epoch: int, metrics: EpochMetrics | None) -> None:
        self._report({"epoch": epoch, **(metrics.to_dict() if metrics else {})})

    def run_done(self, final: FinalMetrics | None) -> None:
        self._report({"outcome": "done", **(_plain(final.to_dict()) if final else {})})

    def end(self, outcome: str, message: str) -> None:
        """Stop the run with ``outcome`` (``error``, ``nonfinite``) and one line: every worker
        reports it, so the run ends normally instead of being retried."""
        self._report({"outcome": outcome, "message": message})

    def _report(self, metrics: dict[str, Any]) -> None:
        """Every worker reports (Ray Train's barrier); rank 0 with its files as the checkpoint."""
        import ray.train

        checkpoint = None
        if self.rank == 0 and self.directory is not None:
            checkpoint = ray.train.Checkpoint.from_directory(str(self.directory))
        ray.train.report(metrics, checkpoint=checkpoint, delete_local_checkpoint_after_upload=False)

    def close(self) -> None:
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)


def _plain(metrics: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in metrics.items() if value is not None}


def train_worker(settings: WorkerSettings) -> None:
    """Ray Train's function on every worker: set up (agreeing on any problem), train the
    epochs, finish; the outcome is the last report's ``outcome`` (``done``, ``error`` or
    ``nonfinite``, with a ``message``)."""
    torch.set_num_threads(settings.cpus_per_worker)
    # Ray Train logs a line per report at INFO on every worker (through a logger named after its
    # file, a child of the root logger, which its LoggingConfig does not reach); the epoch lines
    # say what matters. This process is the worker's own.
    logging.getLogger().setLevel(logging.WARNING)
    context = _RayContext(settings)
    try:
        try:
            run = _open_on_worker(settings, context)
        except EffnasError as error:
            if context.agreed:
                raise  # after the others went on to train: a crash, for Ray to handle
            message = context.agree(_one_line(error))
            context.end("error", message or _one_line(error))
            return
        except _PeerFailed as failed:
            context.end("error", failed.message)
            return
        try:
            run_epochs(run, context, progress=settings.progress, say=context.say)
        except NonFiniteLossError as error:
            context.say(f"{error.reason}; the last good checkpoint is in {settings.out_dir}")
            context.end("nonfinite", error.reason)
            return
        finish_run(run, context)
    finally:
        context.close()


def _open_on_worker(settings: WorkerSettings, context: _RayContext) -> TrainingRun:
    """This worker's device, the checkpoint to resume from, and the run opened on them."""
    import ray.train.torch

    spec, config, out_dir = settings.spec, settings.config, Path(settings.out_dir)
    device = ray.train.torch.get_device() if settings.gpus_per_worker else torch.device("cpu")
    precision = resolve_precision(config.precision, device)
    check_memory(spec, config, config.batch_size // context.world_size, device, precision)
    checkpoint = _checkpoint_on_worker(settings, out_dir)
    return setup_run(spec, config, checkpoint, context, device, precision, out_dir, context.say)


def _checkpoint_on_worker(settings: WorkerSettings, out_dir: Path) -> dict[str, Any] | None:
    """The checkpoint to resume from: the last one this Ray run reported (after a worker
    failure), else the run directory's that the driver shipped (``--resume``), else None."""
    import ray
    import ray.train

    shown = out_dir / CHECKPOINT_NAME
    reported = ray.train.get_checkpoint()
    if reported is not None:
        with reported.as_directory() as directory:
            path = Path(directory) / CHECKPOINT_NAME
            if path.is_file():
                return read_checkpoint(shown, path.read_bytes())
    if settings.checkpoint is not None:
        return read_checkpoint(shown, ray.get(settings.checkpoint))
    return None
