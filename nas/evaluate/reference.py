"""The reference net's step timing, measured as a candidate's and cached.

Step times are normalized by a reference net (EfficientNetV2-B0 by default) timed the same way on
the same device, so trials on different GPU models stay comparable. Reference timings are cached
in-process and on disk (``$EFFNAS_CACHE`` or ``~/.cache/effnas``), keyed by the device, batch
size, resolution, precision and the rest of what the step depends on.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nas.evaluate.config import DEFAULT_REFERENCE
from nas.evaluate.timing import StepSetup, StepTiming, time_train_step
from nas.train.device import device_name
from searchspace.builder import build_model
from searchspace.catalog import load_arch
from searchspace.errors import EffnasError
from searchspace.files import atomic_write
from searchspace.profile import count_parameters, spec_flops
from searchspace.spec import ArchSpec

__all__ = [
    "ReferenceTiming",
    "cache_dir",
    "clear_reference_cache",
    "reference_flops",
    "reference_timing",
]

_CACHE_FILE = "reference_timings.json"
_memory_cache: dict[str, dict[str, Any]] = {}


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
    data = _read_disk_cache(path)  # merge with what other processes wrote meanwhile
    data[key] = entry
    # Written atomically, so that a concurrent reader (another Ray worker) never sees half a
    # file; a lost update between two writers only costs one more reference timing.
    # A read-only or full cache directory must not fail an evaluation.
    with contextlib.suppress(EffnasError):
        atomic_write(path, json.dumps(data, indent=1, sort_keys=True))


def reference_timing(
    setup: StepSetup, *, reference: Any = DEFAULT_REFERENCE, use_cache: bool = True
) -> ReferenceTiming:
    """The reference net's step timing, measured like a candidate's (:func:`time_train_step`),
    cached.

    The cache key holds the device name, batch size, resolution, precision, memory format,
    number of classes, optimizer, steps and warm-up, the reference's hash, the torch version and,
    on a CPU, the number of torch threads and the clock: everything the figure depends on.

    Args:
        setup: what is timed, where and how (as for the candidate).
        reference: a catalog name, spec file or string, or an :class:`ArchSpec`.
        use_cache: read and write the in-process and on-disk caches; ``False`` always re-times
            (and then refreshes the caches).
    """
    spec = reference if isinstance(reference, ArchSpec) else load_arch(reference)
    spec = spec.replace(num_classes=setup.num_classes)
    target, precision = setup.resolved()
    name = device_name(target)
    threads = (
        f"|threads={torch.get_num_threads()}|clock={setup.clock}" if target.type == "cpu" else ""
    )
    memory_format = "channels_last" if target.type == "cuda" else "contiguous"
    key = (
        f"{name}{threads}|torch={torch.__version__}|batch={setup.batch_size}"
        f"|res={setup.image_size}|precision={precision}|format={memory_format}"
        f"|classes={setup.num_classes}|optimizer={setup.optimizer}|steps={setup.steps}"
        f"|warmup={setup.warmup}|ref={spec.hash}"
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
        timing = time_train_step(model, setup)
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


@functools.lru_cache(maxsize=16)
def reference_flops(reference: str, num_classes: int, image_size: int) -> int:
    """The reference net's fvcore FLOPs for one image of ``image_size`` px, with ``num_classes``
    outputs: what ``flops_norm`` divides by (counted once per process; it needs no device).

    Args:
        reference: a catalog name, spec file or spec string.
        num_classes: the classifier's outputs (the candidate's).
        image_size: the candidate's training image size.
    """
    spec = load_arch(reference).replace(num_classes=num_classes)
    with torch.random.fork_rng(devices=[]):  # counting builds layers: leave the RNG as it was
        return spec_flops(spec, image_size)
