"""Training-aware evaluation of one candidate: build, time the step, train briefly, score.

:func:`evaluate_candidate` is what every search trial and ``nas evaluate`` run: build the net
from its spec, count its parameters and FLOPs, time its training step and the reference net's
(:mod:`nas.evaluate.timing`, :mod:`nas.evaluate.reference`) at the timing image size, train it
briefly on the search split (:func:`nas.train.loop.fit`), measure held-out and, once, test
accuracy, and score it with the reward (:mod:`nas.evaluate.reward`). It returns one
:class:`~nas.evaluate.record.EvalResult`; a NaN loss or running out of GPU memory makes a
*failed* record, not an exception, and bad configuration or data raise
:class:`~searchspace.errors.EffnasError`. The steps in full: docs/evaluating.md.
"""

from __future__ import annotations

import socket
import time
from typing import Any

import torch

from nas.data.bundle import DataBundle
from nas.errors import ConfigError, NonFiniteLossError
from nas.evaluate.config import EvalConfig
from nas.evaluate.record import EvalResult
from nas.evaluate.reference import reference_flops, reference_timing
from nas.evaluate.reward import reward
from nas.evaluate.timing import StepSetup, time_train_step
from nas.train.device import device_name, memory_shortfall, resolve_device, resolve_precision
from nas.train.loop import EpochCallback, evaluate_accuracy, fit
from results.schema import RECORD_KEYS
from searchspace.builder import build_model
from searchspace.catalog import load_arch
from searchspace.profile import count_flops, count_parameters, spec_parameters
from searchspace.spec import ArchSpec

__all__ = ["evaluate_candidate"]


def evaluate_candidate(
    spec: ArchSpec | str,
    config: EvalConfig,
    *,
    data: DataBundle | None = None,
    on_epoch_end: EpochCallback | None = None,
) -> EvalResult:
    """Build, time, train briefly and score one candidate.

    Args:
        spec: the architecture (an :class:`ArchSpec`, or a catalog name, file or spec string).
            Its classifier is resized to the dataset's number of classes.
        config: the evaluation settings.
        data: the dataset already loaded (e.g. once per Ray worker with
            :meth:`EvalConfig.load_data`); it must have the config's image size. ``None`` loads
            ``config.dataset``.
        on_epoch_end: called after every training epoch with ``(epoch, metrics)``: the
            training metrics of :func:`nas.train.loop.fit` (held-out ``accuracy`` so far,
            ``train_loss``, ...) plus ``step_time_ms``, ``step_time_norm``, ``params``,
            ``params_norm``, ``peak_memory_mb`` (None on a CPU), the ``reward`` that accuracy
            would score, and the ``epochs`` and ``train_seconds`` spent so far (a stopped trial
            keeps them). It may raise to stop.

    Returns:
        The :class:`EvalResult`. A NaN/infinite loss or a GPU out-of-memory gives a failed
        result rather than an exception.

    Raises:
        EffnasError: a bad spec, config or dataset (e.g. an image size below the total stride).
    """
    started = time.perf_counter()
    spec = spec if isinstance(spec, ArchSpec) else load_arch(spec)
    config.check_spec(spec)
    image_size = config.image_size_for(spec)
    timing_size = config.timing_size_for(spec)
    if data is None:
        data = config.load_data(spec)
    elif data.image_size != image_size:
        raise ConfigError(
            f"image_size is {image_size} but the data given was loaded at {data.image_size} px"
        )
    device = resolve_device(config.device)
    # The loaders fail early on a batch larger than the split, before any timing is spent.
    train_loader, heldout_loader, test_loader = _loaders(data, config, device)
    spec = spec.replace(num_classes=data.num_classes)
    precision = resolve_precision(config.precision, device)
    sizes = (image_size, timing_size)
    shortfall = memory_shortfall(spec, config.batch_size, max(sizes), device, precision)
    if shortfall is not None:
        return _failed(spec, config, device, sizes, shortfall, started)
    torch.manual_seed(config.seed)
    model = build_model(spec)
    record = _first_figures(
        spec, count_parameters(model), count_flops(model, timing_size), config, device, sizes
    )
    record["flops_norm"] = record["flops"] / reference_flops(
        config.reference, data.num_classes, timing_size
    )
    try:
        record.update(_time_step(model, config, device, timing_size, data.num_classes))
        trained = fit(
            model,
            train_loader,
            heldout_loader,
            config.recipe(),
            device=device,
            on_epoch_end=_with_figures(on_epoch_end, record, config),
        )
        record.update(accuracy=trained.accuracy, train_seconds=trained.train_seconds)
        record["reward"] = _score(trained.accuracy, record, config)
        if test_loader is not None:
            record["test_accuracy"] = evaluate_accuracy(
                model, test_loader, device=device, precision=config.precision
            )
    except NonFiniteLossError as error:
        record.update(status="failed", failure=error.reason, train_seconds=error.seconds)
    except torch.OutOfMemoryError:
        record.update(
            status="failed",
            failure=f"out of memory on {device_name(device)} at batch size "
            f"{config.batch_size} and {image_size} px",
        )
    finally:
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    record["duration_s"] = time.perf_counter() - started
    return EvalResult(**record)


def _loaders(data: DataBundle, config: EvalConfig, device: torch.device) -> tuple[Any, Any, Any]:
    """The search split's, the held-out split's and the test split's loaders (``None`` when the
    data has no test split)."""
    pin = device.type == "cuda"
    train_loader = data.train_loader(
        config.batch_size, seed=config.seed, num_workers=config.num_workers, pin_memory=pin
    )
    batch = max(config.batch_size, 256)
    heldout_loader = data.heldout_loader(batch, num_workers=config.num_workers, pin_memory=pin)
    test_loader = (
        None
        if data.test is None
        else data.test_loader(batch, num_workers=config.num_workers, pin_memory=pin)
    )
    return train_loader, heldout_loader, test_loader


def _first_figures(
    spec: ArchSpec,
    params: int,
    flops: int | None,
    config: EvalConfig,
    device: torch.device,
    sizes: tuple[int, int],
) -> dict[str, Any]:
    """The record before timing and training: every key, the ones known from the net filled.
    ``sizes`` is ``(image_size, timing_image_size)``."""
    record: dict[str, Any] = dict.fromkeys(RECORD_KEYS)
    record.update(
        spec=spec.to_string(),
        hash=spec.hash,
        name=spec.label,
        device=device_name(device),
        node=socket.gethostname(),  # a search's trial replaces it with its Ray node
        params=params,
        flops=flops,
        epochs=config.epochs,
        image_size=sizes[0],
        timing_image_size=sizes[1],
        batch_size=config.batch_size,
        train_seconds=0.0,
        reward_cost=config.reward_cost,
        status="ok",
        failure="",
        violations="",  # a search judges its constraints on the driver
    )
    return record


def _failed(
    spec: ArchSpec,
    config: EvalConfig,
    device: torch.device,
    sizes: tuple[int, int],
    reason: str,
    started: float,
) -> EvalResult:
    """The record of a candidate refused before it was built (it would not fit in memory)."""
    record = _first_figures(spec, spec_parameters(spec), None, config, device, sizes)
    record.update(status="failed", failure=reason, duration_s=time.perf_counter() - started)
    return EvalResult(**record)


def _time_step(
    model: torch.nn.Module,
    config: EvalConfig,
    device: torch.device,
    image_size: int,
    num_classes: int,
) -> dict[str, Any]:
    """The candidate's and the reference's step times and the figures normalized by them."""
    setup = StepSetup.for_config(config, image_size, num_classes, device)
    reference = reference_timing(setup, reference=config.reference)
    timing = time_train_step(model, setup)
    return {
        "reference_step_time_ms": reference.timing.median_ms,
        "params_norm": count_parameters(model) / reference.params,
        "step_time_ms": timing.median_ms,
        "step_time_spread_ms": timing.spread_ms,
        "step_time_norm": timing.median_ms / reference.timing.median_ms,
        "images_per_second": timing.images_per_second,
        "peak_memory_mb": timing.peak_memory_mb,
    }


def _score(accuracy: float, record: dict[str, Any], config: EvalConfig) -> float:
    """The reward, with the step time or the FLOPs as its cost term (``config.reward_cost``)."""
    cost = record["flops_norm"] if config.reward_cost == "flops" else record["step_time_norm"]
    return reward(accuracy, cost, record["params_norm"], config.reward_w, config.reward_v)


def _with_figures(
    callback: EpochCallback | None, record: dict[str, Any], config: EvalConfig
) -> EpochCallback | None:
    """``callback`` given each epoch's metrics plus the step-time figures and the reward."""
    if callback is None:
        return None

    trained = {"seconds": 0.0}

    def report(epoch: int, metrics: dict[str, float]) -> None:
        # Every figure a search's measured constraints bound, so that a scheduler can judge
        # them at a rung (peak memory is None on a CPU: not measured).
        measured = ("step_time_ms", "step_time_norm", "params", "params_norm", "peak_memory_mb")
        figures = {k: record[k] for k in measured}
        # What the candidate has spent so far: a trial stopped here keeps these in its record.
        trained["seconds"] += metrics["epoch_seconds"]
        spent = {"epochs": epoch, "train_seconds": trained["seconds"]}
        score = _score(metrics["accuracy"], record, config)
        callback(epoch, {**metrics, **figures, **spent, "reward": score})

    return report
