"""Full training with progressive learning and adaptive regularization: what ``nas train`` runs.

:func:`train_progressive` reads top to bottom as the recipe of the paper (Tan and Le 2021, sec. 4
and shared/REFERENCE.md section 6):

- Training is split into the schedule's M stages (:mod:`nas.progressive`). The epochs split
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
- The training step and its pieces are the search's own (:mod:`nas.train`): the optimizer
  (RMSProp as in the paper, SGD or AdamW) without weight decay on BatchNorm and biases, label
  smoothing, bf16 autocast and channels_last on a GPU.
- A weight EMA (``torch.optim.swa_utils.AveragedModel``, parameters and BatchNorm statistics)
  follows every step; the held-out split is evaluated at the spec's eval size with the EMA
  weights (``accuracy``) and the raw weights (``accuracy_raw``) after every epoch.

Everything a run writes goes to its run directory: ``checkpoint.pt`` after every epoch (written to
a temporary file and renamed, so a crash never leaves half a checkpoint), ``metrics.csv`` and
``metrics.json`` (one row per epoch), ``spec.yaml`` (the spec trained, with the dataset's
classes) and at the end ``weights.pt``, an effnas weights file of the evaluated (EMA) model.

A checkpoint carries the spec, the full training config, the RNG states and the history, and
``resume=True`` continues exactly where it stopped: on a CPU the resumed run ends with the same
weights and metrics as one that was never interrupted. A checkpoint that cannot be read, or that
belongs to another spec or another config, is refused with :class:`CheckpointError`; a run is
never silently restarted from scratch.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torchvision.transforms import v2

from nas.data import DataBundle, load_dataset, parse_dataset_spec
from nas.device import PRECISIONS, device_name, memory_format_for, resolve_device, resolve_precision
from nas.progressive import ProgressiveSchedule, ScheduleError, StageSettings
from nas.train import (
    OPTIMIZERS,
    SCHEDULES,
    EpochCallback,
    TrainConfig,
    build_optimizer,
    build_scheduler,
    evaluate_accuracy,
    make_loss,
    scaled_lr,
    train_one_epoch,
)
from searchspace import ArchSpec, EfficientNetV2, build_model
from searchspace.checks import check_choice, check_int
from searchspace.errors import EffnasError, SpecError, WeightsError
from searchspace.weights import load_torchvision_weights, read_weights, save_weights

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_NAME",
    "INIT_KINDS",
    "TIMING_METRICS",
    "CheckpointError",
    "TrainError",
    "TrainOutcome",
    "TrainerConfig",
    "ema_multi_avg_fn",
    "load_initial_weights",
    "train_progressive",
]

CHECKPOINT_FORMAT = "effnas-train-checkpoint"
_CHECKPOINT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"
INIT_KINDS = ("torchvision", "effnas")

# Settings that may differ between a run and its resume without changing what is computed.
_RESUMABLE_CHANGES = ("device", "num_workers")
# Per-epoch metrics that measure time, not learning: a resumed run cannot reproduce them.
TIMING_METRICS = ("epoch_seconds", "eval_seconds", "train_seconds", "images_per_second")


class TrainError(EffnasError, ValueError):
    """A training setting that is out of range; the message names the field and the value."""


class CheckpointError(EffnasError):
    """A checkpoint that cannot be read, or that belongs to another spec or config."""


def _split_init(init: str) -> tuple[str, str]:
    kind, colon, path = init.partition(":")
    if not colon or kind not in INIT_KINDS or not path:
        raise TrainError(f"init must be torchvision:PATH or effnas:PATH, got {init!r}")
    return kind, path


@dataclass(frozen=True)
class TrainerConfig:
    """How to train a net fully. Validated at construction.

    Attributes:
        dataset: ``NAME[:PATH]`` from the :mod:`nas.data` registry.
        epochs: total epochs over all stages; at least the number of stages.
        schedule: the progressive schedule (:func:`nas.progressive.schedule_for` makes it).
        batch_size: training (and evaluation) batch size.
        lr: peak learning rate; ``None``: the optimizer's per-256-images rate scaled to
            ``batch_size`` (0.016 per 256 for RMSProp, the paper's).
        optimizer: ``rmsprop``, ``sgd`` or ``adamw``.
        weight_decay: on conv and linear weights only.
        momentum: RMSProp and SGD momentum.
        label_smoothing: cross-entropy label smoothing (paper: 0.1).
        warmup_epochs: linear warm-up; ``None``: the paper's 5 epochs, or a tenth of the training
            when that is shorter.
        lr_schedule: after warm-up, ``cosine`` or the paper's ``exponential`` (x0.97 every 2.4
            epochs).
        ema_decay: weight EMA decay (paper: 0.9999), warmed up as
            ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates; 0 turns the EMA off.
        seed: seeds the split, the weights, the shuffle order, the augmentations and dropout.
        precision: ``auto`` (bf16 on a GPU, fp32 on a CPU), ``fp32`` or ``bf16``.
        heldout_fraction: fraction of the training set held out for evaluation.
        max_train_images: cap on the training split's size, or ``None``.
        init: ``""`` (random initialization), ``torchvision:PATH`` (a torchvision EfficientNetV2
            state dict) or ``effnas:PATH`` (an effnas weights file); the classifier is re-sized
            for the dataset.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (may change on resume).
        num_workers: data-loading processes; ``None`` chooses (may change on resume).
    """

    dataset: str
    epochs: int
    schedule: ProgressiveSchedule
    batch_size: int = 64
    lr: float | None = None
    optimizer: str = "rmsprop"
    weight_decay: float = 1e-5
    momentum: float = 0.9
    label_smoothing: float = 0.1
    warmup_epochs: float | None = None
    lr_schedule: str = "cosine"
    ema_decay: float = 0.9999
    seed: int = 0
    precision: str = "auto"
    heldout_fraction: float = 0.1
    max_train_images: int | None = None
    init: str = ""
    device: str = "auto"
    num_workers: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.schedule, ProgressiveSchedule):
            raise TrainError(f"schedule must be a ProgressiveSchedule, got {self.schedule!r}")
        parse_dataset_spec(self.dataset)  # an unknown name fails here, before anything loads
        check_int("epochs", self.epochs, 1, TrainError)
        if self.epochs < self.schedule.stages:
            raise TrainError(
                f"epochs must be at least the number of stages ({self.schedule.stages}), "
                f"got {self.epochs}"
            )
        check_int("batch_size", self.batch_size, 1, TrainError)
        check_int("seed", self.seed, 0, TrainError)
        if self.num_workers is not None:
            check_int("num_workers", self.num_workers, 0, TrainError)
        if self.max_train_images is not None:
            check_int("max_train_images", self.max_train_images, 1, TrainError)
        check_choice("optimizer", self.optimizer, OPTIMIZERS, TrainError)
        check_choice("lr_schedule", self.lr_schedule, SCHEDULES, TrainError)
        check_choice("precision", self.precision, PRECISIONS, TrainError)
        decay = self.ema_decay
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 <= decay < 1:
            raise TrainError(f"ema_decay must be in [0, 1), got {decay!r}")
        fraction = self.heldout_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
            raise TrainError(f"heldout_fraction must be a number in (0, 1), got {fraction!r}")
        if not 0.0 < fraction < 1.0:
            raise TrainError(f"heldout_fraction must be in (0, 1), got {fraction!r}")
        if not isinstance(self.init, str):
            raise TrainError(f"init must be torchvision:PATH or effnas:PATH, got {self.init!r}")
        if self.init:
            _split_init(self.init)
        if self.lr is not None and (
            isinstance(self.lr, bool)
            or not isinstance(self.lr, (int, float))
            or not (math.isfinite(self.lr) and self.lr > 0)
        ):
            raise TrainError(f"lr must be a positive number, got {self.lr!r}")
        self.train_config()  # TrainConfig checks the remaining optimizer settings

    def train_config(self) -> TrainConfig:
        """The :class:`~nas.train.TrainConfig` of the whole run (all stages), defaults resolved."""
        warmup = min(5.0, self.epochs / 10) if self.warmup_epochs is None else self.warmup_epochs
        return TrainConfig(
            epochs=self.epochs,
            lr=self.lr if self.lr is not None else scaled_lr(self.optimizer, self.batch_size),
            optimizer=self.optimizer,
            weight_decay=self.weight_decay,
            momentum=self.momentum,
            label_smoothing=self.label_smoothing,
            warmup_epochs=warmup,
            schedule=self.lr_schedule,
            precision=self.precision,
        )

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


# ---------------------------------------------------------------------------------------------
# Initial weights for fine-tuning.


def load_initial_weights(model: EfficientNetV2, init: str) -> str:
    """Load ``torchvision:PATH`` or ``effnas:PATH`` into ``model`` in place; a one-line summary.

    The classifier is loaded only if the file's has the model's number of classes; otherwise the
    model keeps its fresh classifier (fine-tuning on a dataset with other classes).

    Raises:
        WeightsError: the file is missing, unreadable, or holds another architecture.
    """
    kind, path = _split_init(init)
    if kind == "torchvision":
        done = load_torchvision_weights(model, path, strict_classifier=False)
        loaded, skipped = done.loaded, done.skipped
    else:
        file_spec, state = read_weights(path)
        ours = model.spec
        # Same network, whatever its classes, regularization and image sizes.
        same = file_spec.replace(
            num_classes=ours.num_classes,
            dropout=ours.dropout,
            drop_path_rate=ours.drop_path_rate,
            train_resolution=ours.train_resolution,
            eval_resolution=ours.eval_resolution,
        )
        if same != ours:
            raise WeightsError(
                f"weights file {path!r} holds {file_spec.label} ({file_spec.hash}), not the "
                f"architecture being trained ({ours.label})"
            )
        own = model.state_dict()
        skipped = tuple(
            key
            for key in ("classifier.weight", "classifier.bias")
            if key not in state or state[key].shape != own[key].shape
        )
        result = model.load_state_dict(
            {key: value for key, value in state.items() if key not in skipped}, strict=False
        )
        if result.unexpected_keys or set(result.missing_keys) - set(skipped):
            raise WeightsError(f"weights file {path!r} does not fit {ours.label}: {result}")
        loaded = len(state) - len(skipped)
    fresh = " (classifier left fresh for the dataset's classes)" if skipped else ""
    return f"initialized from {init}: {loaded} tensors{fresh}"


# ---------------------------------------------------------------------------------------------
# Checkpoints.


def _atomic_write(path: Path, write: Callable[[io.BufferedWriter], None]) -> None:
    # Write beside the target, flush to disk, then rename: a reader (or a resume after a crash)
    # sees the old file or the new one, never half of one.
    partial = path.with_name(path.name + ".partial")
    try:
        with open(partial, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise EffnasError(f"cannot write {str(path)!r}: {error}") from None


def _rng_states(device: torch.device) -> dict[str, Any]:
    # Everything random in a step draws from these: dropout, stochastic depth, RandAugment (read
    # in this process for in-memory data), MixUp's lambda. Loader shuffles and worker seeds come
    # from a per-epoch seed instead (_epoch_seed).
    return {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else [],
    }


def _restore_rng_states(states: Mapping[str, Any], device: torch.device) -> None:
    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    if device.type == "cuda" and states["cuda"]:
        torch.cuda.set_rng_state_all(states["cuda"])


def _epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's shuffle order (and worker seeds): fixed by the run's seed."""
    return (seed * 1_000_003 + epoch) % (1 << 63)


def _read_checkpoint(path: Path) -> dict[str, Any]:
    shown = repr(str(path))
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any failure to read it means the file is not intact
        reason = " ".join(str(error).split()) or type(error).__name__
        reason = reason.split(". ")[0][:160]
        raise CheckpointError(
            f"checkpoint {shown} cannot be read ({type(error).__name__}: {reason}); it is "
            "corrupt or not an effnas checkpoint: delete it to start over, or use another --out"
        ) from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {shown} is not an effnas training checkpoint")
    if data.get("version") != _CHECKPOINT_VERSION:
        raise CheckpointError(
            f"checkpoint {shown} has version {data.get('version')!r}; this effnas reads "
            f"version {_CHECKPOINT_VERSION}"
        )
    missing = [
        key
        for key in ("spec", "config", "epoch", "model", "optimizer", "scheduler", "rng", "history")
        if key not in data
    ]
    if missing:
        raise CheckpointError(f"checkpoint {shown} lacks its {missing[0]} entry")
    return data


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return flat


def _check_checkpoint(
    checkpoint: Mapping[str, Any], spec: ArchSpec, config: TrainerConfig, path: Path
) -> None:
    """Refuse a checkpoint of another architecture or another training config."""
    shown = repr(str(path))
    try:
        theirs = ArchSpec.from_dict(checkpoint["spec"])
    except (SpecError, TypeError) as error:
        raise CheckpointError(f"checkpoint {shown} holds an invalid spec: {error}") from None
    if theirs != spec:
        raise CheckpointError(
            f"checkpoint {shown} belongs to another architecture ({theirs.label}, hash "
            f"{theirs.hash}; this run trains {spec.label}, hash {spec.hash}): resume with the "
            "same ARCH and dataset, or use another --out"
        )
    ours = _flatten({k: v for k, v in config.to_dict().items() if k not in _RESUMABLE_CHANGES})
    stored = _flatten(
        {k: v for k, v in checkpoint["config"].items() if k not in _RESUMABLE_CHANGES}
    )
    for key in sorted(set(ours) | set(stored)):
        if ours.get(key) != stored.get(key):
            raise CheckpointError(
                f"checkpoint {shown} was written with another training config: {key} "
                f"{stored.get(key)!r} there, {ours.get(key)!r} here; resume with the same "
                "settings, or use another --out"
            )


# ---------------------------------------------------------------------------------------------
# Metrics files.


def _write_metrics(out_dir: Path, record: dict[str, Any]) -> None:
    history = record["history"]
    text = json.dumps(record, indent=2)
    _atomic_write(out_dir / "metrics.json", lambda file: file.write(text.encode()))
    buffer = io.StringIO()
    if history:
        writer = csv.DictWriter(buffer, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    _atomic_write(out_dir / "metrics.csv", lambda file: file.write(buffer.getvalue().encode()))


# ---------------------------------------------------------------------------------------------
# The trainer.


@dataclass
class TrainOutcome:
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


def _load_split(config: TrainerConfig, image_size: int, augment: Any = None) -> DataBundle:
    # The same seed and held-out fraction carve the same split at every image size.
    return load_dataset(
        config.dataset,
        image_size,
        seed=config.seed,
        heldout_fraction=config.heldout_fraction,
        max_train_images=config.max_train_images,
        train_augment=augment,
    )


def train_progressive(
    spec: ArchSpec,
    config: TrainerConfig,
    out_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    on_epoch_end: EpochCallback | None = None,
) -> TrainOutcome:
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

    Each epoch's metrics: ``epoch``, ``stage`` (from 1), ``image_size``,
    ``randaug_magnitude`` (the bin used, 0 = off), ``mixup_alpha``, ``dropout``,
    ``train_loss``, ``accuracy`` (EMA weights), ``accuracy_raw``, ``lr`` (after the epoch),
    ``epoch_seconds``, ``eval_seconds``, ``train_seconds`` (cumulative training time),
    ``images_per_second``.

    Raises:
        CheckpointError: ``resume`` without a checkpoint, a checkpoint that cannot be read or
            that belongs to another spec or config, or a checkpoint in the way of a fresh run.
        ScheduleError: a stage image size below the net's total stride.
        DataError, WeightsError, TrainError: bad dataset, ``--init`` file or settings.
        NonFiniteLossError: the loss became NaN or infinite (the last checkpoint stays).
    """
    say = log if log is not None else (lambda line: None)
    out_dir = Path(out_dir)
    checkpoint_path = out_dir / CHECKPOINT_NAME
    schedule = config.schedule
    for settings in schedule.all_stages():
        if settings.image_size < spec.total_stride:
            raise ScheduleError(
                f"image size {settings.image_size} of stage {settings.stage + 1} is below the "
                f"net's total stride {spec.total_stride}"
            )
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)

    # Refuse at once what would otherwise fail after the data has loaded.
    checkpoint: dict[str, Any] | None = None
    if resume:
        if not checkpoint_path.is_file():
            raise CheckpointError(
                f"--resume: there is no checkpoint {str(checkpoint_path)!r} to resume"
            )
        checkpoint = _read_checkpoint(checkpoint_path)
    elif checkpoint_path.exists():
        raise CheckpointError(
            f"{str(out_dir)!r} already holds a checkpoint; pass --resume to continue that run, "
            "or choose another --out"
        )
    if config.init and checkpoint is None:
        init_path = Path(_split_init(config.init)[1])
        if not init_path.is_file():
            raise WeightsError(f"--init file {str(init_path)!r} does not exist")

    # -- Data. Accuracy is measured on the held-out split at the spec's eval size; the training
    # split is loaded per stage, at that stage's size, below.
    eval_data = _load_split(config, spec.eval_resolution)
    spec = spec.replace(num_classes=eval_data.num_classes)
    if checkpoint is not None:
        _check_checkpoint(checkpoint, spec, config, checkpoint_path)
    eval_loader = eval_data.heldout_loader(config.batch_size, num_workers=config.num_workers)
    steps_per_epoch = len(eval_data.train_loader(config.batch_size, num_workers=0))

    # -- Model, optimizer, LR schedule, EMA: built once, carried across every stage.
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    model = build_model(spec)
    if config.init and checkpoint is None:
        say(load_initial_weights(model, config.init))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes within a stage
    model.to(device, memory_format=memory_format_for(device))
    ema = (
        AveragedModel(model, multi_avg_fn=ema_multi_avg_fn(config.ema_decay), use_buffers=True)
        if config.ema_decay > 0
        else None
    )
    train_config = config.train_config()
    optimizer = build_optimizer(model, train_config)
    scheduler = build_scheduler(optimizer, train_config, steps_per_epoch)
    loss_fn = make_loss(train_config)

    history: list[dict[str, float]] = []
    start_epoch = 0
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        if ema is not None:
            ema.load_state_dict(checkpoint["ema"])
        history = list(checkpoint["history"])
        start_epoch = int(checkpoint["epoch"])
        _restore_rng_states(checkpoint["rng"], device)
        say(f"resuming {out_dir} after epoch {start_epoch} of {config.epochs}")

    out_dir.mkdir(parents=True, exist_ok=True)
    spec.save(out_dir / "spec.yaml")
    stage_epochs = config.stage_epochs()
    record: dict[str, Any] = {
        "spec": spec.to_string(),
        "name": spec.label,
        "hash": spec.hash,
        "dataset": config.dataset,
        "device": device_name(device),
        "config": config.to_dict(),
        "train_config": asdict(train_config),
        "stages": [
            {**asdict(schedule.at(i)), "epochs": [epochs.start + 1, epochs.stop]}
            for i, epochs in enumerate(stage_epochs)
        ],
        "history": history,
        "final": None,
    }
    say(f"{eval_data.describe()}; evaluating at {spec.eval_resolution} px")
    for i, epochs in enumerate(stage_epochs):
        say(f"{_describe_stage(schedule.at(i), schedule.stages)}, epochs {epochs.start + 1}-"
            f"{epochs.stop}")  # fmt: skip

    train_data: DataBundle | None = None
    data_stage = -1
    train_seconds = history[-1]["train_seconds"] if history else 0.0
    for epoch in range(start_epoch, config.epochs):
        # -- This epoch's stage: image size, RandAugment, MixUp, dropout.
        stage = config.stage_of(epoch)
        settings = schedule.at(stage)
        magnitude = _randaugment_bin(settings)
        if stage != data_stage:
            augment = v2.RandAugment(num_ops=2, magnitude=magnitude) if magnitude > 0 else None
            train_data = _load_split(config, settings.image_size, augment)
            data_stage = stage
        assert train_data is not None
        model.set_dropout(settings.dropout)
        mixup = (
            v2.MixUp(alpha=settings.mixup_alpha, num_classes=spec.num_classes)
            if settings.mixup_alpha > 0
            else None
        )
        loader = train_data.train_loader(
            config.batch_size,
            seed=_epoch_seed(config.seed, epoch),
            num_workers=config.num_workers,
            pin_memory=device.type == "cuda",
        )

        # -- Train one epoch; the EMA follows every step.
        bar = _progress_bar(loader, epoch, config.epochs, settings, schedule.stages, progress)

        def after_step(step: int, loss: float, bar: Any = bar) -> None:
            if ema is not None:
                ema.update_parameters(model)
            if bar is not None and (step % 10 == 0 or step == steps_per_epoch):
                bar.set_postfix_str(f"loss {loss:.4f}", refresh=False)

        try:
            stats = train_one_epoch(
                model,
                bar if bar is not None else loader,
                optimizer,
                scheduler,
                loss_fn,
                device=device,
                precision=precision,
                epoch=epoch + 1,
                batch_transform=mixup,
                on_step=after_step,
            )
        finally:
            if bar is not None:
                bar.close()
        train_seconds += stats["seconds"]

        # -- Evaluate the EMA weights (and the raw ones) at the eval size.
        eval_start = time.perf_counter()
        accuracy_raw = evaluate_accuracy(model, eval_loader, device=device, precision=precision)
        accuracy = (
            evaluate_accuracy(ema.module, eval_loader, device=device, precision=precision)
            if ema is not None
            else accuracy_raw
        )
        metrics = {
            "epoch": epoch + 1,
            "stage": stage + 1,
            "image_size": settings.image_size,
            "randaug_magnitude": magnitude,
            "mixup_alpha": settings.mixup_alpha,
            "dropout": settings.dropout,
            "train_loss": stats["train_loss"],
            "accuracy": accuracy,
            "accuracy_raw": accuracy_raw,
            "lr": float(optimizer.param_groups[0]["lr"]),
            "epoch_seconds": stats["seconds"],
            "eval_seconds": time.perf_counter() - eval_start,
            "train_seconds": train_seconds,
            "images_per_second": stats["images"] / max(stats["seconds"], 1e-9),
        }
        history.append(metrics)

        # -- Checkpoint (atomically), then the metrics files.
        payload = {
            "format": CHECKPOINT_FORMAT,
            "version": _CHECKPOINT_VERSION,
            "spec": spec.to_dict(),
            "config": config.to_dict(),
            "epoch": epoch + 1,
            "model": model.state_dict(),
            "ema": ema.state_dict() if ema is not None else None,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": _rng_states(device),
            "history": history,
        }
        _atomic_write(checkpoint_path, lambda file, payload=payload: torch.save(payload, file))
        _write_metrics(out_dir, record)
        ema_note = f" (EMA; raw {accuracy_raw:.2%})" if ema is not None else ""
        say(
            f"epoch {epoch + 1}/{config.epochs} {_describe_stage(settings, schedule.stages)}: "
            f"loss {stats['train_loss']:.4f}, held-out accuracy {accuracy:.2%}{ema_note}, "
            f"{stats['seconds']:.1f} s"
        )
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, metrics)

    # -- The evaluated model becomes the run's weights file; the test split, if any, is scored.
    final_model = ema.module if ema is not None else model
    assert isinstance(final_model, EfficientNetV2)
    save_weights(final_model, out_dir / "weights.pt", source=f"nas train {out_dir}")
    test_accuracy = None
    if eval_data.test is not None:
        test_loader = eval_data.test_loader(config.batch_size, num_workers=config.num_workers)
        test_accuracy = evaluate_accuracy(
            final_model, test_loader, device=device, precision=precision
        )
    last = history[-1]
    record["final"] = {
        "accuracy": last["accuracy"],
        "accuracy_raw": last["accuracy_raw"],
        "test_accuracy": test_accuracy,
        "train_seconds": train_seconds,
        "epochs": config.epochs,
        "eval_image_size": spec.eval_resolution,
    }
    _write_metrics(out_dir, record)
    return TrainOutcome(
        spec=spec,
        accuracy=last["accuracy"],
        accuracy_raw=last["accuracy_raw"],
        test_accuracy=test_accuracy,
        train_seconds=train_seconds,
        history=history,
        out_dir=out_dir,
        resumed_from=start_epoch,
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
