"""How ``nas train`` trains a net fully: :class:`ProgressiveConfig`. Imports no torch."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from nas.data.config import TRAIN_CROPS, DataConfig
from nas.errors import ConfigError
from nas.train.recipe import Recipe
from nas.train.schedule import ProgressiveSchedule
from searchspace.checks import check_choice, check_int, check_number
from searchspace.errors import WeightsError

__all__ = ["INIT_KINDS", "DistributedConfig", "ProgressiveConfig", "check_init", "split_init"]

#: Where fine-tuning weights come from: ``torchvision:PATH`` or ``effnas:PATH``.
INIT_KINDS = ("torchvision", "effnas")


def split_init(init: str) -> tuple[str, str]:
    """``KIND:PATH`` -> ``(kind, path)``.

    Raises:
        ConfigError: not ``torchvision:PATH`` or ``effnas:PATH``.
    """
    kind, colon, path = init.partition(":") if isinstance(init, str) else ("", "", "")
    if not colon or kind not in INIT_KINDS or not path:
        raise ConfigError(f"init must be torchvision:PATH or effnas:PATH, got {init!r}")
    return kind, path


def check_init(init: str) -> None:
    """Refuse an ``--init`` whose file does not exist, before any data is loaded.

    Raises:
        ConfigError: a malformed value.
        WeightsError: the file does not exist.
    """
    path = Path(split_init(init)[1])
    if not path.is_file():
        raise WeightsError(f"--init file {str(path)!r} does not exist")


@dataclass(frozen=True, kw_only=True)
class ProgressiveConfig(Recipe, DataConfig):
    """How to train a net fully: the recipe (:class:`~nas.train.recipe.Recipe`), the data
    (:class:`~nas.data.config.DataConfig`) and these. Validated at construction.

    Attributes:
        epochs: total epochs over all stages; at least the number of stages.
        schedule: the progressive schedule (:func:`nas.train.schedule.schedule_for` makes it).
        ema_decay: weight EMA decay (paper: 0.9999), warmed up as
            ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates; 0 turns the EMA off.
        init: ``""`` (random initialization), ``torchvision:PATH`` (a torchvision EfficientNetV2
            state dict) or ``effnas:PATH`` (an effnas weights file); the classifier is re-sized
            for the dataset.
        train_crop: ``random-resized`` (the reference code's scale augmentation: every training
            image a random crop of 5-100% of its area, aspect ratio 3/4 to 4/3, resized to the
            stage's size) or ``none`` (the whole image resized). Evaluation never crops.

    ``device`` and ``num_workers`` may change on resume; nothing else may.
    """

    epochs: int
    schedule: ProgressiveSchedule
    ema_decay: float = 0.9999
    init: str = ""
    train_crop: str = "random-resized"

    def __post_init__(self) -> None:
        if not isinstance(self.schedule, ProgressiveSchedule):
            raise ConfigError(f"schedule must be a ProgressiveSchedule, got {self.schedule!r}")
        DataConfig.__post_init__(self)
        Recipe.__post_init__(self)
        if self.epochs < self.schedule.stages:  # Recipe checked that it is an integer >= 1
            raise ConfigError(
                f"epochs must be at least the number of stages ({self.schedule.stages}), "
                f"got {self.epochs}"
            )
        check_number("ema_decay", self.ema_decay, 0.0, 1.0, ConfigError, below=True)
        check_choice("train_crop", self.train_crop, TRAIN_CROPS, ConfigError)
        if self.init:
            check_init(self.init)

    def stage_epochs(self) -> list[range]:
        """The epochs (0-based) of each stage: ``floor(E*i/M)`` to ``floor(E*(i+1)/M)``."""
        stages = self.schedule.stages
        bounds = [self.epochs * i // stages for i in range(stages + 1)]
        return [range(bounds[i], bounds[i + 1]) for i in range(stages)]

    def stage_of(self, epoch: int) -> int:
        """The stage (0-based) that epoch ``epoch`` (0-based) belongs to."""
        return next(i for i, epochs in enumerate(self.stage_epochs()) if epoch in epochs)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (the schedule as its dict): what a checkpoint and metrics.json carry."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["schedule"] = self.schedule.to_dict()
        return data


@dataclass(frozen=True, kw_only=True)
class DistributedConfig:
    """How ``nas train --workers N`` spreads one run over Ray Train's data-parallel workers
    (:mod:`nas.train.distributed`). Validated at construction; :meth:`check` checks it against
    the training config. None of it is part of what a checkpoint must match: a run may resume
    on another number of workers (the global batch, and so the recipe, stays the same).

    Attributes:
        workers: data-parallel worker processes; each trains on ``batch_size // workers`` images
            of every global batch of ``batch_size``.
        cpus_per_worker: CPUs Ray reserves for each worker, and its torch threads.
        gpus_per_worker: 0 (the workers train on CPUs) or 1 (each drives one GPU: DDP runs one
            process per device, so more GPUs means more workers, not more GPUs per worker).
        max_failures: worker failures (a process or node that dies) a run recovers from, each
            time from the last checkpoint Ray Train registered; -1 for no limit.
        storage_path: where Ray Train persists the checkpoints the workers report: a directory
            every node can reach, or a URI pyarrow reads (``s3://...``, ``gs://...``). None: a
            directory inside the run directory, fine on one machine and removed at the end.
    """

    workers: int
    cpus_per_worker: int = 1
    gpus_per_worker: int = 0
    max_failures: int = 2
    storage_path: str | None = None

    def __post_init__(self) -> None:
        check_int("workers", self.workers, 1, ConfigError)
        check_int("cpus_per_worker", self.cpus_per_worker, 1, ConfigError)
        check_int("gpus_per_worker", self.gpus_per_worker, 0, ConfigError, maximum=1)
        check_int("max_failures", self.max_failures, -1, ConfigError)
        if self.storage_path is not None and not (
            isinstance(self.storage_path, str) and self.storage_path.strip()
        ):
            raise ConfigError(f"storage_path must be a path or URI, got {self.storage_path!r}")

    def check(self, config: ProgressiveConfig) -> None:
        """Refuse a training config these workers cannot run.

        Raises:
            ConfigError: a global batch that does not split evenly over the workers, or a
                ``device`` that contradicts ``gpus_per_worker`` (Ray assigns each worker its
                device; ``device`` may only be ``auto`` or agree).
        """
        if config.batch_size % self.workers:
            raise ConfigError(
                f"batch_size {config.batch_size} is the global batch and must split evenly over "
                f"the {self.workers} workers; choose a multiple of {self.workers}"
            )
        wanted = "cuda" if self.gpus_per_worker else "cpu"
        if config.device not in ("auto", wanted):
            raise ConfigError(
                f"device {config.device!r} with gpus_per_worker {self.gpus_per_worker}: the "
                f"workers train on {'their GPU' if self.gpus_per_worker else 'CPUs'}; use "
                f"device auto or {wanted}"
            )
