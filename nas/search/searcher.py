"""The searcher: Optuna chooses each candidate, Tune runs it, and the study stores everything.

:class:`StudySearcher` is a Ray Tune ``Searcher`` over an Optuna study (ask-and-tell with the
space's define-by-run ``suggest(trial)``). It writes each trial's whole result record
(:mod:`results.schema`) on the Optuna trial, reuses the stored result of a spec the study already
evaluated, never tells a trial twice, and on restore marks the trials asked for after the last
checkpoint failed ("interrupted"). Tune pickles only the storage's opener
(:class:`nas.search.driver.StudyStorage`), never a password. A spec that breaks a cheap bound
(:mod:`nas.search.constraints`) is recorded as a refused trial and the sampler is asked again, at
most :data:`MAX_REFUSALS` times in a row. Why this and not Ray's ``OptunaSearch``, and how refusals
and measured bounds reach the sampler: docs/searching.md.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher

from nas.errors import ConfigError
from nas.search.config import SAMPLERS
from nas.search.constraints import Constraints
from nas.search.trial import NUMBER
from results.schema import OBJECTIVES_BY_MODE, RECORD_KEYS, REFUSED, STOPPED
from searchspace.files import atomic_write
from searchspace.space import SearchSpace
from searchspace.spec import ArchSpec

__all__ = [
    "DRIVER",
    "MAX_REFUSALS",
    "REUSED_FROM",
    "StudySearcher",
    "make_sampler",
]

#: The user attribute (and trial config key) naming the trial whose result a spec reused.
REUSED_FROM = "reused_from"
#: The user attribute naming the driver that asked for a trial.
DRIVER = "driver"
#: How many specs in a row the sampler may propose that break a cheap constraint before the
#: search gives up (the space's smallest net was checked when the search started).
MAX_REFUSALS = 200


def make_sampler(
    name: str, seed: int, population_size: int = 50, startup_trials: int | None = None
) -> optuna.samplers.BaseSampler:
    """Optuna's sampler by name (:data:`nas.search.config.SAMPLERS`), seeded.

    ``tpe``: multivariate TPE over groups of parameters (a search's default); with several
    objectives, Optuna's multi-objective TPE. ``tpe-univariate``: TPE one parameter at a time
    (Optuna 5's TPE models one objective multivariately by default: this is asked for).
    ``gp``: Optuna's Gaussian-process sampler (log expected improvement; with several
    objectives, log expected hypervolume improvement); it models the parameters every trial
    has, and draws the ones that exist for one block type only (a stage's SE ratio, where the
    space offers SE) at random. ``nsga2``: NSGA-II with generations of
    ``population_size``. ``random``.

    ``startup_trials``: the random trials TPE and GP draw before they model (None: Optuna's
    default, 10); NSGA-II's first generation is its start-up (``population_size``).
    """
    startup = {} if startup_trials is None else {"n_startup_trials": startup_trials}
    if name in ("tpe", "tpe-univariate", "gp"):
        # The space is conditional (SE choices depend on the block type): grouped multivariate
        # TPE models the joint choices per group. Optuna flags both options, and the GP
        # sampler, as experimental.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if name == "tpe":
                return optuna.samplers.TPESampler(
                    seed=seed, multivariate=True, group=True, **startup
                )
            if name == "tpe-univariate":
                return optuna.samplers.TPESampler(seed=seed, multivariate=False, **startup)
            # Optuna warns on every trial that draws a conditional parameter at random (the
            # docstring says which); a search's log would repeat it for each trial.
            return optuna.samplers.GPSampler(seed=seed, warn_independent_sampling=False, **startup)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=population_size)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ConfigError(f"unknown sampler {name!r} (known: {', '.join(SAMPLERS)})")


def resumed_seed(seed: int, asked: int) -> int:
    """The sampler's seed for a study that already holds ``asked`` trials: ``seed`` itself for a
    new study (a search is reproducible from its seed), another seed derived from both once
    trials exist. A sampler seeded as the search began would draw the same random start-up
    nets again after a resume (or in a second driver joining the study): the search would spend
    its trials re-evaluating nets it has (found when a resumed quick search re-drew its first
    four nets)."""
    if asked == 0:
        return seed
    return int(np.random.SeedSequence([seed, asked]).generate_state(1)[0])


class StudySearcher(Searcher):
    """A Tune ``Searcher`` over an Optuna study; see the module docstring.

    Args:
        space: the search space (its ``suggest`` draws a spec from an Optuna trial).
        study_name: the study, already created in the storage.
        open_storage: returns the study's storage; called when the searcher first needs it (also
            after Tune unpickled it on a resume), so no storage object or URL is ever pickled.
        mode: the objective mode (``reward`` or ``pareto``, :data:`OBJECTIVES_BY_MODE`).
        sampler: one of :data:`nas.search.config.SAMPLERS`.
        seed: the sampler's seed.
        population_size: NSGA-II's generation size (``sampler: nsga2`` only).
        startup_trials: TPE's and GP's random start-up trials (None: Optuna's default).
        driver: who asks (:func:`nas.search.driver.driver_id`), recorded on each trial as the
            user attribute ``driver``: a study that several drivers search says which asked.
        constraints: the search's bounds (none by default).
        image_size: the search's timing image size, at which ``max_flops`` is counted (as the
            trial records FLOPs).
    """

    #: Added after searches were first pickled: ``--resume`` unpickles the searcher its run saved,
    #: perhaps by an older effnas, whose state lacks it; the class attribute is what such a
    #: search had (Optuna's default start-up).
    startup_trials: int | None = None

    def __init__(
        self,
        space: SearchSpace,
        study_name: str,
        open_storage: Callable[[], Any],
        *,
        mode: str,
        sampler: str,
        seed: int,
        population_size: int = 50,
        startup_trials: int | None = None,
        driver: str = "",
        constraints: Constraints | None = None,
        image_size: int = 0,
    ) -> None:
        objectives = OBJECTIVES_BY_MODE[mode]
        # Tune's Searcher keeps a metric and a mode for show; the study holds the directions.
        # Tune checks that every result holds each metric named here: name them one by one
        # (a list), not joined into one name no result holds (pareto mode failed on that).
        super().__init__(metric=list(objectives), mode=None)
        self.space = space
        self.study_name = study_name
        self.open_storage = open_storage
        self.objectives = objectives
        self.sampler_name = sampler
        self.seed = seed
        self.population_size = population_size
        self.startup_trials = startup_trials
        self.driver = driver
        self.constraints = constraints or Constraints()
        self.image_size = image_size
        self.trial_numbers: dict[str, int] = {}  # Tune's trial id -> Optuna's trial number
        self.told: set[str] = set()
        self._storage: Any = None
        self._study: optuna.Study | None = None

    # -- Tune pickles the searcher into its experiment: everything but the storage. --

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_storage": None, "_study": None}

    @property
    def storage(self) -> Any:
        if self._storage is None:
            self._storage = self.open_storage()
        return self._storage

    @property
    def study(self) -> optuna.Study:
        if self._study is None:
            study_id = self.storage.get_study_id_from_name(self.study_name)
            asked = len(self.storage.get_all_trials(study_id, deepcopy=False))
            self._study = optuna.load_study(
                study_name=self.study_name,
                storage=self.storage,
                sampler=make_sampler(
                    self.sampler_name,
                    resumed_seed(self.seed, asked),
                    self.population_size,
                    self.startup_trials,
                ),
            )
        return self._study

    def _trial_id(self, number: int) -> int:
        """The storage's id of the study's trial ``number`` (Optuna's public storage API)."""
        study_id = self.storage.get_study_id_from_name(self.study_name)
        return self.storage.get_trial_id_from_study_id_trial_number(study_id, number)

    # -- asking --

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        for _ in range(MAX_REFUSALS):
            trial = self.study.ask()
            spec = self.space.suggest(trial)
            trial.set_user_attr("spec", spec.to_string())
            trial.set_user_attr("hash", spec.hash)
            trial.set_user_attr(DRIVER, self.driver)
            if not self._refused(trial, spec):
                break
        else:
            raise ConfigError(
                f"constraints: the sampler proposed {MAX_REFUSALS} nets in a row that break "
                f"{self.constraints.describe()} (see the refused trials in the study); loosen "
                f"the constraints or narrow the space, with another --study"
            )
        self.trial_numbers[trial_id] = trial.number
        config: dict[str, Any] = {NUMBER: trial.number, "spec": spec.to_string()}
        previous = self._evaluated(spec)
        if previous is not None:
            record = {k: previous.user_attrs[k] for k in RECORD_KEYS if k in previous.user_attrs}
            config["cached"] = {**record, REUSED_FROM: previous.number}
        return config

    def _refused(self, trial: optuna.Trial, spec: ArchSpec) -> bool:
        """Whether ``spec`` breaks a cheap constraint; if so, record it refused (module doc)."""
        if not self.constraints.cheap:
            return False
        figures, violations = self.constraints.judge(spec, self.image_size)
        if all(value <= 0 for value in violations.values()):
            return False
        for key, value in figures.items():
            trial.set_user_attr(key, value)
        trial.set_user_attr("status", REFUSED)
        trial.set_user_attr("violations", self.constraints.explain(figures, violations))
        for key, value in violations.items():
            trial.set_constraint(key, value)
        self.study.tell(trial, state=TrialState.PRUNED)
        return True

    def _evaluated(self, spec: ArchSpec) -> optuna.trial.FrozenTrial | None:
        """A finished trial of the study that evaluated the same spec, if any."""
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if trial.user_attrs.get("hash") == spec.hash:
                return trial
        return None

    # -- telling --

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        number = self.trial_numbers.get(trial_id)
        if number is None or trial_id in self.told:
            return
        self.told.add(trial_id)
        storage, frozen_id = self.storage, self._trial_id(number)
        if storage.get_trial(frozen_id).state.is_finished():
            return  # told before the driver stopped; Tune replayed its end after a resume
        result = result or {}
        for key in (*RECORD_KEYS, REUSED_FROM):
            value = result.get(key)
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                storage.set_trial_user_attr(frozen_id, key, value)
        if error or result.get("status") == "failed":
            if error and not result.get("failure"):
                storage.set_trial_user_attr(frozen_id, "status", "failed")
                storage.set_trial_user_attr(frozen_id, "failure", "worker error (see Tune's log)")
            self.study.tell(number, state=TrialState.FAIL)
        elif not result.get("final"):
            # Stopped early by the scheduler: keep its figures, but it has no final score.
            storage.set_trial_user_attr(frozen_id, "status", STOPPED)
            self._constrain(frozen_id, result)
            self.study.tell(number, state=TrialState.PRUNED)
        else:
            self._constrain(frozen_id, result)
            self.study.tell(number, [float(result[name]) for name in self.objectives])

    def _constrain(self, frozen_id: int, result: dict[str, Any]) -> None:
        """Give the sampler each bound's value for a trial that ran, and record the broken ones
        (``violations``; empty: feasible)."""
        if not self.constraints:
            return
        violations = self.constraints.of_result(result)
        # The trial Optuna asked for is not at hand after a resume: open it by its id (the
        # samplers' before_trial hook this runs does nothing for TPE, NSGA-II or random).
        trial = optuna.trial.Trial(self.study, frozen_id)
        for key, value in violations.items():
            trial.set_constraint(key, value)
        explained = self.constraints.explain(result, violations)
        self.storage.set_trial_user_attr(frozen_id, "violations", explained)

    # -- Tune's experiment checkpoint --

    def save(self, checkpoint_path: str) -> None:
        state = {"trial_numbers": self.trial_numbers, "told": sorted(self.told)}
        atomic_write(checkpoint_path, json.dumps(state))

    def restore(self, checkpoint_path: str) -> None:
        state = json.loads(Path(checkpoint_path).read_text())
        self.trial_numbers = dict(state["trial_numbers"])
        self.told = set(state["told"])
        # Trials asked of Optuna after the last experiment checkpoint are unknown to the
        # restored Tune run and would stay RUNNING for ever: record them as interrupted.
        known = set(self.trial_numbers.values())
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if trial.number not in known:
                trial_id = self._trial_id(trial.number)
                self.storage.set_trial_user_attr(trial_id, "status", "failed")
                self.storage.set_trial_user_attr(
                    trial_id, "failure", "interrupted: the driver stopped"
                )
                self.study.tell(trial.number, state=TrialState.FAIL)
