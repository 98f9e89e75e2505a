"""Ray Train (V2, Ray 2.60's default) with a tiny torch model: DDP on CPU (gloo), checkpoints,
resume after a worker dies, and the one-process training it must agree with.

The pieces ``nas train --workers N`` needs, shown on a model small enough for CI:

* :func:`train_loop_per_worker` is the function ``TorchTrainer`` runs on every worker: it builds
  the model, resumes from ``ray.train.get_checkpoint()`` if there is one, wraps the model with
  ``prepare_model`` (DistributedDataParallel; gloo on CPU) and the loader with
  ``prepare_data_loader`` (keeps the ``DistributedSampler`` given here), reports per-epoch
  metrics on every rank and a checkpoint from rank 0 (``ray.train.report``), and, when asked,
  makes one worker process die once (``os._exit``) at the start of an epoch.
* :func:`train_distributed` runs it with ``ScalingConfig(num_workers=N, use_gpu=False)`` and
  ``RunConfig(storage_path=..., failure_config=FailureConfig(max_failures=...))``.
* :func:`train_one_process` is the reference: the same data order, the same global batch, one
  process. With ``micro_batches=N`` it computes each global batch's gradient as the mean of
  ``N`` per-worker slices (each sample goes to the slice it goes to under DDP), which is what
  DDP computes when the model has BatchNorm (statistics per worker; ``SyncBatchNorm`` would
  make them global but refuses CPU tensors).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

__all__ = [
    "DEFAULTS",
    "load_state",
    "make_dataset",
    "make_model",
    "train_distributed",
    "train_loop_per_worker",
    "train_one_process",
]

DEFAULTS: dict[str, Any] = {
    "samples": 96,
    "features": 6,
    "classes": 3,
    "global_batch": 16,
    "epochs": 3,
    "lr": 0.1,
    "momentum": 0.9,
    "seed": 0,
    "batchnorm": False,
    "fail_at_epoch": None,  # a worker dies once at the start of this epoch (needs marker_dir)
    "fail_rank": 1,
    "marker_dir": None,  # where workers leave a line per start (and the once-only fail marker)
}


def make_dataset(config: dict) -> TensorDataset:
    """A fixed random classification problem (the same on every worker: seeded)."""
    generator = torch.Generator().manual_seed(1234)
    x = torch.randn(config["samples"], config["features"], generator=generator)
    w = torch.randn(config["features"], config["classes"], generator=generator)
    y = (x @ w).argmax(dim=1)
    return TensorDataset(x, y)


def make_model(config: dict) -> nn.Module:
    """A two-layer MLP, optionally with BatchNorm; seeded, so every worker starts the same."""
    torch.manual_seed(config["seed"])
    hidden = 16
    layers: list[nn.Module] = [nn.Linear(config["features"], hidden)]
    if config["batchnorm"]:
        layers.append(nn.BatchNorm1d(hidden))
    layers += [nn.ReLU(), nn.Linear(hidden, config["classes"])]
    return nn.Sequential(*layers)


def _optimizer(model: nn.Module, config: dict) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=config["momentum"])


def load_state(directory: str | Path) -> dict:
    """The ``state.pt`` a checkpoint directory holds (model, optimizer, epoch)."""
    return torch.load(Path(directory) / "state.pt", weights_only=True)


# ---------------------------------------------------------------------------------------------
# Ray Train


def _resume(model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Load the last reported checkpoint, if any; the epoch to start at."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 0
    with checkpoint.as_directory() as directory:
        state = load_state(directory)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return state["epoch"] + 1


def _note_start(config: dict, rank: int, start_epoch: int) -> None:
    if config["marker_dir"] is None:
        return
    with open(Path(config["marker_dir"]) / "starts.jsonl", "a") as log:
        log.write(json.dumps({"rank": rank, "start_epoch": start_epoch, "pid": os.getpid()}) + "\n")


def _maybe_die(config: dict, rank: int, epoch: int) -> None:
    """Kill this worker process once (a marker file makes the retry survive)."""
    if config["fail_at_epoch"] != epoch or rank != config["fail_rank"]:
        return
    marker = Path(config["marker_dir"]) / "failed-once"
    try:
        marker.touch(exist_ok=False)
    except FileExistsError:
        return
    os._exit(1)  # what a crashed or killed worker looks like to Ray: no exception, no cleanup


def train_loop_per_worker(config: dict) -> None:
    """Ray Train's per-worker function (see the module docstring)."""
    import ray.train
    import ray.train.torch

    torch.set_num_threads(1)  # N workers share the machine's cores
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    model = make_model(config)
    optimizer = _optimizer(model, config)
    start_epoch = _resume(model, optimizer)
    _note_start(config, rank, start_epoch)

    model = ray.train.torch.prepare_model(model)  # DDP (gloo) when world > 1
    dataset = make_dataset(config)
    sampler = DistributedSampler(
        dataset, num_replicas=world, rank=rank, shuffle=True, seed=config["seed"]
    )
    loader = DataLoader(dataset, batch_size=config["global_batch"] // world, sampler=sampler)
    loader = ray.train.torch.prepare_data_loader(loader)  # keeps our sampler
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(start_epoch, config["epochs"]):
        _maybe_die(config, rank, epoch)
        sampler.set_epoch(epoch)  # a new permutation per epoch, the same on every rank
        model.train()
        total, count = 0.0, 0
        for x, y in loader:
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()  # DDP all-reduces (averages) the gradients here
            optimizer.step()
            total, count = total + loss.item() * len(y), count + len(y)
        metrics = {"epoch": epoch, "loss": total / count, "rank": rank}
        with tempfile.TemporaryDirectory() as directory:
            checkpoint = None
            if rank == 0:
                unwrapped = model.module if hasattr(model, "module") else model
                state = {
                    "model": unwrapped.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "epoch": epoch,
                }
                torch.save(state, Path(directory) / "state.pt")
                checkpoint = ray.train.Checkpoint.from_directory(directory)
            ray.train.report(metrics, checkpoint=checkpoint)


def train_distributed(
    config: dict, storage_path: str | Path, num_workers: int = 2, max_failures: int = 0
):
    """Run :func:`train_loop_per_worker` with ``TorchTrainer`` on the Ray this process uses.

    Returns:
        ``(result, seconds)``: Ray Train's ``Result`` and the wall time of ``fit()``.
    """
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={**DEFAULTS, **config},
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=False),
        run_config=RunConfig(
            name="probe",
            storage_path=str(storage_path),
            failure_config=FailureConfig(max_failures=max_failures),
        ),
    )
    started = time.monotonic()
    result = trainer.fit()
    return result, time.monotonic() - started


# ---------------------------------------------------------------------------------------------
# The one-process reference


def train_one_process(config: dict, micro_batches: int = 1) -> dict:
    """Train in this process on the same global batches; the final ``state_dict``.

    Args:
        config: as for :func:`train_distributed` (no failure injection here).
        micro_batches: 1: one forward/backward per global batch. N: the global batch is split
            into the N slices that N DDP workers would see (DistributedSampler hands sample
            ``i`` of the epoch's permutation to rank ``i % N``) and the gradient is the mean of
            the slices' gradients, each slice through the model on its own (BatchNorm).
    """
    config = {**DEFAULTS, **config}
    torch.set_num_threads(1)
    model = make_model(config)
    optimizer = _optimizer(model, config)
    dataset = make_dataset(config)
    # One replica: the same permutation (seed + epoch) that the N-replica samplers split.
    sampler = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=config["seed"])
    loader = DataLoader(dataset, batch_size=config["global_batch"], sampler=sampler)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(config["epochs"]):
        sampler.set_epoch(epoch)
        model.train()
        for x, y in loader:
            optimizer.zero_grad()
            for part in range(micro_batches):
                loss = loss_fn(model(x[part::micro_batches]), y[part::micro_batches])
                (loss / micro_batches).backward()
            optimizer.step()
    return model.state_dict()
