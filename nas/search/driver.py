"""The search driver: Ray Tune runs the trials, Optuna chooses and stores them.

:func:`run_search` opens the study (:mod:`nas.search.study`), holds a
:class:`~nas.search.searcher.StudySearcher` on it, and lets Tune run
:func:`~nas.search.trial.run_trial` on Ray workers with the config's resources; a failed candidate
is a failed trial and the search goes on, and a killed driver resumes from Tune's experiment
directory and the same study. :class:`StudyStorage` opens the study from a URL split from its
password (:func:`results.storage.split_password`), which never leaves this process's memory.
Several drivers may search one PostgreSQL study at once (``join``). How a search runs, resumes
and keeps its password: docs/searching.md.
"""

from __future__ import annotations

import os
import socket
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import yaml

from nas.cluster import keep_local_ray_on_loopback, ray_session, requested_address
from nas.errors import ConfigError
from nas.search.config import SearchConfig
from nas.search.rundir import hold_run_dir
from nas.search.study import prepare_study
from nas.search.trial import NUMBER, Evaluate, TrialSettings, default_evaluate, run_trial
from results.schema import OBJECTIVES_BY_MODE
from results.storage import is_postgres_url, open_storage, split_password
from searchspace.files import atomic_write
from searchspace.spec import ArchSpec

__all__ = ["CONFIG_FILE", "TUNE_DIR", "SearchResult", "StudyStorage", "driver_id", "run_search"]

TUNE_DIR = "tune"
CONFIG_FILE = "config.yaml"


@dataclass(frozen=True)
class SearchResult:
    """What a finished search left behind (``storage_url`` without its password)."""

    run_dir: Path
    storage_url: str
    study_name: str
    finished: int
    failed: int
    best_spec: ArchSpec | None
    best_path: Path | None
    interrupted: bool = False


class StudyStorage:
    """Opens the search's storage when called; what the searcher holds (and Tune pickles).

    Holds the URL without its password. A password that came with the URL is kept in a table
    in this process's memory (never pickled), where a searcher that Tune restored from its
    experiment finds it again when the resumed driver was given the password the same way;
    otherwise libpq looks in ``PGPASSWORD`` and the password file.
    """

    _passwords: ClassVar[dict[str, str]] = {}

    def __init__(self, url: str) -> None:
        bare, password = split_password(url)
        self.url = bare
        if password is not None:
            StudyStorage._passwords[bare] = password

    def __call__(self) -> Any:
        return open_storage(
            self.url, writable=True, error=ConfigError, password=self._passwords.get(self.url)
        )


def run_search(
    config: SearchConfig,
    *,
    resume: bool = False,
    join: bool = False,
    address: str | None = None,
    evaluate: Evaluate | None = None,
    log: Callable[[str], None] | None = None,
) -> SearchResult:
    """Run (or resume) a search and write ``best.yaml`` into the run directory.

    Args:
        config: the validated search config (a password in its storage URL stays in memory).
        resume: continue an interrupted search from its Tune experiment and study.
        join: start the study, or join it if another driver already did (Optuna's distributed
            mode; PostgreSQL only). This driver runs ``config.trials`` trials of its own in its
            own run directory; the sampler's seed is mixed with :func:`driver_id`, so that the
            drivers do not propose the same candidates.
        address: a Ray cluster address; default ``RAY_ADDRESS``, else a local Ray on 127.0.0.1.
        evaluate: ``evaluate(spec, settings, report) -> record``; the default trains and times the
            candidate with :mod:`nas.evaluate`. Tests pass their own to inject faults.
        log: where progress lines go (default: stdout, flushed).

    Raises:
        ConfigError: bad input, seen before any trial runs: a dataset that cannot be read, a
            storage that cannot be opened (one line, no password), a study that is not this
            search's (:func:`~nas.search.study.prepare_study`).
    """
    if not requested_address(address):
        keep_local_ray_on_loopback()  # before the first import of ray
    from ray import tune

    log = log or _print_flushed
    opener = StudyStorage(config.storage_url)
    if config.storage is not None:
        config = config.replace(storage=opener.url)  # what is printed and saved: no password
    if join and not is_postgres_url(config.storage_url):
        raise ConfigError(
            f"--join needs the study on a database server (--storage postgresql://...), not "
            f"{config.storage_url}: several drivers write it at once"
        )
    run_dir = config.run_dir.resolve()
    data = load_search_data(config)
    config.constraints.check_space(config.space, config.timing_size)
    with hold_run_dir(run_dir, config.study):
        storage = opener()
        # On a resume this only checks the study (it must exist); else it may create it.
        prepare_study(
            storage, config, resume=resume, join=join, trials_requested=_started_with(run_dir)
        )
        tune_dir = run_dir / TUNE_DIR
        if resume and not tune_dir.exists():
            raise ConfigError(f"--resume: no Tune experiment in {tune_dir}")
        if not resume:
            atomic_write(run_dir / CONFIG_FILE, yaml.safe_dump(config.to_dict(), sort_keys=False))
        trainable = _trainable(config, evaluate, data)
        joining = " (shared with other drivers)" if join else ""
        log(
            f"nas search: study {config.study!r}{joining}, {config.trials} trials, "
            f"{config.concurrent} at a time, objective {config.objective}, storage "
            f"{config.storage_url}"
        )
        log(config.sampler_summary())
        if config.constraints:
            log(f"constraints: {config.constraints.describe()}")
        with ray_session(address):
            if resume:
                tuner = tune.Tuner.restore(
                    str(tune_dir), trainable=trainable, resume_unfinished=True, resume_errored=True
                )
            else:
                tuner = _new_tuner(config, trainable, opener, run_dir, join, log)
            grid = tuner.fit()  # a first Ctrl-C (SIGINT) ends it early, the experiment saved
        # Each Tune trial's config names the study's trial it ran (StudySearcher.suggest).
        numbers = {result.config[NUMBER] for result in grid if NUMBER in result.config}
        return _finish(config, storage, log, numbers)


def _started_with(run_dir: Path) -> int | None:
    """The trials this run directory's search was started for (its saved config), if known."""
    try:
        saved = yaml.safe_load((run_dir / CONFIG_FILE).read_text())
    except (OSError, yaml.YAMLError):
        return None
    trials = saved.get("trials") if isinstance(saved, dict) else None
    return trials if isinstance(trials, int) and not isinstance(trials, bool) else None


def driver_id(run_dir: Path) -> str:
    """A driver as the trials it asks for record it (``driver``): ``<host name>:<run dir>``."""
    return f"{socket.gethostname()}:{run_dir}"


def _trainable(config: SearchConfig, evaluate: Evaluate | None, data: Any = None) -> Any:
    """Tune's trainable: :func:`run_trial` with the search's shared settings and resources.

    ``tune.with_parameters`` puts the settings into Ray's object store once: the dataset the
    driver loaded (``data``) travels to the workers from there.
    """
    from ray import tune

    settings = TrialSettings(
        metric_names=tuple(OBJECTIVES_BY_MODE[config.objective]),
        evaluate=evaluate or default_evaluate,
        eval_config=config.eval_config(),  # built and validated once, here
        threads=max(1, int(config.resources.cpus)),
        data=data,
        # Held-out accuracy after every epoch only where a scheduler judges it.
        per_epoch=config.early_stopping,
    )
    resources = {"cpu": config.resources.cpus, "gpu": config.resources.gpus}
    # Save the experiment state on every controller step, so that a killed driver loses at most
    # the trial it was telling (Tune's default throttles saves to a share of the run time).
    # Saving at most once a second instead spares the driver a third of its CPU (3.2 s against
    # 4.8 s in a stand-in search of four short trials), but a trial that Tune started or ended in
    # the last second before a kill is then unknown to the restored experiment: the resumed
    # search ran 7 trials for a budget of 6 (tests/nas/search/test_search.py caught it).
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "0")
    # Tune's own table would interleave with our one-line-per-trial progress.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    return tune.with_resources(tune.with_parameters(run_trial, settings=settings), resources)


def load_search_data(config: SearchConfig) -> Any:
    """The search's dataset (a ``DataBundle`` at its image size), checked
    (:func:`check_dataset`) and loaded once, here: the driver opens it anyway to check it, and
    the trials get it through Ray's object store (:func:`_trainable`) instead of each worker
    loading (for a generated dataset: generating) it again.

    Raises:
        DataError, ConfigError: as :func:`check_dataset`.
    """
    check_dataset(config)
    return config.eval_config().load_data()


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
    join: bool,
    log: Callable[[str], None],
) -> Any:
    from ray import tune

    from nas.search.progress import TrialLogger
    from nas.search.schedulers import SchedulerState
    from nas.search.searcher import StudySearcher

    driver = driver_id(run_dir)
    # Drivers that share a study must not all propose the same candidates.
    seed = zlib.crc32(f"{config.seed}:{driver}".encode()) if join else config.seed
    searcher = StudySearcher(
        config.space,
        config.study,
        opener,
        mode=config.objective,
        sampler=config.sampler,
        seed=seed,
        population_size=config.population_size,
        startup_trials=config.startup_trials,
        driver=driver,
        constraints=config.constraints,
        image_size=config.timing_size,
    )
    scheduler = early_stopping(config)
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,  # None: Tune's FIFO, every trial runs to the end
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
            callbacks=[TrialLogger(config.trials, log, config.constraints)]
            + ([] if scheduler is None else [SchedulerState(scheduler, log)]),
            verbose=0,
        ),
    )


def early_stopping(config: SearchConfig) -> Any:
    """The Tune scheduler that stops weak candidates early, or None (``early_stopping: false``).

    ``reward`` mode: Tune's ASHA on the reward. ``pareto`` mode: :class:`ParetoASHA` (MO-ASHA)
    on the study's objectives (accuracy so far, normalized step time, parameters), judged after
    epoch 1, 3, 9, ... below the last epoch, keeping a third at each rung by non-dominated rank
    and an epsilon-net inside a front, the trials that broke a measured constraint last.
    """
    if not config.early_stopping:
        return None
    if config.objective == "reward":
        from ray.tune.schedulers import ASHAScheduler

        # Each epoch is one report and the closing record one more: max_t counts them all.
        return ASHAScheduler(
            metric="reward",
            mode="max",
            time_attr="training_iteration",
            max_t=config.epochs + 1,
            grace_period=1,
        )
    from nas.search.schedulers import ParetoASHA

    # Rungs lie below the last epoch: stopping a trial after its last epoch saves nothing.
    return ParetoASHA(
        OBJECTIVES_BY_MODE[config.objective],
        constraints=config.constraints,
        time_attr="training_iteration",
        max_t=config.epochs,
        grace_period=1,
        reduction_factor=3,
    )


def _finish(
    config: SearchConfig,
    storage: Any,
    log: Callable[[str], None],
    numbers: set[int],
) -> SearchResult:
    """Print the study's front, write its reward-best spec as ``best.yaml``, say where to look.

    Args:
        numbers: the study's trials that this driver's Tune experiment ran (other drivers of a
            joined study run the rest); ``finished``, ``failed`` and ``interrupted`` count these.
    """
    import optuna
    from optuna.trial import TrialState

    from results import format_front, reward_best, study_frame

    study = optuna.load_study(study_name=config.study, storage=storage)
    trials = study.get_trials(deepcopy=False)
    frame = study_frame(study)
    # Nets refused before training are in the study (the sampler learns from them) but never
    # ran; they are not among this driver's Tune trials (numbers) either, and reward_best
    # skips them with the other infeasible trials.
    best = reward_best(frame)
    mine = [t for t in trials if t.number in numbers]
    finished = sum(t.state == TrialState.COMPLETE for t in mine)
    failed = sum(t.state == TrialState.FAIL for t in mine)
    # Stopped (Ctrl-C, SIGTERM) before every trial of this driver ended.
    interrupted = sum(t.state.is_finished() for t in mine) < config.trials
    best_spec = best_path = None
    if trials:
        log(format_front(frame))
    if best is not None:
        best_spec = ArchSpec.from_string(best["spec"], name=f"{config.study}-best")
        best_path = best_spec.save(config.run_dir / "best.yaml")
        feasible = " among feasible trials" if config.constraints else ""
        log(f"best by reward{feasible}: trial {best['number']} -> {best_path}")
        log("look further with:")
        log(f"  nas show {best_path}")
        if is_postgres_url(config.storage_url):
            where = f"{config.storage_url} --study {config.study}"
        else:
            where = str(config.run_dir)
        for command in ("front", "report", "dashboard"):
            log(f"  nas {command} {where}")
    else:
        infeasible = " or feasible" if config.constraints else ""
        log(f"no trial finished{infeasible} ({failed} failed); nothing to write")
    sys.stdout.flush()
    return SearchResult(
        run_dir=config.run_dir,
        storage_url=config.storage_url,
        study_name=config.study,
        finished=finished,
        failed=failed,
        best_spec=best_spec,
        best_path=best_path,
        interrupted=interrupted,
    )
