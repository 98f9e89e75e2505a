"""Faults injected into data-parallel training at an exact point, for tests.

``nas.train.distributed.train_distributed(..., on_epoch_start=hook)`` makes every Ray Train
worker call ``hook(rank, epoch)`` before each epoch. The hooks here are picklable (Ray ships them
to the workers, which import this module by name: ``tests`` must be on their ``PYTHONPATH``).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path


def _epochs_mirrored(run_dir: Path) -> int:
    """Epochs the run directory's metrics.json holds (0 before the first is copied there)."""
    try:
        return len(json.loads((run_dir / "metrics.json").read_text())["history"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


@dataclass(frozen=True)
class FailOnce:
    """Worker ``rank`` fails once, at the start of epoch ``epoch`` (0-based).

    Before failing it waits until the run directory holds ``epoch`` epochs: the driver's
    callback copies a checkpoint there only after Ray Train registered it, so the failure comes
    when the run's latest checkpoint is exactly epoch ``epoch``'s, never while it is in flight.
    Every call is logged to ``<marker_dir>/calls.jsonl``; ``<marker_dir>/failed`` makes the
    failure happen once only.

    Attributes:
        rank, epoch: where to fail.
        run_dir: the run directory (``--out``).
        marker_dir: an existing directory for the log and the marker.
        how: ``exit`` (the process dies: ``os._exit(1)``, what a killed worker looks like) or
            ``raise`` (the train function raises ``RuntimeError``).
    """

    rank: int
    epoch: int
    run_dir: str
    marker_dir: str
    how: str = "exit"

    def __call__(self, rank: int, epoch: int) -> None:
        markers = Path(self.marker_dir)
        with open(markers / "calls.jsonl", "a") as log:
            log.write(json.dumps({"rank": rank, "epoch": epoch, "pid": os.getpid()}) + "\n")
        if (rank, epoch) != (self.rank, self.epoch) or (markers / "failed").exists():
            return
        deadline = time.monotonic() + 300
        while _epochs_mirrored(Path(self.run_dir)) < epoch:  # a barrier on the run's own state
            if time.monotonic() > deadline:
                raise TimeoutError(f"epoch {epoch} never reached {self.run_dir}")
            time.sleep(0.05)
        (markers / "failed").touch()
        if self.how == "exit":
            os._exit(1)
        raise RuntimeError(f"injected failure on worker {rank} at epoch {epoch}")


def calls(marker_dir: Path) -> list[tuple[int, int]]:
    """The ``(rank, epoch)`` calls a :class:`FailOnce` logged, in order."""
    lines = (marker_dir / "calls.jsonl").read_text().splitlines()
    return [(entry["rank"], entry["epoch"]) for entry in map(json.loads, lines)]
