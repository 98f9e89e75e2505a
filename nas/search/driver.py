"""The search driver: Ray Tune runs the trials, Optuna chooses and stores them.

Shape (shared/DESIGN.md): :func:`run_search` opens the study (:mod:`nas.search.study`), holds a
:class:`~nas.search.searcher.StudySearcher` on it, and lets Tune run
:func:`~nas.search.trial.run_trial` on Ray workers with the resources the config asks, which
builds the candidate, times its training step, trains it briefly and reports every figure.

Nothing is lost: a candidate that fails is recorded as a failed trial with its reason and the
search goes on; a killed driver resumes from Tune's experiment directory (``Tuner.restore``) and
the same study, and a trial Optuna already finished is never told twice.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nas.cluster import keep_local_ray_on_loopback, ray_session, requested_address
from nas.errors import ConfigError
from nas.search.config import SearchConfig
from nas.search.rundir import hold_run_dir
from nas.search.study import check_existing_study, create_study
from nas.search.trial import Evaluate, TrialSettings, default_evaluate, run_trial
from results.schema import OBJECTIVES_BY_MODE
from results.storage import open_storage
from searchspace.files import atomic_write
from searchspace.spec import ArchSpec

__all__ = ["CONFIG_FILE", "TUNE_DIR", "SearchOutcome", "StudyStorage", "run_search"]

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
    interrupted: bool = False


class StudyStorage:
    """Opens the search's storage when called; what the searcher holds (and Tune pickles)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def __call__(self) -> Any:
        return open_storage(self.url, writable=True, error=ConfigError)


def run_search(
    config: SearchConfig,
    *,
    resume: bool = False,
    address: str | None = None,
    evaluate: Evaluate | None = None,
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
    if not requested_address(address):
        keep_local_ray_on_loopback()  # before the first import of ray
    from ray import tune

    log = log or _print_flushed
    run_dir = config.run_dir.resolve()
    check_dataset(config)
    opener = StudyStorage(config.storage_url)
    with hold_run_dir(run_dir, config.study):
        storage = opener()
        check_existing_study(storage, config, resume)
        tune_dir = run_dir / TUNE_DIR
        if resume and not tune_dir.exists():
            raise ConfigError(f"--resume: no Tune experiment in {tune_dir}")
        if not resume:
            create_study(storage, config)
            atomic_write(run_dir / CONFIG_FILE, yaml.safe_dump(config.to_dict(), sort_keys=False))
        trainable = _trainable(config, evaluate)
        log(
            f"nas search: study {config.study!r}, {config.trials} trials, {config.concurrent} at "
            f"a time, objective {config.objective}, storage {config.storage_url}"
        )
        with ray_session(address):
            if resume:
                tuner = tune.Tuner.restore(
                    str(tune_dir), trainable=trainable, resume_unfinished=True, resume_errored=True
                )
            else:
                tuner = _new_tuner(config, trainable, opener, run_dir, log)
            tuner.fit()  # a first Ctrl-C (SIGINT) ends it early, the experiment saved
        return _finish(config, storage, log)


def _trainable(config: SearchConfig, evaluate: Evaluate | None) -> Any:
    """Tune's trainable: :func:`run_trial` with the search's shared settings and resources."""
    from ray import tune

    settings = TrialSettings(
        metric_names=list(OBJECTIVES_BY_MODE[config.objective]),
        evaluate=evaluate or default_evaluate,
        eval_config=config.eval_config(),  # built and validated once, here
        threads=max(1, int(config.resources.cpus)),
    )
    resources = {"cpu": config.resources.cpus, "gpu": config.resources.gpus}
    # Save the experiment state on every controller step, so that a killed driver loses at most
    # the trial it was telling (Tune's default throttles saves to a share of the run time).
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "0")
    # Tune's own table would interleave with our one-line-per-trial progress.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    return tune.with_resources(tune.with_parameters(run_trial, settings=settings), resources)


def check_dataset(config: SearchConfig) -> None:
    """Refuse on the driver, before any trial starts, a dataset that every trial would refuse.

    The dataset is opened here (for the embedded ones this costs a moment; a folder of images is
    listed, not decoded) so that a missing path, a path that is a file, files that are not the
    named dataset, or classes that differ from the space's are one line and exit status 2,
    instead of every trial failing on a worker.

    Raises:
        DataError: the dataset cannot be opened.
        ConfigError: its number of classes is not the space's ``num_classes``.
    """
    from nas.data.sources import load_source

    _, source = load_source(config.dataset)
    classes = len(source.classes)
    if classes != config.space.num_classes:
        raise ConfigError(
            f"space.num_classes is {config.space.num_classes} but dataset {config.dataset!r} has "
            f"{classes} classes; set space.num_classes: {classes}"
        )


def _print_flushed(line: str) -> None:
    print(line, flush=True)


def _new_tuner(
    config: SearchConfig,
    trainable: Any,
    opener: StudyStorage,
    run_dir: Path,
    log: Callable[[str], None],
) -> Any:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from nas.search.progress import Progress
    from nas.search.searcher import StudySearcher

    searcher = StudySearcher(
        config.space,
        config.study,
        opener,
        mode=config.objective,
        sampler=config.sampler,
        seed=config.seed,
    )
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
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=config.trials,
            max_concurrent_trials=config.concurrent,
            # A trial's worker goes on to the next trial: torch, the dataset and the reference
            # timing are loaded once per worker, not once per candidate.
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=TUNE_DIR,
            storage_path=str(run_dir),
            failure_config=tune.FailureConfig(max_failures=config.max_failures),
            callbacks=[Progress(config.trials, log)],
            verbose=0,
        ),
    )


def _finish(config: SearchConfig, storage: Any, log: Callable[[str], None]) -> SearchOutcome:
    """Print the front, write the reward-best spec as ``best.yaml``, say where to look next."""
    import optuna
    from optuna.trial import TrialState

    from results import format_front, load_study_frame

    study = optuna.load_study(study_name=config.study, storage=storage)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    ended = [t for t in trials if t.state.is_finished()]
    # Stopped (Ctrl-C, SIGTERM) before every trial ended; a trial the driver marked
    # "interrupted" on a resume is run anew and does not count.
    interrupted = len(ended) - _interrupted_count(failed) < config.trials
    best_spec = best_path = None
    if trials:
        log(format_front(load_study_frame(config.storage_url, config.study)))
    if complete:
        best = max(complete, key=lambda t: t.user_attrs.get("reward", -math.inf))
        best_spec = ArchSpec.from_string(best.user_attrs["spec"], name=f"{config.study}-best")
        best_path = best_spec.save(config.run_dir / "best.yaml")
        log(f"best by reward: trial {best.number} -> {best_path}")
        log("look further with:")
        log(f"  nas show {best_path}")
        for command in ("front", "report", "dashboard"):
            log(f"  nas {command} {config.run_dir}")
    else:
        log(f"no trial finished ({len(failed)} failed); nothing to write")
    sys.stdout.flush()
    return SearchOutcome(
        run_dir=config.run_dir,
        storage_url=config.storage_url,
        study_name=config.study,
        finished=len(complete),
        failed=len(failed),
        best_spec=best_spec,
        best_path=best_path,
        interrupted=interrupted,
    )


def _interrupted_count(failed: list) -> int:
    return sum("interrupted" in t.user_attrs.get("failure", "") for t in failed)
