"""Device, precision and memory-format choices shared by step timing and training.

Timing and training must run the step the same way (DESIGN.md, "Timing a training step"), so both
resolve their settings here: on a CUDA GPU, bf16 autocast and channels_last; on a CPU, fp32 and
the default (contiguous) layout.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from nas.errors import ConfigError
from nas.train.recipe import PRECISIONS
from searchspace.checks import check_choice

__all__ = [
    "autocast",
    "available_memory",
    "device_name",
    "memory_format_for",
    "memory_shortfall",
    "resolve_device",
    "resolve_precision",
]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> the first CUDA GPU if there is one, else the CPU; else torch's device name.

    Raises:
        ConfigError: the name is not a device, or names a CUDA device this machine does not have.
    """
    if isinstance(device, torch.device):
        resolved = device
    elif device == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    else:
        try:
            resolved = torch.device(device)
        except (RuntimeError, TypeError):
            raise ConfigError(f"device must be auto, cpu or cuda[:N], got {device!r}") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {str(device)!r} asked for, but no CUDA GPU is available")
        index = 0 if resolved.index is None else resolved.index
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {str(device)!r} does not exist ({torch.cuda.device_count()} GPUs)"
            )
        return torch.device("cuda", index)
    if resolved.type != "cpu":
        raise ConfigError(f"device must be auto, cpu or cuda[:N], got {str(device)!r}")
    return resolved


def device_name(device: torch.device) -> str:
    """The name results carry: ``"cpu"`` or ``"cuda:<GPU model>"`` (e.g. ``cuda:NVIDIA H200``)."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return device.type


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"auto"`` -> ``"bf16"`` on a CUDA GPU, ``"fp32"`` elsewhere.

    Raises:
        ConfigError: an unknown precision.
    """
    check_choice("precision", precision, PRECISIONS, ConfigError)
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def memory_format_for(device: torch.device) -> torch.memory_format:
    """channels_last on a CUDA GPU (tensor cores want NHWC), contiguous on a CPU."""
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """Mixed-precision context for the forward pass and loss: bf16 autocast or nothing.

    bf16 keeps fp32's exponent range, so unlike fp16 it needs no gradient scaler.
    """
    if precision == "bf16":
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            yield
    else:
        yield


def available_memory(device: torch.device) -> int | None:
    """Bytes free for a run on ``device``: the GPU's free memory, or the machine's available
    memory (``MemAvailable``) for the CPU; ``None`` where it cannot be read."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as file:
            for line in file:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def memory_shortfall(
    spec: Any, batch_size: int, image_size: int, device: torch.device, precision: str
) -> str | None:
    """Why one training step of ``spec`` cannot fit on ``device``, or ``None`` if it can.

    Checked before a net is built, from an estimate of its parameters, gradients, optimizer
    state and activations (:func:`searchspace.profile.estimate_training_memory`), so that an
    absurd candidate fails with a reason instead of taking the machine's memory.
    """
    from searchspace.profile import estimate_training_memory

    available = available_memory(device)
    if available is None:
        return None
    estimate = estimate_training_memory(
        spec, batch_size, image_size, activation_bytes=2 if precision == "bf16" else 4
    )
    if estimate.total <= available:
        return None
    return (
        f"needs about {estimate.total / 2**30:.1f} GiB for a training step at batch size "
        f"{batch_size} and {image_size} px ({estimate.activations / 2**30:.1f} GiB of it "
        f"activations), but {device_name(device)} has {available / 2**30:.1f} GiB free"
    )
