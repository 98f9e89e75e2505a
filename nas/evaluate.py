"""Training-aware evaluation of one candidate: build, time the step, train briefly, score.

:func:`evaluate_candidate` is what every search trial runs (and what ``nas evaluate`` runs):

1. build the net the spec describes, with the dataset's number of classes, seeded;
2. count its parameters and FLOPs (fvcore, batch 1, at the training image size);
3. time its real training step on the trial's device (:mod:`nas.timing`) and the reference net's
   (cached), and normalize;
4. train it for a few epochs on the search split and measure top-1 accuracy on the held-out split
   (:mod:`nas.train`);
5. score it with the paper's reward ``A * S^w * P^v`` (:mod:`nas.reward`).

The result is one :class:`EvalResult`, whose :meth:`EvalResult.to_dict` is the record the search
stores per trial (the team's result-record schema). A candidate whose loss becomes NaN or infinite,
or that runs out of GPU memory, is a *failed* record (``status="failed"``, ``failure`` says why,
no accuracy and no reward), not an exception; bad configuration or data raise
:class:`~searchspace.errors.EffnasError`.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch

from nas.data import DataBundle, load_dataset
from nas.device import PRECISIONS, device_name, resolve_device, resolve_precision
from nas.reward import RewardWeights, reward
from nas.timing import CLOCKS, DEFAULT_REFERENCE, reference_timing, time_train_step
from nas.train import (
    OPTIMIZERS,
    SCHEDULES,
    EpochCallback,
    NonFiniteLossError,
    TrainConfig,
    scaled_lr,
    train,
)
from searchspace import ArchSpec, build_model, count_flops, count_parameters, load_arch
from searchspace.checks import check_choice, check_int
from searchspace.errors import EffnasError

__all__ = ["RESULT_KEYS", "ConfigError", "EvalConfig", "EvalResult", "evaluate_candidate"]


class ConfigError(EffnasError, ValueError):
    """An evaluation setting that is out of range; the message names the field and the value."""


@dataclass(frozen=True)
class EvalConfig:
    """How to evaluate a candidate. Validated at construction; see :meth:`check_spec` too.

    Attributes:
        dataset: ``NAME[:PATH]`` from the :mod:`nas.data` registry.
        image_size: training and evaluation image size; ``None`` means the spec's
            ``train_resolution``. Must be at least the net's total stride.
        batch_size: training batch size (also the timed step's).
        epochs: training epochs on the search split (the paper used about 10).
        lr: peak learning rate; ``None`` means the optimizer's per-256 default scaled to
            ``batch_size`` (0.016 per 256 images for RMSProp, as in the paper).
        optimizer: ``rmsprop``, ``sgd`` or ``adamw``.
        weight_decay: decay on conv and linear weights (not BN or biases).
        label_smoothing: cross-entropy label smoothing.
        warmup_epochs: linear LR warm-up, in epochs.
        schedule: ``cosine`` or ``exponential`` after warm-up.
        seed: seeds the split, the weights, the shuffle order, dropout; same seed, same result
            on a CPU.
        device: ``auto`` (a GPU if there is one), ``cpu``, ``cuda`` or ``cuda:N``.
        precision: ``auto`` (bf16 autocast on a GPU, fp32 on a CPU), ``fp32`` or ``bf16``.
        timing_steps: timed training steps (K).
        timing_warmup: untimed warm-up steps before them.
        timing_clock: on a CPU, ``wall`` (default) or ``cpu`` (process CPU time, for a CPU shared
            by concurrent trials, with one torch thread each; see :mod:`nas.timing`).
        reference: the net step time and parameters are normalized by (catalog name, file or
            spec string).
        reward_w: reward exponent of the normalized step time (paper: -0.07).
        reward_v: reward exponent of the normalized parameter count (paper: -0.05).
        num_workers: data-loading processes; ``None`` chooses (none for in-memory data).
        heldout_fraction: fraction of the training set held out for accuracy.
        max_train_images: cap on the search split's size, or ``None`` for all of it.
    """

    dataset: str = "mnist5k"
    image_size: int | None = None
    batch_size: int = 64
    epochs: int = 3
    lr: float | None = None
    optimizer: str = "rmsprop"
    weight_decay: float = 1e-5
    label_smoothing: float = 0.1
    warmup_epochs: float = 0.5
    schedule: str = "cosine"
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    timing_steps: int = 20
    timing_warmup: int = 5
    timing_clock: str = "wall"
    reference: str = DEFAULT_REFERENCE
    reward_w: float = -0.07
    reward_v: float = -0.05
    num_workers: int | None = None
    heldout_fraction: float = 0.1
    max_train_images: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.dataset, str) or not self.dataset:
            raise ConfigError(f"dataset must be NAME[:PATH], got {self.dataset!r}")
        if self.image_size is not None:
            check_int("image_size", self.image_size, 1, ConfigError)
        check_int("batch_size", self.batch_size, 1, ConfigError)
        check_int("epochs", self.epochs, 1, ConfigError)
        check_int("seed", self.seed, 0, ConfigError)
        check_int("timing_steps", self.timing_steps, 1, ConfigError)
        check_int("timing_warmup", self.timing_warmup, 0, ConfigError)
        check_choice("timing_clock", self.timing_clock, CLOCKS, ConfigError)
        if self.num_workers is not None:
            check_int("num_workers", self.num_workers, 0, ConfigError)
        if self.max_train_images is not None:
            check_int("max_train_images", self.max_train_images, 1, ConfigError)
        if self.lr is not None and (
            isinstance(self.lr, bool)
            or not isinstance(self.lr, (int, float))
            or not (math.isfinite(self.lr) and self.lr > 0)
        ):
            raise ConfigError(f"lr must be a positive number, got {self.lr!r}")
        check_choice("optimizer", self.optimizer, OPTIMIZERS, ConfigError)
        check_choice("schedule", self.schedule, SCHEDULES, ConfigError)
        check_choice("precision", self.precision, PRECISIONS, ConfigError)
        fraction = self.heldout_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
            raise ConfigError(f"heldout_fraction must be a number in (0, 1), got {fraction!r}")
        if not 0.0 < fraction < 1.0:
            raise ConfigError(f"heldout_fraction must be in (0, 1), got {fraction!r}")
        self.reward_weights()  # checks reward_w and reward_v
        self.train_config()  # checks the rest of the training settings

    def reward_weights(self) -> RewardWeights:
        return RewardWeights(step_time=self.reward_w, params=self.reward_v)

    def train_config(self) -> TrainConfig:
        """The :class:`~nas.train.TrainConfig` these settings describe."""
        return TrainConfig(
            epochs=self.epochs,
            lr=self.lr if self.lr is not None else scaled_lr(self.optimizer, self.batch_size),
            optimizer=self.optimizer,
            weight_decay=self.weight_decay,
            label_smoothing=self.label_smoothing,
            warmup_epochs=self.warmup_epochs,
            schedule=self.schedule,
            precision=self.precision,
        )

    def image_size_for(self, spec: ArchSpec) -> int:
        """The image size used for ``spec``: :attr:`image_size`, or the spec's train resolution."""
        return spec.train_resolution if self.image_size is None else self.image_size

    def check_spec(self, spec: ArchSpec) -> None:
        """Check the settings against a spec.

        Raises:
            ConfigError: the image size is below the net's total stride.
        """
        size = self.image_size_for(spec)
        if size < spec.total_stride:
            raise ConfigError(
                f"image_size must be at least the net's total stride {spec.total_stride}, "
                f"got {size}"
            )

    def load_data(self, spec: ArchSpec | None = None) -> DataBundle:
        """Load :attr:`dataset` as these settings split it (to share one load across trials).

        ``spec`` supplies the image size when :attr:`image_size` is ``None``.
        """
        if self.image_size is None and spec is None:
            raise ConfigError("image_size is None: give it, or a spec to take it from")
        size = self.image_size if self.image_size is not None else spec.train_resolution  # type: ignore[union-attr]
        return load_dataset(
            self.dataset,
            size,
            seed=self.seed,
            heldout_fraction=self.heldout_fraction,
            max_train_images=self.max_train_images,
        )

    def replace(self, **changes: Any) -> EvalConfig:
        """A copy with ``changes`` applied and validated."""
        return replace(self, **changes)


#: The result-record schema, in order: the keys of :meth:`EvalResult.to_dict`.
RESULT_KEYS = (
    "spec",
    "hash",
    "name",
    "accuracy",
    "step_time_ms",
    "step_time_spread_ms",
    "reference_step_time_ms",
    "step_time_norm",
    "images_per_second",
    "params",
    "params_norm",
    "flops",
    "peak_memory_mb",
    "reward",
    "device",
    "epochs",
    "image_size",
    "batch_size",
    "train_seconds",
    "duration_s",
    "status",
    "failure",
)


@dataclass(frozen=True)
class EvalResult:
    """One evaluated candidate: the spec and every figure (the team's result-record schema).

    Attributes:
        spec: canonical spec string (:meth:`ArchSpec.to_string`), with the dataset's classes.
        hash: :attr:`ArchSpec.hash` of that spec.
        name: the spec's label (its name, else its hash).
        accuracy: top-1 on the held-out split, 0..1; ``None`` if the candidate failed.
        step_time_ms: median raw time of one training step, ms.
        step_time_spread_ms: interquartile range of the timed steps, ms.
        reference_step_time_ms: the reference net's median step time, same settings, ms.
        step_time_norm: ``step_time_ms / reference_step_time_ms``.
        images_per_second: ``batch_size / step_time``.
        params: trainable parameters.
        params_norm: ``params / reference params`` (``None`` only if the reference failed).
        flops: fvcore FLOPs of one image at ``image_size`` (one multiply-add = one FLOP).
        peak_memory_mb: peak GPU memory of the training step (MiB); ``None`` on a CPU.
        reward: ``accuracy * step_time_norm^w * params_norm^v``; ``None`` if failed.
        device: ``cpu`` or ``cuda:<GPU model>``.
        epochs: training epochs.
        image_size: training and evaluation image size.
        batch_size: training batch size.
        train_seconds: wall time of the training epochs (without timing and evaluation).
        duration_s: wall time of the whole evaluation.
        status: ``ok`` or ``failed``.
        failure: why it failed, ``""`` when ok.
    """

    spec: str
    hash: str
    name: str
    accuracy: float | None
    step_time_ms: float | None
    step_time_spread_ms: float | None
    reference_step_time_ms: float | None
    step_time_norm: float | None
    images_per_second: float | None
    params: int
    params_norm: float | None
    flops: int
    peak_memory_mb: float | None
    reward: float | None
    device: str
    epochs: int
    image_size: int
    batch_size: int
    train_seconds: float
    duration_s: float
    status: str
    failure: str

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        """The record: exactly :data:`RESULT_KEYS`, JSON-serializable."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalResult:
        """Rebuild a result from :meth:`to_dict`'s output (e.g. an Optuna trial's user_attrs)."""
        return cls(**{f.name: data[f.name] for f in fields(cls)})


def evaluate_candidate(
    spec: ArchSpec | str,
    config: EvalConfig,
    *,
    data: DataBundle | None = None,
    on_epoch_end: EpochCallback | None = None,
) -> EvalResult:
    """Build, time, train briefly and score one candidate.

    Args:
        spec: the architecture (an :class:`ArchSpec`, or a catalog name, file or spec string).
            Its classifier is resized to the dataset's number of classes.
        config: the evaluation settings.
        data: the dataset already loaded (e.g. once per Ray worker with
            :meth:`EvalConfig.load_data`); it must have the config's image size. ``None`` loads
            ``config.dataset``.
        on_epoch_end: called after every training epoch with ``(epoch, metrics)``: the
            training metrics of :func:`nas.train.train` (held-out ``accuracy`` so far,
            ``train_loss``, ...) plus ``step_time_ms``, ``step_time_norm``, ``params``,
            ``params_norm`` and the ``reward`` that accuracy would score, so that Tune's ASHA
            can stop weak candidates on accuracy or reward. It may raise to stop training.

    Returns:
        The :class:`EvalResult`. A NaN/infinite loss or a GPU out-of-memory gives a failed
        result rather than an exception.

    Raises:
        EffnasError: a bad spec, config or dataset (e.g. an image size below the total stride).
    """
    started = time.perf_counter()
    if not isinstance(spec, ArchSpec):
        spec = load_arch(spec)
    config.check_spec(spec)
    image_size = config.image_size_for(spec)
    if data is None:
        data = config.load_data(spec)
    elif data.image_size != image_size:
        raise ConfigError(
            f"image_size is {image_size} but the data given was loaded at {data.image_size} px"
        )
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    train_config = config.train_config()
    # The loaders fail early on a batch larger than the split, before any timing is spent.
    train_loader = data.train_loader(
        config.batch_size,
        seed=config.seed,
        num_workers=config.num_workers,
        pin_memory=device.type == "cuda",
    )
    heldout_loader = data.heldout_loader(
        max(config.batch_size, 256),
        num_workers=config.num_workers,
        pin_memory=device.type == "cuda",
    )

    spec = spec.replace(num_classes=data.num_classes)
    torch.manual_seed(config.seed)
    model = build_model(spec)
    params = count_parameters(model)
    flops = count_flops(model, image_size)
    timing_args = {
        "batch_size": config.batch_size,
        "image_size": image_size,
        "num_classes": data.num_classes,
        "device": device,
        "steps": config.timing_steps,
        "warmup": config.timing_warmup,
        "precision": precision,
        "optimizer": config.optimizer,
        "clock": config.timing_clock,
    }
    record: dict[str, Any] = {
        "spec": spec.to_string(),
        "hash": spec.hash,
        "name": spec.label,
        "accuracy": None,
        "step_time_ms": None,
        "step_time_spread_ms": None,
        "reference_step_time_ms": None,
        "step_time_norm": None,
        "images_per_second": None,
        "params": params,
        "params_norm": None,
        "flops": flops,
        "peak_memory_mb": None,
        "reward": None,
        "device": device_name(device),
        "epochs": config.epochs,
        "image_size": image_size,
        "batch_size": config.batch_size,
        "train_seconds": 0.0,
        "status": "ok",
        "failure": "",
    }

    def _with_figures(callback: EpochCallback) -> EpochCallback:
        def report(epoch: int, metrics: dict[str, float]) -> None:
            figures = {
                key: record[key]
                for key in ("step_time_ms", "step_time_norm", "params", "params_norm")
            }
            score = reward(
                metrics["accuracy"],
                record["step_time_norm"],
                record["params_norm"],
                config.reward_weights(),
            )
            callback(epoch, {**metrics, **figures, "reward": score})

        return report

    try:
        reference = reference_timing(reference=config.reference, **timing_args)
        record.update(
            reference_step_time_ms=reference.timing.median_ms,
            params_norm=params / reference.params,
        )
        timing = time_train_step(model, **timing_args)
        record.update(
            step_time_ms=timing.median_ms,
            step_time_spread_ms=timing.spread_ms,
            step_time_norm=timing.median_ms / reference.timing.median_ms,
            images_per_second=timing.images_per_second,
            peak_memory_mb=timing.peak_memory_mb,
        )
        trained = train(
            model,
            train_loader,
            heldout_loader,
            train_config,
            device=device,
            seed=config.seed,
            on_epoch_end=None if on_epoch_end is None else _with_figures(on_epoch_end),
        )
        record.update(accuracy=trained.accuracy, train_seconds=trained.train_seconds)
        record["reward"] = reward(
            trained.accuracy,
            record["step_time_norm"],
            record["params_norm"],
            config.reward_weights(),
        )
    except NonFiniteLossError as error:
        record.update(status="failed", failure=error.reason, train_seconds=error.seconds)
    except torch.OutOfMemoryError:
        record.update(
            status="failed",
            failure=f"out of memory on {device_name(device)} at batch size "
            f"{config.batch_size} and {image_size} px",
        )
    finally:
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    record["duration_s"] = time.perf_counter() - started
    return EvalResult(**record)
