"""Faults injected into data-parallel training at exact points, for tests.

``nas.train.distributed.train_distributed(..., on_epoch_start=hook)`` makes every Ray Train
worker call ``hook(rank, epoch)`` before each epoch. :class:`Faults` is such a hook; it is
picklable, and Ray's workers import this module by name (``tests`` must be on their
``PYTHONPATH``).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Fault:
    """Worker ``rank`` fails at the start of epoch ``epoch`` (0-based), once: ``exit`` (the
    process dies, ``os._exit(1)``: what a killed worker looks like) or ``raise`` (the train
    function raises ``RuntimeError``)."""

    rank: int
    epoch: int
    how: str = "exit"


def _epochs_in(run_dir: Path) -> int:
    """Epochs the run directory's metrics.json holds (0 before the first is copied there)."""
    try:
        return len(json.loads((run_dir / "metrics.json").read_text())["history"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


@dataclass(frozen=True)
class Faults:
    """The hook: logs every call to ``<marker_dir>/calls.jsonl`` (rank, epoch, pid) and makes
    each :class:`Fault` happen once (a marker file per fault survives the restarts).

    Before failing at epoch ``e`` it waits until the run directory holds ``e`` epochs: the
    driver's callback copies a checkpoint there only after Ray Train has registered it, so the
    failure comes when the run's latest checkpoint is exactly epoch ``e``'s, never while that
    checkpoint is still in flight (a barrier on the run's own state, not a sleep).
    """

    run_dir: str
    marker_dir: str
    faults: tuple[Fault, ...]

    def __call__(self, rank: int, epoch: int) -> None:
        markers = Path(self.marker_dir)
        with open(markers / "calls.jsonl", "a") as log:
            log.write(json.dumps({"rank": rank, "epoch": epoch, "pid": os.getpid()}) + "\n")
        for index, fault in enumerate(self.faults):
            marker = markers / f"fault-{index}"
            if (rank, epoch) != (fault.rank, fault.epoch) or marker.exists():
                continue
            deadline = time.monotonic() + 300
            while _epochs_in(Path(self.run_dir)) < epoch:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"epoch {epoch} never reached {self.run_dir}")
                time.sleep(0.05)
            marker.touch()
            if fault.how == "exit":
                os._exit(1)
            raise RuntimeError(f"injected failure on worker {rank} at epoch {epoch}")


def generations(marker_dir: Path) -> list[dict[int, list[int]]]:
    """The logged calls, per generation of worker processes (a restart starts new ones): for
    each, in order, rank -> the epochs its process started."""
    found: dict[int, tuple[int, int]] = {}  # pid -> (rank, generation)
    per_generation: list[dict[int, list[int]]] = []
    lines = (marker_dir / "calls.jsonl").read_text().splitlines()
    for entry in map(json.loads, lines):
        if entry["pid"] not in found:
            rank = entry["rank"]
            generation = sum(1 for r, _ in found.values() if r == rank)
            found[entry["pid"]] = (rank, generation)
            if generation == len(per_generation):
                per_generation.append({})
        rank, generation = found[entry["pid"]]
        per_generation[generation].setdefault(rank, []).append(entry["epoch"])
    return per_generation
