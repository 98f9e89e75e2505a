"""Training: the recipe, the step loop, and full training with progressive learning.

- :mod:`nas.train.recipe`: :class:`Recipe`, the optimizer, LR schedule, loss and precision as
  data (torch-free); :mod:`nas.train.optim` builds them with torch's classes;
- :mod:`nas.train.device`: device, precision and memory format, shared with step timing;
- :mod:`nas.train.loop`: one step, one epoch (MixUp, the step, the LR schedule and the weight
  EMA, in that order), top-1 evaluation and brief training (:func:`fit`), what every search
  candidate runs;
- :mod:`nas.train.schedule`: progressive-learning schedules (image size and regularization per
  stage); :mod:`nas.train.progressive`: ``nas train``'s trainer, whose loop reads top to bottom
  and runs in one process or in each data-parallel worker; :mod:`nas.train.setup` sets a run up
  and :mod:`nas.train.epoch` prepares and evaluates each epoch;
- :mod:`nas.train.distributed`: ``nas train --workers N``, that loop on Ray Train's workers
  (DDP), the only module here that runs Ray;
- :mod:`nas.train.checkpoint`, :mod:`nas.train.metrics`, :mod:`nas.train.initial`: the trainer's
  checkpoints, records (an epoch's metrics, the run's) and files, and fine-tuning weights.

This package trains given data; it must not load datasets by name (``nas.data`` does) or time
steps for the search (``nas.evaluate``).
"""

from __future__ import annotations

from nas.train.recipe import OPTIMIZERS, PRECISIONS, Recipe, scaled_lr
from searchspace.lazy import lazy_exports

__getattr__ = lazy_exports(
    __name__,
    {
        "FitResult": "nas.train.loop",
        "fit": "nas.train.loop",
        "train_step": "nas.train.loop",
        "train_one_epoch": "nas.train.loop",
        "evaluate_accuracy": "nas.train.loop",
        "ProgressiveConfig": "nas.train.config",
        "ProgressiveResult": "nas.train.progressive",
        "train_progressive": "nas.train.progressive",
        "train_distributed": "nas.train.distributed",
        "DistributedConfig": "nas.train.config",
        "ProgressiveSchedule": "nas.train.schedule",
        "schedule_for": "nas.train.schedule",
    },
)

__all__ = [
    "OPTIMIZERS",
    "PRECISIONS",
    "DistributedConfig",
    "FitResult",
    "ProgressiveConfig",
    "ProgressiveResult",
    "ProgressiveSchedule",
    "Recipe",
    "evaluate_accuracy",
    "fit",
    "scaled_lr",
    "schedule_for",
    "train_distributed",
    "train_one_epoch",
    "train_progressive",
    "train_step",
]
