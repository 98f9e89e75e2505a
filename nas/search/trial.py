"""One trial, on a Ray worker: evaluate a candidate and report its record to Tune.

:func:`run_trial` is Tune's function trainable. It reports the record of
:func:`nas.evaluate.evaluate_candidate` (and every epoch's figures on the way, so Tune's
schedulers can stop weak candidates early). A candidate that fails in any way becomes a failed
record with its reason; it never takes the search down with it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from nas.errors import ConfigError
from nas.evaluate.config import EvalConfig
from searchspace.errors import EffnasError
from searchspace.spec import ArchSpec

__all__ = ["NUMBER", "Evaluate", "TrialSettings", "default_evaluate", "node_name", "run_trial"]

#: The trial config key that holds the study's trial number (Tune's own records show it too).
NUMBER = "number"

#: ``evaluate(spec, settings, report) -> record``: evaluates one candidate, calling
#: ``report(metrics)`` after each epoch. Tests pass their own to inject faults.
Evaluate = Callable[[ArchSpec, "TrialSettings", Callable[[Mapping[str, Any]], None]], dict]


@dataclass(frozen=True)
class TrialSettings:
    """What every trial of a search shares (sent to the workers once, with the trainable).

    Attributes:
        eval_config: the :class:`EvalConfig`, built and validated once on the driver.
        threads: torch threads per trial: the CPUs it asked Ray for.
        metric_names: the objectives Tune and the searcher watch (every report carries each, NaN
            until known); none outside a search.
        evaluate: an :data:`Evaluate`; None: :func:`default_evaluate`.
        data: the dataset the driver loaded, at the search's image size (Tune puts the settings
            into Ray's object store once, so workers fetch it instead of each loading it); None:
            each worker loads its own, once.
        per_epoch: report every epoch, measuring held-out accuracy after each: what an
            early-stopping scheduler needs. Without a scheduler only the end counts, and the
            held-out pass of every earlier epoch would be spent for nothing.
    """

    eval_config: EvalConfig
    threads: int
    metric_names: tuple[str, ...] = ()
    evaluate: Evaluate | None = None
    data: Any = None
    per_epoch: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1:
            raise ConfigError(f"threads must be a whole number of at least 1, got {self.threads!r}")
        object.__setattr__(self, "metric_names", tuple(self.metric_names))


def _failed_record(spec: ArchSpec, reason: str, started: float) -> dict[str, Any]:
    return {
        "spec": spec.to_string(),
        "hash": spec.hash,
        "status": "failed",
        "failure": " ".join(reason.split())[:500],
        "duration_s": time.monotonic() - started,
        "final": True,
    }


def node_name() -> str:
    """The Ray node this process runs on: ``<IP>/<first 8 hex digits of its node ID>``.

    The IP is what ``ray status`` and a cluster's machines go by; the node ID tells apart nodes
    that share an IP (several Ray nodes on one machine, or in one network namespace).
    """
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    return f"{ray.util.get_node_ip_address()}/{node_id[:8]}"


def run_trial(trial_config: dict[str, Any], settings: TrialSettings) -> None:
    """Tune's function trainable: evaluate one candidate and report its record.

    Every report says which Ray node the trial runs on (``node``); a reused result keeps the
    node that measured it.
    """
    from ray import tune

    started = time.monotonic()
    spec = ArchSpec.from_string(trial_config["spec"])
    metric_names = settings.metric_names
    node = node_name()

    def report(metrics: Mapping[str, Any]) -> None:
        # Every report carries every metric Tune and the searcher watch (NaN until known).
        payload = {name: math.nan for name in metric_names}
        payload.update(spec=spec.to_string(), hash=spec.hash, node=node)
        payload.update({k: v for k, v in metrics.items() if v is not None})
        tune.report(payload)

    cached = trial_config.get("cached")
    if cached:
        report({**cached, "final": True})
        return
    try:
        record = (settings.evaluate or default_evaluate)(spec, settings, report)
    except EffnasError as error:
        record = _failed_record(spec, str(error), started)
    except Exception as error:  # a candidate must never take the search down with it
        if "out of memory" in str(error).lower():
            reason = f"out of memory: {error}"
        else:
            reason = f"{type(error).__name__}: {error}"
        record = _failed_record(spec, reason, started)
    # The evaluation may name the host; the trial knows the Ray node it ran on.
    report({**record, "node": node, "final": True})


#: Datasets loaded by this worker process (when the settings bring none). Tune reuses a worker
#: for the next trial (``reuse_actors``), so each worker reads the dataset once, not once per
#: candidate.
_DATA_CACHE: dict[tuple, Any] = {}


def _load_data_once(config: EvalConfig, spec: ArchSpec, shared: Any = None) -> Any:
    """The dataset for ``spec``: ``shared`` (the driver's) when it is at the spec's image size,
    else loaded by this worker, once."""
    if shared is not None and shared.image_size == config.image_size_for(spec):
        return shared
    key = (
        config.dataset,
        config.image_size_for(spec),
        config.seed,
        config.heldout_fraction,
        config.test_fraction,
        config.max_train_images,
    )
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()  # one search, one dataset: keep memory flat
        _DATA_CACHE[key] = config.load_data(spec)
    return _DATA_CACHE[key]


def default_evaluate(
    spec: ArchSpec, settings: TrialSettings, report: Callable[[Mapping[str, Any]], None]
) -> dict[str, Any]:
    """Evaluate a candidate with :mod:`nas.evaluate`, reporting each epoch to Tune."""
    import torch

    from nas.evaluate.candidate import evaluate_candidate

    # Each trial owns the CPUs it asked Ray for; more threads would steal from the trial beside.
    torch.set_num_threads(settings.threads)
    config = settings.eval_config
    data = _load_data_once(config, spec, settings.data)
    if data.num_classes != spec.num_classes:
        # The study identifies candidates by spec; a head sized differently from the space's
        # would make every stored spec disagree with the net that was trained.
        raise ConfigError(
            f"space.num_classes is {spec.num_classes} but dataset {config.dataset!r} has "
            f"{data.num_classes} classes; set space.num_classes: {data.num_classes}"
        )
    on_epoch_end = (lambda epoch, metrics: report(metrics)) if settings.per_epoch else None
    return evaluate_candidate(spec, config, data=data, on_epoch_end=on_epoch_end).to_dict()
