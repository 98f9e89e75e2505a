"""The training-aware search: Ray Tune runs the trials, Optuna chooses and stores them.

Shape (shared/DESIGN.md): the Tune driver holds an :class:`StudySearch` (Ray's ``OptunaSearch``
with the search space's define-by-run ``suggest``) on an Optuna RDB storage, so every trial, with
its spec and all its figures as user attributes, lands in a real database that
``optuna-dashboard`` and ``results`` read. Each trial runs :func:`_run_trial` on a Ray worker with
the resources the config asks, which builds the candidate, times its training step, trains it
briefly and reports every figure.

Nothing is lost: a candidate that fails is recorded as a failed trial with its reason and the
search goes on; a killed driver resumes from Tune's experiment directory (``Tuner.restore``) and
the same study, and a trial Optuna already finished is never told twice.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nas.config import ConfigError, SearchConfig
from searchspace.errors import EffnasError
from searchspace.space import SearchSpace
from searchspace.spec import ArchSpec

__all__ = ["SearchOutcome", "open_storage", "run_search"]

#: Objectives per mode: (name, direction) in Optuna's order.
OBJECTIVES = {
    "reward": (("reward", "maximize"),),
    "pareto": (("accuracy", "maximize"), ("step_time_norm", "minimize"), ("params", "minimize")),
}
TUNE_DIR = "tune"
CONFIG_FILE = "config.yaml"


@dataclass(frozen=True)
class SearchOutcome:
    """What a finished search left behind."""

    run_dir: Path
    storage_url: str
    study_name: str
    finished: int
    failed: int
    best_spec: ArchSpec | None
    best_path: Path | None


# ---------------------------------------------------------------------------------------------
# Storage


def open_storage(url: str):
    """An Optuna RDB storage on ``url``; a malformed or unreachable URL is a one-line ConfigError.

    SQLite gets a generous busy timeout so that a dashboard or ``nas report`` reading the same
    file never makes the search fail with "database is locked".
    """
    import optuna
    import sqlalchemy.exc

    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:"):
        engine_kwargs["connect_args"] = {"timeout": 60}
        path = url.removeprefix("sqlite:///")
        if path and path != url:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as error:
        reason = " ".join(str(error).split())[:200]
        raise ConfigError(f"storage {url!r} cannot be opened: {reason}") from None


def _study_exists(storage, name: str) -> bool:
    import optuna

    try:
        storage.get_study_id_from_name(name)
    except KeyError:
        return False
    except optuna.exceptions.StorageInternalError as error:
        raise ConfigError(f"storage cannot be read: {error}") from None
    return True


def _check_existing_study(storage, config: SearchConfig, resume: bool) -> None:
    """Refuse, before writing anything, to mix a search into a study it does not belong to."""
    import optuna

    if not _study_exists(storage, config.study):
        if resume:
            raise ConfigError(
                f"--resume: study {config.study!r} does not exist in {config.storage_url}; "
                f"start it without --resume"
            )
        return
    study = optuna.load_study(study_name=config.study, storage=storage)
    attrs = study.user_attrs
    if attrs.get("space_hash") != config.space.hash:
        raise ConfigError(
            f"study {config.study!r} exists with a different search space "
            f"(space hash {attrs.get('space_hash')!r}, this config {config.space.hash!r}); "
            f"use another --study"
        )
    if attrs.get("mode") != config.objective:
        raise ConfigError(
            f"study {config.study!r} exists with objective {attrs.get('mode')!r}, "
            f"this config asks {config.objective!r}; use another --study"
        )
    requested = attrs.get("trials_requested")
    if resume and requested is not None and requested != config.trials:
        raise ConfigError(
            f"--resume: study {config.study!r} was started for {requested} trials, "
            f"not {config.trials}; resume with the same trials"
        )
    if not resume:
        raise ConfigError(
            f"study {config.study!r} already exists in {config.storage_url}; "
            f"pass --resume to continue it or --study NAME for a new one"
        )


def _create_study(storage, config: SearchConfig) -> None:
    import optuna

    names, directions = zip(*OBJECTIVES[config.objective], strict=True)
    study = optuna.create_study(
        study_name=config.study, storage=storage, directions=list(directions)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(names))
    study.set_user_attr("mode", config.objective)
    study.set_user_attr("space_hash", config.space.hash)
    study.set_user_attr("config", yaml.safe_dump(config.to_dict(), sort_keys=False))
    study.set_user_attr("trials_requested", config.trials)


# ---------------------------------------------------------------------------------------------
# The searcher: Ray's OptunaSearch, storing every figure and reusing evaluated specs


def _make_sampler(config: SearchConfig):
    import optuna

    if config.sampler == "tpe":
        # The space is conditional (SE choices depend on the block type): grouped multivariate
        # TPE models the joint choices per group. Optuna flags both options as experimental.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=config.seed, multivariate=True, group=True)
    if config.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=config.seed)
    return optuna.samplers.RandomSampler(seed=config.seed)


class _DefineByRun:
    """``OptunaSearch``'s define-by-run space: sample a spec, hand Tune its string form."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space

    def __call__(self, trial) -> dict[str, Any]:
        return {"spec": self.space.suggest(trial).to_string()}


def _make_searcher(config: SearchConfig, storage):
    from optuna.trial import TrialState
    from ray.tune.search.optuna import OptunaSearch

    # The figures stored on each Optuna trial: the evaluation's record, key for key.
    from nas.evaluate import RESULT_KEYS

    class StudySearch(OptunaSearch):
        """``OptunaSearch`` that stores each trial's spec and figures on the Optuna trial.

        Ray's searcher tells Optuna only the objective values; ``results`` and the dashboard need
        the whole record, so this subclass writes it as user attributes before telling. It also
        reuses the stored result of a spec the study already evaluated, and never tells a trial
        twice (after a resume, Tune may replay the end of a trial Optuna already holds).
        """

        def suggest(self, trial_id: str) -> dict | None:
            params = super().suggest(trial_id)
            if params is None:
                return None
            ot_trial = self._ot_trials[trial_id]
            spec = ArchSpec.from_string(params["spec"])
            ot_trial.set_user_attr("spec", spec.to_string())
            ot_trial.set_user_attr("hash", spec.hash)
            done = self._ot_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            for previous in done:
                if previous.user_attrs.get("hash") == spec.hash:
                    cached = {
                        k: previous.user_attrs[k] for k in RESULT_KEYS if k in previous.user_attrs
                    }
                    params["cached"] = {**cached, "reused_from": previous.number}
                    break
            return params

        def on_trial_complete(
            self, trial_id: str, result: dict | None = None, error: bool = False
        ) -> None:
            if trial_id in self._completed_trials or trial_id not in self._ot_trials:
                return
            ot_trial = self._ot_trials[trial_id]
            stored = self._ot_study._storage.get_trial(ot_trial._trial_id)
            if stored.state.is_finished():
                self._completed_trials.add(trial_id)
                return
            result = result or {}
            for key in (*RESULT_KEYS, "reused_from"):
                value = result.get(key)
                if value is not None and not (isinstance(value, float) and math.isnan(value)):
                    ot_trial.set_user_attr(key, value)
            if error or result.get("status") == "failed":
                if error and not result.get("failure"):
                    ot_trial.set_user_attr("status", "failed")
                    ot_trial.set_user_attr("failure", "worker error (see Tune's trial log)")
                self._ot_study.tell(ot_trial, state=TrialState.FAIL)
            elif not result.get("final"):
                # Stopped early by ASHA: keep its figures, but it has no final score.
                ot_trial.set_user_attr("status", "stopped")
                self._ot_study.tell(ot_trial, state=TrialState.PRUNED)
            else:
                metrics = self.metric if isinstance(self.metric, list) else [self.metric]
                self._ot_study.tell(ot_trial, [float(result[m]) for m in metrics])
            self._completed_trials.add(trial_id)

        def restore(self, checkpoint_path: str) -> None:
            super().restore(checkpoint_path)
            # Trials asked of Optuna after the last experiment checkpoint are unknown to the
            # restored Tune run and would stay RUNNING for ever: record them as interrupted.
            known = {t._trial_id for t in self._ot_trials.values()}
            for trial in self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if trial._trial_id not in known:
                    storage = self._ot_study._storage
                    storage.set_trial_user_attr(trial._trial_id, "status", "failed")
                    storage.set_trial_user_attr(
                        trial._trial_id, "failure", "interrupted: the driver stopped"
                    )
                    storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)

    names = [name for name, _ in OBJECTIVES[config.objective]]
    modes = ["max" if d == "maximize" else "min" for _, d in OBJECTIVES[config.objective]]
    return StudySearch(
        space=_DefineByRun(config.space),
        metric=names[0] if len(names) == 1 else names,
        mode=modes[0] if len(modes) == 1 else modes,
        sampler=_make_sampler(config),
        study_name=config.study,
        storage=storage,
        seed=config.seed,
    )


# ---------------------------------------------------------------------------------------------
# One trial, on a Ray worker


def _failed_record(spec: ArchSpec, reason: str, started: float) -> dict[str, Any]:
    return {
        "spec": spec.to_string(),
        "hash": spec.hash,
        "status": "failed",
        "failure": " ".join(reason.split())[:500],
        "duration_s": time.monotonic() - started,
        "final": True,
    }


def _run_trial(trial_config: dict[str, Any], settings: dict[str, Any]) -> None:
    """Tune's function trainable: evaluate one candidate and report its record."""
    from ray import tune

    started = time.monotonic()
    spec = ArchSpec.from_string(trial_config["spec"])
    metric_names = settings["metric_names"]

    def report(metrics: Mapping[str, Any]) -> None:
        # Every report carries every metric Tune and the searcher watch (NaN until known).
        payload = {name: math.nan for name in metric_names}
        payload.update(spec=spec.to_string(), hash=spec.hash)
        payload.update({k: v for k, v in metrics.items() if v is not None})
        tune.report(payload)

    cached = trial_config.get("cached")
    if cached:
        report({**cached, "final": True})
        return
    try:
        record = settings["evaluate"](spec, settings, report)
    except EffnasError as error:
        record = _failed_record(spec, str(error), started)
    except Exception as error:  # a candidate must never take the search down with it
        if "out of memory" in str(error).lower():
            reason = f"out of memory: {error}"
        else:
            reason = f"{type(error).__name__}: {error}"
        record = _failed_record(spec, reason, started)
    report({**record, "final": True})


# ---------------------------------------------------------------------------------------------
# Progress


def _progress_callback(total: int, log: Callable[[str], None]):
    from ray.tune import Callback

    class Progress(Callback):
        """One line per finished trial, readable in ``ray job logs``."""

        @staticmethod
        def _done(trials, trial) -> int:
            # Counted from Tune's own trial list, so the count is right after a resume too.
            others = (t for t in trials if t is not trial)
            return sum(t.status in ("TERMINATED", "ERROR") for t in others) + 1

        def on_trial_complete(self, iteration, trials, trial, **info) -> None:
            log(_format_line(self._done(trials, trial), total, trial.last_result or {}))

        def on_trial_error(self, iteration, trials, trial, **info) -> None:
            spec = trial.config.get("spec", "?")
            done = self._done(trials, trial)
            log(f"[{done}/{total}] {spec}  FAILED: worker error (see Tune's log)")

    return Progress()


def _format_line(done: int, total: int, result: Mapping[str, Any]) -> str:
    spec = result.get("spec", "?")
    if result.get("status") == "failed":
        return f"[{done}/{total}] {spec}  FAILED: {result.get('failure', '')}"
    if not result.get("final"):
        return f"[{done}/{total}] {spec}  stopped early at accuracy {result.get('accuracy', 0):.4f}"
    reused = f"  (reused trial {result['reused_from']})" if "reused_from" in result else ""
    return (
        f"[{done}/{total}] {spec}  acc {result.get('accuracy', math.nan):.4f}"
        f"  step {result.get('step_time_ms', math.nan):.1f} ms"
        f"  params {result.get('params', 0) / 1e6:.2f}M"
        f"  reward {result.get('reward', math.nan):.4f}{reused}"
    )


# ---------------------------------------------------------------------------------------------
# Ray


def _keep_local_ray_on_loopback() -> None:
    """Make a Ray started in this process listen on 127.0.0.1 only.

    Ray picks the machine's network address for a local instance unless
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, and it reads that variable once, when ``ray`` is first
    imported: set it before the import, and its spawned processes inherit it. If ``ray`` was
    already imported (a notebook, a test session), the constant it read is updated too; there is
    no public switch for this.
    """
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:
        constants.ENABLE_RAY_CLUSTER = False


def _ray_address(address: str | None) -> str | None:
    return address or os.environ.get("RAY_ADDRESS") or None


@contextlib.contextmanager
def _ray_session(address: str | None) -> Iterator[None]:
    """Connect to a cluster (``--address`` or ``RAY_ADDRESS``) or start Ray here on 127.0.0.1."""
    address = _ray_address(address)
    if not address:
        _keep_local_ray_on_loopback()
    import ray

    if ray.is_initialized():
        yield
        return
    if address:
        try:
            ray.init(address=address, log_to_driver=True)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise ConfigError(f"cannot connect to Ray at {address!r}: {error}") from None
    else:
        ray.init(
            _node_ip_address="127.0.0.1",
            include_dashboard=False,
            log_to_driver=True,
            configure_logging=False,
        )
    try:
        yield
    finally:
        ray.shutdown()


# ---------------------------------------------------------------------------------------------
# The driver


def run_search(
    config: SearchConfig,
    *,
    resume: bool = False,
    address: str | None = None,
    evaluate: Callable[..., dict[str, Any]] | None = None,
    log: Callable[[str], None] | None = None,
) -> SearchOutcome:
    """Run (or resume) a search and write ``best.yaml`` into the run directory.

    Args:
        config: the validated search config.
        resume: continue an interrupted search from its Tune experiment and study.
        address: a Ray cluster address; default ``RAY_ADDRESS``, else a local Ray on 127.0.0.1.
        evaluate: ``evaluate(spec, settings, report) -> record``; the default trains and times the
            candidate with :mod:`nas.evaluate`. Tests pass their own to inject faults.
        log: where progress lines go (default: stdout, flushed).
    """
    if not _ray_address(address):
        _keep_local_ray_on_loopback()  # before the first import of ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    def default_log(line: str) -> None:
        print(line, flush=True)

    log = log or default_log
    run_dir = config.run_dir.resolve()
    storage = open_storage(config.storage_url)
    _check_existing_study(storage, config, resume)
    tune_dir = run_dir / TUNE_DIR
    if resume and not tune_dir.exists():
        raise ConfigError(f"--resume: no Tune experiment in {tune_dir}")
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        _create_study(storage, config)
        (run_dir / CONFIG_FILE).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))

    metric_names = [name for name, _ in OBJECTIVES[config.objective]]
    settings = {
        "metric_names": metric_names,
        "evaluate": evaluate or _default_evaluate,
        # Built and validated once on the driver; every trial uses it as it is.
        "eval_config": config.eval_config(),
        "threads": max(1, int(config.resources.cpus)),
    }
    resources = {"cpu": config.resources.cpus, "gpu": config.resources.gpus}
    trainable = tune.with_resources(tune.with_parameters(_run_trial, settings=settings), resources)

    # Save the experiment state on every controller step, so that a killed driver loses at most
    # the trial it was telling (Tune's default throttles saves to a share of the run time).
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "0")
    # Tune's own table would interleave with our one-line-per-trial progress.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    log(
        f"nas search: study {config.study!r}, {config.trials} trials, {config.concurrent} at a "
        f"time, objective {config.objective}, storage {config.storage_url}"
    )
    with _ray_session(address):
        if resume:
            tuner = tune.Tuner.restore(
                str(tune_dir), trainable=trainable, resume_unfinished=True, resume_errored=True
            )
        else:
            if config.use_asha:
                scheduler = ASHAScheduler(
                    metric="reward",
                    mode="max",
                    time_attr="training_iteration",
                    max_t=config.epochs + 1,
                    grace_period=1,
                )
            else:
                scheduler = FIFOScheduler()
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    search_alg=_make_searcher(config, storage),
                    scheduler=scheduler,
                    num_samples=config.trials,
                    max_concurrent_trials=config.concurrent,
                    # A trial's worker goes on to the next trial: torch, the dataset and the
                    # reference timing are loaded once per worker, not once per candidate.
                    reuse_actors=True,
                ),
                run_config=tune.RunConfig(
                    name=TUNE_DIR,
                    storage_path=str(run_dir),
                    failure_config=tune.FailureConfig(max_failures=config.max_failures),
                    callbacks=[_progress_callback(config.trials, log)],
                    verbose=0,
                ),
            )
        tuner.fit()
    return _finish(config, storage, log)


#: Datasets loaded by this worker process. Tune reuses a worker for the next trial
#: (``reuse_actors``), so each worker reads the dataset once, not once per candidate.
_DATA_CACHE: dict[tuple, Any] = {}


def _load_data_once(config, spec: ArchSpec):
    key = (
        config.dataset,
        config.image_size_for(spec),
        config.seed,
        config.heldout_fraction,
        config.max_train_images,
    )
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()  # one search, one dataset: keep memory flat
        _DATA_CACHE[key] = config.load_data(spec)
    return _DATA_CACHE[key]


def _default_evaluate(spec: ArchSpec, settings: dict[str, Any], report) -> dict[str, Any]:
    """Evaluate a candidate with :mod:`nas.evaluate`, reporting each epoch to Tune (for ASHA)."""
    import torch

    from nas.evaluate import evaluate_candidate

    # Each trial owns the CPUs it asked Ray for; more threads would steal from the trial beside.
    torch.set_num_threads(settings["threads"])
    config = settings["eval_config"]
    data = _load_data_once(config, spec)
    if data.num_classes != spec.num_classes:
        # The study identifies candidates by spec; a head sized differently from the space's
        # would make every stored spec disagree with the net that was trained.
        raise ConfigError(
            f"space.num_classes is {spec.num_classes} but dataset {config.dataset!r} has "
            f"{data.num_classes} classes; set space.num_classes: {data.num_classes}"
        )
    result = evaluate_candidate(
        spec, config, data=data, on_epoch_end=lambda epoch, metrics: report(metrics)
    )
    return result.to_dict()


def _finish(config: SearchConfig, storage, log: Callable[[str], None]) -> SearchOutcome:
    import optuna
    from optuna.trial import TrialState

    from results import format_front, load_study_frame

    study = optuna.load_study(study_name=config.study, storage=storage)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    best_spec = best_path = None
    if trials:
        log(format_front(load_study_frame(config.storage_url, config.study)))
    if complete:
        best = max(complete, key=lambda t: t.user_attrs.get("reward", -math.inf))
        best_spec = ArchSpec.from_string(best.user_attrs["spec"], name=f"{config.study}-best")
        best_path = best_spec.save(config.run_dir / "best.yaml")
        log(f"best by reward: trial {best.number} -> {best_path}")
    else:
        log("no trial finished; nothing to write")
    log("look further with:")
    log(f"  nas show {config.run_dir / 'best.yaml'}")
    log(f"  nas front {config.run_dir}")
    log(f"  nas report {config.run_dir}")
    log(f"  nas dashboard {config.run_dir}")
    sys.stdout.flush()
    return SearchOutcome(
        run_dir=config.run_dir,
        storage_url=config.storage_url,
        study_name=config.study,
        finished=len(complete),
        failed=len(failed),
        best_spec=best_spec,
        best_path=best_path,
    )
