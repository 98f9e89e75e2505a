"""Training checkpoints: written atomically after every epoch, read back exactly on ``--resume``.

A checkpoint is a ``torch.save``'d dict of plain data and tensors (read back with
``weights_only=True``): the spec, the whole training config, the epoch, the model, EMA,
optimizer and LR-scheduler states, the RNG states and the metrics history. With them a resumed
run on a CPU ends with the same weights and metrics as one never interrupted. A checkpoint that
cannot be read, or that was written for another spec or config, is refused with
:class:`~nas.errors.CheckpointError` naming what differs: a run is never silently restarted.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from nas.errors import CheckpointError
from searchspace.errors import SpecError
from searchspace.files import atomic_write
from searchspace.spec import ArchSpec
from searchspace.weights import read_torch_file

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_NAME",
    "RESUMABLE_CHANGES",
    "check_checkpoint",
    "epoch_seed",
    "read_checkpoint",
    "restore_checkpoint",
    "write_checkpoint",
]

CHECKPOINT_FORMAT = "effnas-train-checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"
#: Settings that may differ between a run and its resume without changing what is computed.
RESUMABLE_CHANGES = ("device", "num_workers")
#: Settings added to the training config after checkpoints were first written, with the value
#: every checkpoint written before them trained with (so that such a run still resumes).
ADDED_SETTINGS = {"train_crop": "none"}
_ENTRIES = ("spec", "config", "epoch", "model", "optimizer", "scheduler", "rng", "history")


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch: its shuffle order, and (through ``nas.data.shard_seed``, per
    data-parallel worker) every random draw of the epoch. Fixed by the run's seed, so a resumed
    run draws its remaining epochs as the uninterrupted one would, whichever checkpoint (and
    whichever process's random state) it resumes from."""
    return (seed * 1_000_003 + epoch) % (1 << 63)


def _rng_states(device: torch.device) -> dict[str, Any]:
    # Everything random in a step draws from these: dropout, stochastic depth, RandAugment (read
    # in this process for in-memory data), MixUp's lambda. The trainer reseeds them from
    # epoch_seed at the start of every epoch (each data-parallel worker its own), so a resume
    # does not depend on them; they stay in the checkpoint as a record of the state it was in.
    return {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else [],
    }


#: What a run checkpoints by name: anything with ``state_dict``/``load_state_dict`` (the model,
#: its EMA or None, the optimizer, the LR scheduler).
Modules = Mapping[str, Any]


def write_checkpoint(
    path: Path,
    *,
    spec: ArchSpec,
    config: Mapping[str, Any],
    epoch: int,
    modules: Modules,
    history: list[dict[str, float]],
    device: torch.device,
) -> None:
    """Write the state after ``epoch`` epochs to ``path`` (atomically)."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "spec": spec.to_dict(),
        "config": dict(config),
        "epoch": epoch,
        **{name: None if m is None else m.state_dict() for name, m in modules.items()},
        "rng": _rng_states(device),
        "history": history,
    }
    atomic_write(path, lambda file: torch.save(payload, file))


def read_checkpoint(path: Path, data: bytes | None = None) -> dict[str, Any]:
    """The checkpoint at ``path``, checked to be an intact effnas checkpoint of this version.

    ``data``, if given, is the file's content, read elsewhere (a data-parallel worker gets the
    driver's checkpoint through Ray's object store); ``path`` then only names it in messages.

    Raises:
        CheckpointError: unreadable, not an effnas checkpoint, another version, or incomplete.
    """
    shown = repr(str(path))
    try:
        loaded = read_torch_file(path, "checkpoint", CheckpointError, data=data)
    except CheckpointError as error:
        raise CheckpointError(
            f"{error}: it cannot be read, it is corrupt or not an effnas checkpoint; delete it "
            "to start over, or use another --out"
        ) from None
    if not isinstance(loaded, dict) or loaded.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {shown} is not an effnas training checkpoint")
    if loaded.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"checkpoint {shown} has version {loaded.get('version')!r}; this effnas reads "
            f"version {CHECKPOINT_VERSION}"
        )
    missing = [key for key in _ENTRIES if key not in loaded]
    if missing:
        raise CheckpointError(f"checkpoint {shown} lacks its {missing[0]} entry")
    return loaded


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return flat


def check_checkpoint(
    checkpoint: Mapping[str, Any], spec: ArchSpec, config: Mapping[str, Any], path: Path
) -> None:
    """Refuse a checkpoint of another architecture or another training config.

    Only :data:`RESUMABLE_CHANGES` may differ between ``config`` and the checkpoint's; a setting
    of :data:`ADDED_SETTINGS` that an older checkpoint lacks counts as the value it trained with.

    Raises:
        CheckpointError: naming the first setting that differs.
    """
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
    ours = _flatten({k: v for k, v in config.items() if k not in RESUMABLE_CHANGES})
    theirs_config = ADDED_SETTINGS | dict(checkpoint["config"])
    stored = _flatten({k: v for k, v in theirs_config.items() if k not in RESUMABLE_CHANGES})
    for key in sorted(set(ours) | set(stored)):
        if ours.get(key) != stored.get(key):
            raise CheckpointError(
                f"checkpoint {shown} was written with another training config: {key} "
                f"{stored.get(key)!r} there, {ours.get(key)!r} here; resume with the same "
                "settings, or use another --out"
            )


def restore_checkpoint(
    checkpoint: Mapping[str, Any], modules: Modules, device: torch.device
) -> tuple[list[dict[str, float]], int]:
    """Load a checked checkpoint into the run's objects and RNGs; ``(history, epochs done)``."""
    for name, module in modules.items():
        if module is not None:
            module.load_state_dict(checkpoint[name])
    states = checkpoint["rng"]
    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    if device.type == "cuda" and states["cuda"]:
        torch.cuda.set_rng_state_all(states["cuda"])
    return list(checkpoint["history"]), int(checkpoint["epoch"])
