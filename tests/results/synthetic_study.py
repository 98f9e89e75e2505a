"""Synthetic search studies for the ``results`` tests: Optuna studies filled the way ``nas search``
fills them (the team's result-record schema as trial user attributes, the quick search space's
choices as trial parameters, start and end times as two workers would run them), without training
anything. The metrics depend on a few known choices (:data:`DRIVERS`), for the importance tests.

Also a script: ``python tests/results/synthetic_study.py write-loop URL STUDY SECONDS`` adds
completed trials to a study in a loop, the way a running search writes, and exits 1 if a write
fails.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import optuna
import yaml

REFERENCE_STEP_TIME_MS = 40.0
REFERENCE_PARAMS = 5_000_000
# EfficientNetV2's reward exponents (A * S^w * P^v).
REWARD_W = -0.07
REWARD_V = -0.05
PARETO_OBJECTIVES = ["accuracy", "step_time_norm", "params"]


#: The search config whose space synthetic trials are drawn from: the quick search's, so that
#: the trials carry the parameters a real search records (``s1_block``, ``s1_repeats``,
#: ``s1_kernel``, ``s1_expand``, ``s1_mbconv_se`` only for MBConv stages, ...).
QUICK_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "quick.yaml"


@functools.cache
def _quick_space():
    # Imported here: the writer process reuses stored specs and need not load the space.
    from searchspace.space import SearchSpace

    return SearchSpace.from_dict(yaml.safe_load(QUICK_CONFIG.read_text())["space"])


class _RecordingTrial:
    """Draws uniformly, like Optuna's random sampler, and keeps the parameters and their
    distributions as Optuna would store them."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.params: dict = {}
        self.distributions: dict = {}

    def suggest_categorical(self, name: str, choices):
        value = choices[int(self.rng.integers(len(choices)))]
        self.params[name] = value
        self.distributions[name] = optuna.distributions.CategoricalDistribution(choices)
        return value

    def suggest_int(self, name: str, low: int, high: int) -> int:
        value = int(self.rng.integers(low, high + 1))
        self.params[name] = value
        self.distributions[name] = optuna.distributions.IntDistribution(low, high)
        return value


def draw_spec(rng: np.random.Generator) -> tuple[str, dict, dict]:
    """A spec from :data:`SPACE` drawn through its own ``suggest``: (spec string, trial params,
    their distributions)."""
    trial = _RecordingTrial(rng)
    spec = _quick_space().suggest(trial)
    return spec.to_string(), trial.params, trial.distributions


#: How the synthetic metrics depend on the choices (what the importance tests look for). The last
#: stage's expansion ratio and repeats set the parameters; the step time follows the parameters
#: and the first stage's block type (MBConv 2.5 times slower); the accuracy follows the
#: parameters and the second stage's kernel (5 better by 5 points). Every other choice is noise.
DRIVERS = {
    "params": ("s4_expand", "s4_repeats"),
    "step_time_norm": ("s1_block", "s4_expand", "s4_repeats"),
    "accuracy": ("s2_kernel", "s4_expand", "s4_repeats"),
}


def _metrics(spec: str, rng: np.random.Generator) -> tuple[int, float, float]:
    """Parameters, step time (ms) and accuracy of a spec string, as :data:`DRIVERS` says."""
    from searchspace.spec import ArchSpec

    stages = ArchSpec.from_string(spec).stages
    expand_level = {1.0: 0, 4.0: 1, 6.0: 2}[float(stages[3].expand_ratio)]
    log_params = math.log(2.5e5) + 1.5 * expand_level + 0.6 * (stages[3].repeats - 1)
    params = int(math.exp(log_params + rng.normal(0.0, 0.25)))
    block_cost = 2.5 if stages[0].block == "mbconv" else 1.0
    step_time_ms = (params / 1e5) ** 0.5 * block_cost * float(rng.lognormal(0.0, 0.1))
    kernel_gain = 0.05 if stages[1].kernel == 5 else 0.0
    accuracy = 0.94 - 0.2 * (2e5 / params) ** 0.3 + kernel_gain + rng.normal(0, 0.008)
    return params, step_time_ms, float(np.clip(accuracy, 0, 1))


def record(rng: np.random.Generator, spec: str | None = None) -> dict:
    """One evaluation result in the team's schema, with a plausible accuracy/cost trade-off.

    ``spec``: a canonical spec string to reuse; default a new random spec.
    """
    if spec is None:
        spec = draw_spec(rng)[0]
    return _result(spec, *_metrics(spec, rng))


def _result(spec: str, params: int, step_time_ms: float, accuracy: float) -> dict:
    """The whole record of a spec from its three measured figures."""
    spec_hash = hashlib.sha256(spec.encode()).hexdigest()[:12]  # ArchSpec.hash
    step_time_norm = step_time_ms / REFERENCE_STEP_TIME_MS
    params_norm = params / REFERENCE_PARAMS
    train_seconds = 20 * step_time_ms / 1000 * 50
    return {
        "spec": spec,
        "hash": spec_hash,
        "name": f"cand-{spec_hash[:6]}",
        "accuracy": accuracy,
        # The test split a little below the held-out one, by a spec-fixed amount (0.2-0.6 points).
        "test_accuracy": accuracy - 0.002 - 0.004 * int(spec_hash[:2], 16) / 255,
        "step_time_ms": step_time_ms,
        "step_time_spread_ms": 0.05 * step_time_ms,
        "reference_step_time_ms": REFERENCE_STEP_TIME_MS,
        "step_time_norm": step_time_norm,
        "images_per_second": 64 * 1000 / step_time_ms,
        "params": params,
        "params_norm": params_norm,
        "flops": params * 40,
        "peak_memory_mb": params * 16 / 2**20,
        "reward": accuracy * step_time_norm**REWARD_W * params_norm**REWARD_V,
        "device": "cpu",
        "epochs": 2,
        "image_size": 32,
        "batch_size": 64,
        "train_seconds": train_seconds,
        "duration_s": train_seconds + 3.0,
        "status": "ok",
        "failure": "",
    }


#: A narrow study's ranges: the ones where the report's tick labels once repeated (``98%``,
#: ``98%``) and turned to exponents (``4x10^1``).
NARROW_ACCURACY = (0.9790, 0.9815)
NARROW_STEP_TIME_MS = (30.0, 60.0)


def _narrowed(results: list[dict]) -> list[dict]:
    """The results with accuracies and step times squeezed into :data:`NARROW_ACCURACY` and
    :data:`NARROW_STEP_TIME_MS` (keeping their order; step times on a log scale)."""
    accuracy = np.array([result["accuracy"] for result in results])
    log_step = np.log([result["step_time_ms"] for result in results])

    def squeeze(values: np.ndarray, low: float, high: float) -> np.ndarray:
        span = np.ptp(values)
        return low + (high - low) * (values - values.min()) / (span if span > 0 else 1.0)

    accuracy = squeeze(accuracy, *NARROW_ACCURACY)
    step = np.exp(squeeze(log_step, *np.log(NARROW_STEP_TIME_MS)))
    return [
        _result(result["spec"], result["params"], float(step_ms), float(acc))
        for result, step_ms, acc in zip(results, step, accuracy, strict=True)
    ]


def create_study(storage: str | optuna.storages.BaseStorage, name: str, mode: str) -> optuna.Study:
    """An empty study set up as ``nas search`` sets one up for ``mode`` ("reward"/"pareto")."""
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if mode == "reward":
        study = optuna.create_study(storage=storage, study_name=name, direction="maximize")
        study.set_metric_names(["reward"])
    else:
        study = optuna.create_study(
            storage=storage, study_name=name, directions=["maximize", "minimize", "minimize"]
        )
        study.set_metric_names(PARETO_OBJECTIVES)
    study.set_user_attr("mode", mode)
    return study


def _values(study: optuna.Study, result: dict) -> float | list[float]:
    if study.user_attrs["mode"] == "reward":
        return result["reward"]
    return [result[name] for name in PARETO_OBJECTIVES]


def add_complete(study: optuna.Study, result: dict) -> optuna.trial.FrozenTrial:
    """Record one result the way a search does: ask, set each attribute, tell (many commits)."""
    trial = study.ask()
    for key, value in result.items():
        trial.set_user_attr(key, value)
    return study.tell(trial, _values(study, result))


#: When the synthetic searches start (a day ago, so that trials asked for now, the running ones,
#: start after every finished one) and how many trials they run at once.
START = dt.datetime.now() - dt.timedelta(days=1)
WORKERS = 2


def _schedule(trials: list[optuna.trial.FrozenTrial]) -> None:
    """Give finished trials start and end times as a search with :data:`WORKERS` workers would:
    each starts when a worker frees up and lasts its ``duration_s`` (2 s if it has none)."""
    free = [START] * WORKERS
    for trial in trials:
        worker = min(range(WORKERS), key=free.__getitem__)
        trial.datetime_start = free[worker]
        seconds = trial.user_attrs.get("duration_s", 2.0)
        trial.datetime_complete = free[worker] + dt.timedelta(seconds=seconds)
        free[worker] = trial.datetime_complete


def fill_study(
    storage: str | optuna.storages.BaseStorage,
    name: str,
    mode: str,
    *,
    n_complete: int = 40,
    n_failed: int = 3,
    n_running: int = 2,
    seed: int = 0,
    narrow: bool = False,
) -> optuna.Study:
    """A study with completed, failed, running (and, in reward mode, one pruned) trials.

    ``narrow``: accuracies and step times in narrow ranges (:func:`_narrowed`).

    Trials carry the search space's parameters (:func:`draw_spec`) and start and end times as
    two workers would run them. Two completed trials share identical metrics (a tie on the
    front), and failed trials carry ``status="failed"`` and a ``failure`` reason, as the schema
    says. Trials are added whole (``study.add_trials``, one transaction each) so that fixtures
    stay fast.
    """
    rng = np.random.default_rng(seed)
    study = create_study(storage, name, mode)
    drawn = [draw_spec(rng) for _ in range(n_complete)]
    results = [record(rng, spec) for spec, _, _ in drawn]
    if narrow and results:
        results = _narrowed(results)
    if n_complete >= 2:
        best = max(range(n_complete), key=lambda i: results[i]["accuracy"])
        results[-1], drawn[-1] = dict(results[best]), drawn[best]  # the same net twice
    trials = []
    for index, (result, (_, params, distributions)) in enumerate(zip(results, drawn, strict=True)):
        values = _values(study, result)
        trials.append(
            optuna.trial.create_trial(
                values=values if isinstance(values, list) else [values],
                params=params,
                distributions=distributions,
                user_attrs=result,
            )
        )
        if index < n_failed:
            spec, params, distributions = draw_spec(rng)
            failed = record(rng, spec)
            attrs = {key: failed[key] for key in ("spec", "hash", "name", "device")}
            attrs.update(status="failed", failure=f"CUDA out of memory (candidate {index})")
            trials.append(
                optuna.trial.create_trial(
                    state=optuna.trial.TrialState.FAIL,
                    params=params,
                    distributions=distributions,
                    user_attrs=attrs,
                )
            )
    if mode == "reward":
        partial = record(rng)
        attrs = {key: partial[key] for key in ("spec", "hash", "accuracy", "step_time_ms")}
        trials.append(
            optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED, user_attrs=attrs)
        )
    _schedule(trials)
    study.add_trials(trials)
    for _ in range(n_running):
        trial = study.ask()
        running = record(rng)
        trial.set_user_attr("spec", running["spec"])
        trial.set_user_attr("hash", running["hash"])
    return study


def write_loop(url: str, study_name: str, seconds: float) -> int:
    """Add completed trials to ``study_name`` for ``seconds``, like a search does; print the
    number written. Any exception (such as "database is locked") propagates: exit status 1."""
    storage = optuna.storages.RDBStorage(url)  # Optuna's defaults, as a search would use them
    study = optuna.load_study(study_name=study_name, storage=storage)
    specs = [trial.user_attrs["spec"] for trial in study.get_trials() if "spec" in trial.user_attrs]
    rng = np.random.default_rng(1234)
    deadline = time.monotonic() + seconds
    written = 0
    while time.monotonic() < deadline:
        add_complete(study, record(rng, specs[written % len(specs)]))
        written += 1
    print(f"wrote {written} trials", flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "write-loop":
        sys.exit(write_loop(sys.argv[2], sys.argv[3], float(sys.argv[4])))
    sys.exit(f"usage: {sys.argv[0]} write-loop URL STUDY SECONDS")


def make_run(root: Path, name: str, mode: str, **kwargs) -> Path:
    """``root/name/study.db`` holding study ``name`` in ``mode``, as ``nas search`` leaves it."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    fill_study(f"sqlite:///{run_dir / 'study.db'}", name, mode, **kwargs)
    return run_dir
