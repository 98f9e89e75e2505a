"""Timing a training step, as shared/DESIGN.md ("Timing a training step") lays down.

The number that makes the search training-aware is the time of the *real* step (forward, loss,
backward, optimizer step; :func:`nas.train.train_step` itself) at the batch size, resolution,
precision and memory format training uses, on the device training uses, with synthetic input
already on the device so that data loading is not timed. After a warm-up (cuDNN autotuning, the
allocator, oneDNN's kernel caches), K steps are timed one by one: with CUDA events on a GPU (bf16
autocast, channels_last), with ``time.perf_counter`` on a CPU, where every op is synchronous.
The median is the step time; the interquartile range is its spread.

On a CPU shared with other work (several trials on one machine, other users), the wall clock
also counts the time the process waits for a core. ``clock="cpu"`` times the step by the
process's CPU time instead (``time.process_time``), which is what the wall clock would read on an
idle machine *when torch runs one thread*; with more threads it adds their CPU time up (OpenMP's
spin-waiting included), so use it with one torch thread per trial.

Step times are normalized by a reference net (EfficientNetV2-B0 by default) timed the same way
on the same device, so trials on different GPU models stay comparable. Reference timings are
cached in-process and on disk (``$EFFNAS_CACHE`` or ``~/.cache/effnas``), keyed by the device,
batch size, resolution, precision and the rest of what the step depends on; raw milliseconds are
always kept.

Peak memory: on a GPU, ``torch.cuda.max_memory_allocated`` during the timed steps, less what was
allocated before (so: the net, its gradients, the optimizer state and the activations). On a CPU
there is no honest per-step figure (the process's resident size mixes in the dataset, Python and
the allocator's caches, and only grows), so it is reported as ``None``.
"""

from __future__ import annotations

import copy
import json
import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nas.device import device_name, memory_format_for, resolve_device, resolve_precision
from nas.train import TrainConfig, build_optimizer, make_loss, scaled_lr, train_step
from searchspace.checks import check_choice
from searchspace.errors import EffnasError

__all__ = [
    "CLOCKS",
    "DEFAULT_REFERENCE",
    "ReferenceTiming",
    "StepTiming",
    "cache_dir",
    "clear_reference_cache",
    "reference_timing",
    "time_train_step",
]

#: CPU clocks: the wall clock (the design's default) or the process's CPU time (shared CPUs).
CLOCKS = ("wall", "cpu")

#: The net every step time is normalized by.
DEFAULT_REFERENCE = "efficientnetv2-b0"

_CACHE_FILE = "reference_timings.json"
_memory_cache: dict[str, dict[str, Any]] = {}


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
class ReferenceTiming:
    """The reference net's step timing and parameter count.

    Attributes:
        name: the reference's catalog name or label.
        spec_hash: its :attr:`ArchSpec.hash`.
        params: its parameter count at the given number of classes.
        timing: its step timing, measured exactly as the candidate's.
        cached: whether the timing came from the cache rather than a fresh measurement.
    """

    name: str
    spec_hash: str
    params: int
    timing: StepTiming
    cached: bool


def _quartiles(samples: list[float]) -> tuple[float, float, float]:
    if len(samples) == 1:
        return samples[0], samples[0], samples[0]
    q1, q2, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return q1, q2, q3


def _check_positive(name: str, value: Any, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise EffnasError(f"{name} must be an integer of at least {minimum}, got {value!r}")


def _run_steps(
    model: nn.Module,
    config: TrainConfig,
    target: torch.device,
    batch_size: int,
    image_size: int,
    num_classes: int,
    seed: int,
    *,
    warmup: int,
    steps: int,
    clock: str,
) -> list[float]:
    """Warm up, then time ``steps`` training steps of a copy of ``model``; milliseconds each.

    Everything allocated here (the copy, its optimizer state, the batch) is freed on return.
    """
    memory_format = memory_format_for(target)
    work = copy.deepcopy(model).to(target, memory_format=memory_format)
    work.train()
    optimizer = build_optimizer(work, config)
    loss_fn = make_loss(config)
    generator = torch.Generator(device=target).manual_seed(seed)
    images = torch.randn(
        batch_size, 3, image_size, image_size, generator=generator, device=target
    ).contiguous(memory_format=memory_format)
    labels = torch.randint(0, num_classes, (batch_size,), generator=generator, device=target)

    def step() -> None:
        train_step(
            work, images, labels, optimizer, loss_fn, device=target, precision=config.precision
        )

    for _ in range(warmup):
        step()
    if target.type == "cuda":
        torch.cuda.synchronize(target)
        events = [
            (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            for _ in range(steps)
        ]
        for start, end in events:
            start.record()
            step()
            end.record()
        torch.cuda.synchronize(target)
        return [start.elapsed_time(end) for start, end in events]
    # On a CPU every op has finished when it returns: a monotonic clock around the step suffices.
    now = time.perf_counter if clock == "wall" else time.process_time
    samples = []
    for _ in range(steps):
        start_time = now()
        step()
        samples.append((now() - start_time) * 1000.0)
    return samples


def time_train_step(
    model: nn.Module,
    *,
    batch_size: int,
    image_size: int,
    num_classes: int,
    device: str | torch.device = "auto",
    steps: int = 20,
    warmup: int = 5,
    precision: str = "auto",
    optimizer: str = "rmsprop",
    seed: int = 0,
    clock: str = "wall",
) -> StepTiming:
    """Time ``model``'s real training step on synthetic data already on the device.

    The step is :func:`nas.train.train_step` (zero grads, forward and loss under autocast,
    backward, optimizer step) with the optimizer training would use, in train mode, in the
    device's memory format. ``warmup`` untimed steps come first, then ``steps`` timed ones.

    ``model`` itself is left untouched (a copy is timed, so its weights, BatchNorm statistics and
    device stay as they were), and so is the global RNG.

    Args:
        model: the network; its classifier must have ``num_classes`` outputs.
        batch_size: images per step (the training batch size).
        image_size: side of the square images (the training resolution).
        num_classes: classes of the synthetic labels.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        steps: number of timed steps (K).
        warmup: untimed steps before them.
        precision: ``auto`` (bf16 on a GPU, fp32 on a CPU), ``fp32`` or ``bf16``.
        optimizer: ``rmsprop``, ``sgd`` or ``adamw``, as in training.
        seed: seed of the synthetic batch.
        clock: on a CPU, ``wall`` (``time.perf_counter``) or ``cpu`` (``time.process_time``, for
            a shared machine with one torch thread; see the module docstring). Ignored on a GPU,
            where CUDA events time the device itself.

    Returns:
        The :class:`StepTiming`.

    Raises:
        EffnasError: a non-positive size or count, an unknown device or precision.
        torch.OutOfMemoryError: the step does not fit on the GPU.
    """
    _check_positive("batch_size", batch_size)
    _check_positive("image_size", image_size)
    _check_positive("num_classes", num_classes)
    _check_positive("steps", steps)
    _check_positive("warmup", warmup, minimum=0)
    check_choice("clock", clock, CLOCKS, EffnasError)
    target = resolve_device(device)
    precision = resolve_precision(precision, target)
    memory_format = memory_format_for(target)
    config = TrainConfig(
        lr=scaled_lr(optimizer, batch_size), optimizer=optimizer, precision=precision
    )
    on_gpu = target.type == "cuda"

    with torch.random.fork_rng(devices=[target.index] if on_gpu else []):
        if on_gpu:
            # Autotuning happens during warm-up, as it does in the first steps of training.
            torch.backends.cudnn.benchmark = True
            torch.cuda.synchronize(target)
            baseline_bytes = torch.cuda.memory_allocated(target)
            torch.cuda.reset_peak_memory_stats(target)
        samples = _run_steps(
            model,
            config,
            target,
            batch_size,
            image_size,
            num_classes,
            seed,
            warmup=warmup,
            steps=steps,
            clock=clock,
        )
        peak_mb: float | None = None
        if on_gpu:
            peak_mb = (torch.cuda.max_memory_allocated(target) - baseline_bytes) / 2**20
            torch.cuda.empty_cache()

    q1, median, q3 = _quartiles(samples)
    return StepTiming(
        median_ms=median,
        spread_ms=q3 - q1,
        samples_ms=tuple(samples),
        batch_size=batch_size,
        image_size=image_size,
        precision=precision,
        memory_format="channels_last" if memory_format == torch.channels_last else "contiguous",
        device=device_name(target),
        peak_memory_mb=peak_mb,
        clock="cuda-events" if on_gpu else clock,
    )


def cache_dir() -> Path:
    """Where reference timings are kept: ``$EFFNAS_CACHE``, else ``$XDG_CACHE_HOME/effnas``,
    else ``~/.cache/effnas``."""
    if os.environ.get("EFFNAS_CACHE"):
        return Path(os.environ["EFFNAS_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "effnas"


def clear_reference_cache(*, disk: bool = False) -> None:
    """Forget cached reference timings in this process (and on disk when ``disk``)."""
    _memory_cache.clear()
    if disk:
        (cache_dir() / _CACHE_FILE).unlink(missing_ok=True)


def _read_disk_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # absent or corrupt: the cache is only an optimization, re-time
    return data if isinstance(data, dict) else {}


def _write_disk_cache(path: Path, key: str, entry: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = _read_disk_cache(path)  # merge with what other processes wrote meanwhile
        data[key] = entry
        # Write-then-rename, so that a concurrent reader (another Ray worker) never sees half a
        # file; a lost update between two writers only costs one more reference timing.
        with tempfile.NamedTemporaryFile(
            "w", dir=path.parent, prefix=".reference-", suffix=".json", delete=False
        ) as file:
            json.dump(data, file, indent=1, sort_keys=True)
        os.replace(file.name, path)
    except OSError:
        pass  # a read-only or full cache directory must not fail an evaluation


def reference_timing(
    *,
    batch_size: int,
    image_size: int,
    num_classes: int,
    device: str | torch.device = "auto",
    steps: int = 20,
    warmup: int = 5,
    precision: str = "auto",
    optimizer: str = "rmsprop",
    clock: str = "wall",
    reference: Any = DEFAULT_REFERENCE,
    use_cache: bool = True,
) -> ReferenceTiming:
    """The reference net's step timing, measured like :func:`time_train_step`, cached.

    The cache key holds the device name, batch size, resolution, precision, memory format,
    number of classes, optimizer, steps and warm-up, the reference's hash, the torch version and,
    on a CPU, the number of torch threads and the clock: everything the figure depends on.

    Args:
        reference: a catalog name, spec file or string, or an :class:`ArchSpec`.
        use_cache: read and write the in-process and on-disk caches; ``False`` always re-times
            (and then refreshes the caches).
        (other arguments as :func:`time_train_step`)

    Returns:
        The :class:`ReferenceTiming`.
    """
    from searchspace import ArchSpec, build_model, count_parameters, load_arch

    spec = reference if isinstance(reference, ArchSpec) else load_arch(reference)
    spec = spec.replace(num_classes=num_classes)
    target = resolve_device(device)
    resolved_precision = resolve_precision(precision, target)
    name = device_name(target)
    threads = f"|threads={torch.get_num_threads()}|clock={clock}" if target.type == "cpu" else ""
    memory_format = "channels_last" if target.type == "cuda" else "contiguous"
    key = (
        f"{name}{threads}|torch={torch.__version__}|batch={batch_size}|res={image_size}"
        f"|precision={resolved_precision}|format={memory_format}|classes={num_classes}"
        f"|optimizer={optimizer}|steps={steps}|warmup={warmup}|ref={spec.hash}"
    )
    path = cache_dir() / _CACHE_FILE
    entry = _memory_cache.get(key) if use_cache else None
    if entry is None and use_cache:
        entry = _read_disk_cache(path).get(key)
    cached = entry is not None
    if entry is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # the same reference weights every time
            model = build_model(spec)
        timing = time_train_step(
            model,
            batch_size=batch_size,
            image_size=image_size,
            num_classes=num_classes,
            device=target,
            steps=steps,
            warmup=warmup,
            precision=resolved_precision,
            optimizer=optimizer,
            clock=clock,
        )
        entry = {
            "name": spec.label,
            "spec_hash": spec.hash,
            "params": count_parameters(model),
            "timing": timing.to_dict(),
        }
        _write_disk_cache(path, key, entry)
    _memory_cache[key] = entry
    return ReferenceTiming(
        name=entry["name"],
        spec_hash=entry["spec_hash"],
        params=int(entry["params"]),
        timing=StepTiming.from_dict(entry["timing"]),
        cached=cached,
    )
