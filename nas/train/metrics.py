"""A training run's records: what one epoch records (:class:`EpochMetrics`), what the run ends
with (:class:`FinalMetrics`), the whole record (:func:`run_record`), and its files,
``metrics.json`` (the record) and ``metrics.csv`` (one row per epoch), rewritten atomically after
every epoch so they can be read while a run goes on."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from searchspace.files import atomic_write

if TYPE_CHECKING:
    from nas.train.config import ProgressiveConfig
    from searchspace.spec import ArchSpec

__all__ = [
    "METRICS_CSV",
    "METRICS_JSON",
    "TIMING_METRICS",
    "EpochMetrics",
    "FinalMetrics",
    "run_record",
    "write_metrics",
]

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


@dataclass(frozen=True)
class EpochMetrics:
    """One epoch of a run: a row of ``metrics.csv`` and of ``metrics.json``'s ``history``, in
    this order.

    ``accuracy`` and ``train_seconds`` mean what the result record's fields of those names mean
    (:data:`results.schema.RECORD`), after this epoch; the record's ``image_size`` and
    ``images_per_second`` are the brief training's and the timed step's, so here they are the
    stage's and the epoch's own, as below.

    Attributes:
        epoch: epochs done, from 1.
        stage: the schedule's stage, from 1.
        image_size: the stage's training image size.
        randaug_magnitude: the RandAugment bin used (0: off).
        mixup_alpha: MixUp's alpha (0: off).
        dropout: the classifier's dropout rate.
        train_loss: the mean loss over the epoch's (global) batches.
        accuracy: held-out top-1 (0..1) of the evaluated weights (the EMA's, if on) at the
            spec's eval size.
        accuracy_raw: the same for the raw weights.
        accuracy_at_train_size: the evaluated weights' held-out top-1 at the stage's size.
        lr: the learning rate after the epoch.
        epoch_seconds: the epoch's training wall time, without evaluation.
        epoch_cpu_seconds: this process's CPU time in it.
        epoch_data_cpu_seconds: the part of it spent reading and augmenting the batches (when
            the loader works in this process).
        eval_seconds: the evaluation's wall time.
        train_seconds: training wall time so far, all sessions.
        train_cpu_seconds: training CPU time so far (rank 0's), all sessions.
        images_per_second: the epoch's training images (all workers') per second.
    """

    epoch: int
    stage: int
    image_size: int
    randaug_magnitude: int
    mixup_alpha: float
    dropout: float
    train_loss: float
    accuracy: float
    accuracy_raw: float
    accuracy_at_train_size: float
    lr: float
    epoch_seconds: float
    epoch_cpu_seconds: float
    epoch_data_cpu_seconds: float
    eval_seconds: float
    train_seconds: float
    train_cpu_seconds: float
    images_per_second: float

    def to_dict(self) -> dict[str, Any]:
        """The row as the files hold it, the fields in order."""
        return asdict(self)


@dataclass(frozen=True)
class FinalMetrics:
    """``metrics.json``'s ``final``: the run's outcome, after its last epoch.

    Attributes:
        accuracy, accuracy_raw, accuracy_at_train_size: the last epoch's (:class:`EpochMetrics`;
            ``accuracy_at_train_size`` is None after a resume from a checkpoint older than it).
        test_accuracy: the evaluated weights' top-1 on the test split (None: no test split).
        train_seconds, train_cpu_seconds: the last epoch's (the whole training's).
        epochs: the run's epochs.
        eval_image_size: the spec's eval size.
        train_image_size: the last stage's training size.
    """

    accuracy: float
    accuracy_raw: float
    accuracy_at_train_size: float | None
    test_accuracy: float | None
    train_seconds: float
    train_cpu_seconds: float
    epochs: int
    eval_image_size: int
    train_image_size: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_record(
    spec: ArchSpec,
    config: ProgressiveConfig,
    device: str,
    workers: int,
    history: list[dict[str, Any]],
    model: str | None = None,
) -> dict[str, Any]:
    """The record ``metrics.json`` holds, as written: the run's spec, dataset, device (its
    name), workers, config, recipe and stages, ``history`` (the run's own list, which the
    epochs append to) and ``final`` (None until the run ends; :class:`FinalMetrics`'s dict).
    ``model``: the class of a net other than the spec's, recorded last."""
    record = {
        "spec": spec.to_string(),
        "name": spec.label,
        "hash": spec.hash,
        "dataset": config.dataset,
        "device": device,
        "workers": workers,
        "config": config.to_dict(),
        "recipe": asdict(config.recipe()),
        "stages": [
            {**asdict(config.schedule.at(i)), "epochs": [epochs.start + 1, epochs.stop]}
            for i, epochs in enumerate(config.stage_epochs())
        ],
        "history": history,
        "final": None,
    }
    if model is not None:
        record["model"] = model
    return record


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
