"""A training run's metrics files: ``metrics.json`` (the whole record) and ``metrics.csv`` (one
row per epoch), rewritten atomically after every epoch so they can be read while a run goes on."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from searchspace.files import atomic_write

__all__ = ["METRICS_CSV", "METRICS_JSON", "TIMING_METRICS", "write_metrics"]

METRICS_JSON = "metrics.json"
METRICS_CSV = "metrics.csv"
#: Per-epoch metrics that measure time, not learning: a resumed run cannot reproduce them.
TIMING_METRICS = (
    "epoch_seconds",
    "epoch_cpu_seconds",
    "epoch_data_cpu_seconds",
    "eval_seconds",
    "train_seconds",
    "train_cpu_seconds",
    "images_per_second",
)


def write_metrics(out_dir: Path, record: dict[str, Any]) -> None:
    """Write ``record`` (its ``history`` holds one dict per epoch) as JSON and CSV."""
    atomic_write(out_dir / METRICS_JSON, json.dumps(record, indent=2))
    history = record["history"]
    buffer = io.StringIO()
    if history:
        # Every column any row has, in first-seen order: a run resumed from a checkpoint written
        # before a column existed has rows with and without it (those get an empty cell).
        columns = list(dict.fromkeys(key for row in history for key in row))
        writer = csv.DictWriter(buffer, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(history)
    atomic_write(out_dir / METRICS_CSV, buffer.getvalue())
