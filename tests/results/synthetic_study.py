"""Synthetic search studies for the ``results`` tests: Optuna studies filled the way ``nas search``
fills them (the team's result-record schema as trial user attributes), without training anything.

Also a script: ``python tests/results/synthetic_study.py write-loop URL STUDY SECONDS`` adds
completed trials to a study in a loop, the way a running search writes, and exits 1 if a write
fails.
"""

from __future__ import annotations

import hashlib
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import optuna

REFERENCE_STEP_TIME_MS = 40.0
REFERENCE_PARAMS = 5_000_000
# EfficientNetV2's reward exponents (A * S^w * P^v).
REWARD_W = -0.07
REWARD_V = -0.05
PARETO_OBJECTIVES = ["accuracy", "step_time_norm", "params"]


def _spec(rng: np.random.Generator):
    # Imported here: the writer process reuses stored specs and need not load torch.
    from searchspace.spec import ArchSpec, StageSpec

    stages = []
    channels = int(rng.choice([16, 24, 32]))
    for index in range(3):
        channels = int(channels * rng.choice([1.5, 2.0]))
        stages.append(
            StageSpec(
                "fused" if index < 2 and rng.random() < 0.7 else "mbconv",
                repeats=int(rng.integers(1, 5)),
                kernel=int(rng.choice([3, 5])),
                stride=2,
                expand_ratio=float(rng.choice([1, 4, 6])),
                out_channels=channels,
                se_ratio=0.25 if rng.random() < 0.5 else 0.0,
            )
        )
    return ArchSpec(
        stages=tuple(stages),
        stem_channels=int(rng.choice([16, 24])),
        head_channels=int(rng.choice([640, 1280])),
        num_classes=10,
        train_resolution=32,
        eval_resolution=32,
    )


def record(rng: np.random.Generator, spec: str | None = None) -> dict:
    """One evaluation result in the team's schema, with a plausible accuracy/cost trade-off.

    ``spec``: a canonical spec string to reuse; default a new random spec.
    """
    if spec is None:
        spec = _spec(rng).to_string()
    spec_hash = hashlib.sha256(spec.encode()).hexdigest()[:12]  # ArchSpec.hash
    params = int(math.exp(rng.uniform(math.log(2e5), math.log(3e7))))
    step_time_ms = 0.8 * (params / 1e5) ** 0.8 * float(rng.lognormal(0.0, 0.3))
    accuracy = float(np.clip(0.99 - 0.5 * (2e5 / params) ** 0.4 + rng.normal(0, 0.02), 0, 1))
    step_time_norm = step_time_ms / REFERENCE_STEP_TIME_MS
    params_norm = params / REFERENCE_PARAMS
    train_seconds = 20 * step_time_ms / 1000 * 50
    return {
        "spec": spec,
        "hash": spec_hash,
        "name": f"cand-{spec_hash[:6]}",
        "accuracy": accuracy,
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


#: Two of the choices a search records as trial parameters (the real space has more).
DISTRIBUTIONS = {
    "stem_channels": optuna.distributions.CategoricalDistribution([16, 24]),
    "head_channels": optuna.distributions.CategoricalDistribution([640, 1280]),
}


def _params(spec: str) -> dict:
    """The stem and head widths of a canonical spec string, as trial parameters."""
    fields = spec.split(",")
    head = next(field for field in fields if field.startswith("head"))
    return {"stem_channels": int(fields[0][len("stem") :]), "head_channels": int(head[4:])}


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


def fill_study(
    storage: str | optuna.storages.BaseStorage,
    name: str,
    mode: str,
    *,
    n_complete: int = 40,
    n_failed: int = 3,
    n_running: int = 2,
    seed: int = 0,
) -> optuna.Study:
    """A study with completed, failed, running (and, in reward mode, one pruned) trials.

    Two completed trials share identical metrics (a tie on the front), and failed trials carry
    ``status="failed"`` and a ``failure`` reason, as the schema says. Trials are added whole
    (``study.add_trials``, one transaction each) so that fixtures stay fast.
    """
    rng = np.random.default_rng(seed)
    study = create_study(storage, name, mode)
    results = [record(rng) for _ in range(n_complete)]
    if n_complete >= 2:
        best = max(results, key=lambda r: r["accuracy"])
        results[-1] = dict(best)  # the same net evaluated twice: identical values
    trials = []
    for index, result in enumerate(results):
        values = _values(study, result)
        trials.append(
            optuna.trial.create_trial(
                values=values if isinstance(values, list) else [values],
                params=_params(result["spec"]),
                distributions=DISTRIBUTIONS,
                user_attrs=result,
            )
        )
        if index < n_failed:
            failed = record(rng)
            attrs = {key: failed[key] for key in ("spec", "hash", "name", "device")}
            attrs.update(status="failed", failure=f"CUDA out of memory (candidate {index})")
            trials.append(
                optuna.trial.create_trial(
                    state=optuna.trial.TrialState.FAIL,
                    params=_params(failed["spec"]),
                    distributions=DISTRIBUTIONS,
                    user_attrs=attrs,
                )
            )
    if mode == "reward":
        partial = record(rng)
        attrs = {key: partial[key] for key in ("spec", "hash", "accuracy", "step_time_ms")}
        trials.append(
            optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED, user_attrs=attrs)
        )
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
