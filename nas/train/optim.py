"""The optimizer, the learning-rate schedule and the loss a :class:`~nas.train.recipe.Recipe`
names, built with torch's own classes (``torch.optim``, ``torch.optim.lr_scheduler``)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    ExponentialLR,
    LinearLR,
    LRScheduler,
    SequentialLR,
)

from nas.train.recipe import Recipe

__all__ = ["build_optimizer", "build_scheduler", "make_loss"]


def _parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    # No weight decay on BatchNorm scales/shifts or biases (all the 1-D parameters), as in the
    # paper's code: decaying them only fights the normalization.
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim <= 1 else decay).append(parameter)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, recipe: Recipe) -> Optimizer:
    """The optimizer ``recipe`` names at its peak learning rate, with weight decay on conv and
    linear weights only."""
    groups = _parameter_groups(model, recipe.weight_decay)
    lr = recipe.peak_lr
    if recipe.optimizer == "rmsprop":
        # The paper's RMSProp (decay 0.9, momentum 0.9, epsilon 1e-3) is TensorFlow's, whose
        # epsilon sits inside the square root: sqrt(v + 1e-3). torch adds it outside, sqrt(v) + eps,
        # so eps = sqrt(1e-3) gives the same floor on the denominator.
        return torch.optim.RMSprop(
            groups, lr=lr, alpha=0.9, momentum=recipe.momentum, eps=math.sqrt(1e-3)
        )
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=lr, momentum=recipe.momentum, nesterov=recipe.momentum > 0
        )
    return torch.optim.AdamW(groups, lr=lr)


def build_scheduler(optimizer: Optimizer, recipe: Recipe, steps_per_epoch: int) -> LRScheduler:
    """A per-step LR schedule over the whole run: linear warm-up, then cosine annealing or
    exponential decay. Call ``scheduler.step()`` after every optimizer step."""
    total_steps = max(1, recipe.epochs * steps_per_epoch)
    warmup_steps = min(total_steps - 1, round(recipe.warmup * steps_per_epoch))
    if recipe.lr_schedule == "cosine":
        main: LRScheduler = CosineAnnealingLR(optimizer, T_max=max(1, total_steps - warmup_steps))
    else:
        # The paper decays by 0.97 every 2.4 epochs; per step that is this factor.
        gamma = recipe.decay_rate ** (1.0 / (recipe.decay_epochs * steps_per_epoch))
        main = ExponentialLR(optimizer, gamma=gamma)
    if warmup_steps <= 0:
        return main
    warmup = LinearLR(optimizer, start_factor=1.0 / warmup_steps, total_iters=warmup_steps)
    return SequentialLR(optimizer, [warmup, main], milestones=[warmup_steps])


def make_loss(recipe: Recipe) -> nn.Module:
    """Cross-entropy with the recipe's label smoothing."""
    return nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
