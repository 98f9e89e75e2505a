"""Training: the recipe, the step loop, and full training with progressive learning.

- :mod:`nas.train.recipe`: :class:`Recipe` as data (torch-free), built by :mod:`nas.train.optim`;
  :mod:`nas.train.device`: device, precision and memory format, shared with step timing;
- :mod:`nas.train.loop`: one step, one epoch, top-1 evaluation and brief training (:func:`fit`),
  what every search candidate runs;
- :mod:`nas.train.schedule`, :mod:`nas.train.progressive` (with :mod:`nas.train.setup` and
  :mod:`nas.train.epoch`): ``nas train``; :mod:`nas.train.distributed`: the same on Ray Train;
  :mod:`nas.train.checkpoint`, :mod:`nas.train.metrics`, :mod:`nas.train.initial`: its files.

It trains given data; loading datasets by name is ``nas.data``'s, timing steps ``nas.evaluate``'s.
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
