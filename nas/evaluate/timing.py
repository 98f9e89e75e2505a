"""Timing a training step: the figure that makes the search training-aware.

:func:`time_train_step` times the *real* step (:func:`nas.train.loop.train_step`: forward, loss,
backward, optimizer step) at training's batch size, resolution, precision and memory format, on
synthetic input already on the device, one step at a time after a warm-up: with CUDA events on
a GPU, ``time.perf_counter`` on a CPU, or the process's CPU time (``clock="cpu"``, for one torch
thread per trial on a shared CPU). The median is the step time, the interquartile range its
spread, with the peak GPU memory (``None`` on a CPU) in a :class:`StepTiming`;
:func:`time_round_robin` times several nets interleaved on one clock. What is timed, the clocks
and the memory figure: docs/evaluating.md.
"""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from nas.errors import ConfigError
from nas.evaluate.config import CLOCKS, EvalConfig
from nas.train.device import device_name, memory_format_for, resolve_device, resolve_precision
from nas.train.loop import train_step
from nas.train.optim import build_optimizer, make_loss
from nas.train.recipe import Recipe
from searchspace.checks import check_choice, check_int

__all__ = ["StepSetup", "StepTiming", "time_round_robin", "time_train_step"]


@dataclass(frozen=True)
class StepTiming:
    """The timing of one net's training step.

    Attributes:
        median_ms: median of the timed steps, in milliseconds (the step time).
        spread_ms: interquartile range of the timed steps, in milliseconds.
        samples_ms: every timed step, in order.
        batch_size: images per step.
        image_size: side of the square input images.
        precision: ``fp32`` or ``bf16`` (autocast).
        memory_format: ``channels_last`` or ``contiguous``.
        device: ``cpu`` or ``cuda:<GPU model>``.
        peak_memory_mb: peak device memory of the step (MiB) on a GPU; ``None`` on a CPU.
        clock: ``cuda-events`` on a GPU; ``wall`` or ``cpu`` (process CPU time) on a CPU.
    """

    median_ms: float
    spread_ms: float
    samples_ms: tuple[float, ...]
    batch_size: int
    image_size: int
    precision: str
    memory_format: str
    device: str
    peak_memory_mb: float | None
    clock: str = "wall"

    @property
    def images_per_second(self) -> float:
        """Training throughput implied by the median step."""
        return self.batch_size / (self.median_ms / 1000.0)

    @property
    def relative_spread(self) -> float:
        """Spread as a fraction of the median (IQR / median)."""
        return self.spread_ms / self.median_ms

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["samples_ms"] = list(self.samples_ms)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepTiming:
        return cls(**{**data, "samples_ms": tuple(data["samples_ms"])})


@dataclass(frozen=True)
class StepSetup:
    """How a training step is timed: what a candidate's timing and the reference's share.

    Attributes:
        batch_size, image_size: the training batch size and resolution.
        num_classes: classes of the synthetic labels (the classifier's outputs).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (or a ``torch.device``).
        steps, warmup: timed steps (K), and untimed ones before them.
        precision: ``auto`` (bf16 on a GPU, fp32 on a CPU), ``fp32`` or ``bf16``.
        optimizer: ``rmsprop``, ``sgd`` or ``adamw``, as in training.
        clock: on a CPU, ``wall`` (``time.perf_counter``) or ``cpu`` (``time.process_time``, for
            a shared machine with one torch thread; see the module docstring). Ignored on a GPU,
            where CUDA events time the device itself.
    """

    batch_size: int
    image_size: int
    num_classes: int
    device: str | torch.device = "auto"
    steps: int = 20
    warmup: int = 5
    precision: str = "auto"
    optimizer: str = "rmsprop"
    clock: str = "wall"

    def __post_init__(self) -> None:
        for name, minimum in (
            ("batch_size", 1), ("image_size", 1), ("num_classes", 1), ("steps", 1), ("warmup", 0)
        ):  # fmt: skip
            check_int(name, getattr(self, name), minimum, ConfigError)
        check_choice("clock", self.clock, CLOCKS, ConfigError)

    @classmethod
    def for_config(
        cls,
        config: EvalConfig,
        image_size: int,
        num_classes: int,
        device: str | torch.device | None = None,
    ) -> StepSetup:
        """The step a candidate evaluated with ``config`` is timed by (``device`` defaults to
        the config's)."""
        return cls(
            batch_size=config.batch_size,
            image_size=image_size,
            num_classes=num_classes,
            device=config.device if device is None else device,
            steps=config.timing_steps,
            warmup=config.timing_warmup,
            precision=config.precision,
            optimizer=config.optimizer,
            clock=config.timing_clock,
        )

    def resolved(self) -> tuple[torch.device, str]:
        """The device and the precision (``fp32`` or ``bf16``) ``auto`` stands for here."""
        target = resolve_device(self.device)
        return target, resolve_precision(self.precision, target)


def _quartiles(samples: list[float]) -> tuple[float, float, float]:
    if len(samples) == 1:
        return samples[0], samples[0], samples[0]
    q1, q2, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return q1, q2, q3


def _run_steps(
    model: nn.Module, recipe: Recipe, target: torch.device, setup: StepSetup, seed: int
) -> list[float]:
    """Warm up, then time ``setup.steps`` training steps of a copy of ``model``; ms each.

    Everything allocated here (the copy, its optimizer state, the batch) is freed on return.
    """
    memory_format = memory_format_for(target)
    work = copy.deepcopy(model).to(target, memory_format=memory_format)
    work.train()
    optimizer = build_optimizer(work, recipe)
    loss_fn = make_loss(recipe)
    generator = torch.Generator(device=target).manual_seed(seed)
    size, batch = setup.image_size, setup.batch_size
    images = torch.randn(batch, 3, size, size, generator=generator, device=target)
    images = images.contiguous(memory_format=memory_format)
    labels = torch.randint(0, setup.num_classes, (batch,), generator=generator, device=target)

    def step() -> None:
        train_step(
            work, images, labels, optimizer, loss_fn, device=target, precision=recipe.precision
        )

    for _ in range(setup.warmup):
        step()
    if target.type == "cuda":
        torch.cuda.synchronize(target)
        events = [
            (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            for _ in range(setup.steps)
        ]
        for start, end in events:
            start.record()
            step()
            end.record()
        torch.cuda.synchronize(target)
        return [start.elapsed_time(end) for start, end in events]
    # On a CPU every op has finished when it returns: a monotonic clock around the step suffices.
    now = time.perf_counter if setup.clock == "wall" else time.process_time
    samples = []
    for _ in range(setup.steps):
        start_time = now()
        step()
        samples.append((now() - start_time) * 1000.0)
    return samples


def time_train_step(model: nn.Module, setup: StepSetup, *, seed: int = 0) -> StepTiming:
    """Time ``model``'s real training step on synthetic data already on the device.

    The step is :func:`nas.train.loop.train_step` (zero grads, forward and loss under autocast,
    backward, optimizer step) with the optimizer training would use, in train mode, in the
    device's memory format. ``setup.warmup`` untimed steps come first, then ``setup.steps`` timed
    ones. ``model`` itself is left untouched (a copy is timed, so its weights, BatchNorm
    statistics and device stay as they were), and so is the global RNG.

    Args:
        model: the network; its classifier must have ``setup.num_classes`` outputs.
        setup: what is timed, where and how.
        seed: seed of the synthetic batch.

    Raises:
        ConfigError: an unknown device or precision.
        torch.OutOfMemoryError: the step does not fit on the GPU.
    """
    target, precision = setup.resolved()
    recipe = Recipe(batch_size=setup.batch_size, optimizer=setup.optimizer, precision=precision)
    with torch.random.fork_rng(devices=[target.index] if target.type == "cuda" else []):
        samples, peak_mb = _measure(model, recipe, target, setup, seed)
    q1, median, q3 = _quartiles(samples)
    on_gpu = target.type == "cuda"
    return StepTiming(
        median_ms=median,
        spread_ms=q3 - q1,
        samples_ms=tuple(samples),
        batch_size=setup.batch_size,
        image_size=setup.image_size,
        precision=precision,
        memory_format="channels_last" if on_gpu else "contiguous",
        device=device_name(target),
        peak_memory_mb=peak_mb,
        clock="cuda-events" if on_gpu else setup.clock,
    )


def _measure(
    model: nn.Module, recipe: Recipe, target: torch.device, setup: StepSetup, seed: int
) -> tuple[list[float], float | None]:
    """:func:`_run_steps`, and on a GPU the peak memory the steps added (MiB)."""
    if target.type != "cuda":
        return _run_steps(model, recipe, target, setup, seed), None
    # Autotuning happens during warm-up, as it does in the first steps of training.
    torch.backends.cudnn.benchmark = True
    torch.cuda.synchronize(target)
    baseline_bytes = torch.cuda.memory_allocated(target)
    torch.cuda.reset_peak_memory_stats(target)
    samples = _run_steps(model, recipe, target, setup, seed)
    peak_mb = (torch.cuda.max_memory_allocated(target) - baseline_bytes) / 2**20
    torch.cuda.empty_cache()
    return samples, peak_mb


def time_round_robin(
    models: list[nn.Module], setup: StepSetup, rounds: int
) -> list[list[StepTiming]]:
    """Time several nets on one clock, interleaved: ``rounds`` passes over all of them, each
    pass starting one net further along, so that a slow drift of the machine (another job
    starting, a clock throttling) touches every net alike instead of whichever came last.

    Returns:
        Per net, its ``rounds`` timings (:func:`time_train_step`), in round order.
    """
    check_int("rounds", rounds, 1, ConfigError)
    timings: list[list[StepTiming]] = [[] for _ in models]
    for round_index in range(rounds):
        for offset in range(len(models)):
            index = (round_index + offset) % len(models)
            timings[index].append(time_train_step(models[index], setup))
    return timings
