"""Searches replayed against a recorded table (:mod:`nas.search.table`) with a simulated clock.

A replay runs the objects a search runs (:class:`~nas.search.searcher.StudySearcher` over an
Optuna study, and Tune's ASHA or :class:`~nas.search.schedulers.ParetoASHA` as
:func:`nas.search.driver.early_stopping` builds them) through their Tune interfaces, as Tune's
controller drives them, without Ray; each trial is looked up in the table instead of trained:
one seed's record of the net and one timing pass's step times (a live search measures each
net once), every epoch's figures with early stopping, the reward scored as the method's config
scores it (:func:`flops_exponent` for a FLOPs reward). A trial costs the CPU
seconds its run was recorded with (:meth:`~nas.search.table.Run.report_times`) on a worker of its
own; the simulated time is the search's wall time with ``workers`` workers. The protocol and the
clock in full: docs/benchmarks.md, "Many seeds from one recording".
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nas.errors import ConfigError
from nas.evaluate.reward import reward
from nas.search.config import OPTUNA_STARTUP_TRIALS, SAMPLERS, SearchConfig
from nas.search.table import Net, Table
from results.schema import OBJECTIVES_BY_MODE

__all__ = [
    "METHODS",
    "Method",
    "ReplayTrial",
    "flops_exponent",
    "method_config",
    "replay",
    "startup_trials",
    "table_reward",
]


@dataclass(frozen=True)
class Method:
    """A search method as a replay runs it.

    Attributes:
        name: how tables and figures name it.
        objective: ``reward`` or ``pareto`` (the search config's).
        sampler: one of :data:`nas.search.config.SAMPLERS`.
        early_stopping: the search's early stopping: ASHA on the reward, ParetoASHA in
            ``pareto`` mode.
        reward_cost: ``step_time`` or ``flops``: the reward's cost term; with ``flops`` the
            exponent is recalibrated from the table (:func:`flops_exponent`).
        startup: the sampler's random start-up trials whatever the budget; ``None``:
            :func:`startup_trials` of the budget.
        description: one line for tables.
    """

    name: str
    objective: str = "reward"
    sampler: str = "tpe"
    early_stopping: bool = False
    reward_cost: str = "step_time"
    startup: int | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES_BY_MODE:
            raise ConfigError(f"method {self.name}: unknown objective {self.objective!r}")
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"method {self.name}: unknown sampler {self.sampler!r}")

    def startup_for(self, budget: int) -> int:
        """The random start-up trials of this method's search of ``budget`` trials."""
        return startup_trials(budget) if self.startup is None else self.startup


#: The methods a replay compares, by name.
METHODS: dict[str, Method] = {
    method.name: method
    for method in (
        Method("random", sampler="random", description="random search, reward"),
        Method("tpe", description="multivariate grouped TPE on the reward (the default)"),
        Method(
            "tpe-startup10",
            startup=OPTUNA_STARTUP_TRIALS,
            description="TPE on the reward after Optuna's default 10 random trials, any budget",
        ),
        Method(
            "tpe-univariate",
            sampler="tpe-univariate",
            description="TPE one parameter at a time on the reward",
        ),
        Method("gp", sampler="gp", description="Optuna's GP sampler (log EI) on the reward"),
        Method(
            "flops-tpe",
            reward_cost="flops",
            description="TPE on the reward with FLOPs for step time (exponent recalibrated)",
        ),
        Method(
            "asha",
            early_stopping=True,
            description="TPE on the reward, ASHA stopping weak trials",
        ),
        Method("nsga2", objective="pareto", sampler="nsga2", description="NSGA-II, 3 objectives"),
        Method("mo-tpe", objective="pareto", description="multi-objective TPE, 3 objectives"),
        Method(
            "mo-gp",
            objective="pareto",
            sampler="gp",
            description="Optuna's GP sampler (log EHVI), 3 objectives",
        ),
        Method(
            "pareto-asha",
            objective="pareto",
            sampler="nsga2",
            early_stopping=True,
            description="NSGA-II, 3 objectives, ParetoASHA stopping",
        ),
        Method(
            "mo-tpe-asha",
            objective="pareto",
            early_stopping=True,
            description="multi-objective TPE, 3 objectives, ParetoASHA stopping",
        ),
    )
}


def startup_trials(budget: int) -> int:
    """Random start-up trials of a search of ``budget`` trials: Optuna's default 10, at most a
    fifth of the budget (at least 1); NSGA-II's generation is as large."""
    return max(1, min(OPTUNA_STARTUP_TRIALS, budget // 5))


def flops_exponent(table: Table) -> float:
    """The reward's FLOPs exponent that stands for its step-time exponent on this table.

    With ``log S = a + b log F`` fitted over every net (least squares), ``S^w`` is ``F^(b w)``
    up to a constant factor that ranks no net differently: the exponent is ``b * reward_w``.
    """
    flops = np.log([net.flops for net in table.nets])
    step = np.log([net.step_time_ms for net in table.nets])
    slope = float(np.polyfit(flops, step, 1)[0])
    return slope * table.config.reward_w


def method_config(
    table: Table, method: Method, *, budget: int, seed: int, workers: int
) -> SearchConfig:
    """The search config a method's replay runs with: the table's, with the method's objective,
    early stopping and reward, ``budget`` trials, ``workers`` at a time and the sampler seeded by
    ``seed``."""
    base = table.config
    evaluation = {**base.evaluation, "reward_cost": method.reward_cost}
    reward_w = flops_exponent(table) if method.reward_cost == "flops" else base.reward_w
    return base.replace(
        study=f"{method.name}-b{budget}-s{seed}",
        objective=method.objective,
        sampler=method.sampler,
        population_size=max(2, method.startup_for(budget)),
        startup_trials=method.startup_for(budget),
        early_stopping=method.early_stopping,
        trials=budget,
        concurrent=workers,
        seed=seed,
        reward_w=reward_w,
        evaluation=evaluation,
        storage=None,
    )


@dataclass
class ReplayTrial:
    """One trial of a replay, as its worker saw it.

    Attributes:
        index: the order it was asked in (0, 1, ...), as Tune numbers trials.
        number: the study's trial number (refused specs, if any, take numbers too).
        hash: its net.
        start, end: simulated seconds from the search's start.
        epochs: the epochs it trained (0: a reused result).
        state: ``complete``, ``stopped``, ``failed`` or ``reused``.
        reward: the reward the search recorded for it (its held-out accuracy, the method's cost
            term); None for a stopped or failed trial.
    """

    index: int
    number: int
    hash: str
    start: float
    end: float = math.nan
    epochs: int = 0
    state: str = "running"
    reward: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class _SimTrial:
    """What Tune's schedulers read of a trial: its id, status, config and last result."""

    def __init__(self, trial_id: str, config: dict[str, Any]) -> None:
        from ray.tune.experiment import Trial

        self.trial_id = trial_id
        self.config = config
        self.status = Trial.PENDING
        self.last_result: dict[str, Any] = {}


@dataclass
class _Controller:
    """The part of Tune's controller its schedulers call: the trials."""

    trials: list[_SimTrial] = field(default_factory=list)

    def get_trials(self) -> list[_SimTrial]:
        return self.trials


class _Records:
    """The figures a table's net reports in one method's search, as ``evaluate_candidate`` puts
    them (and ``run_trial`` adds ``final`` to the closing record)."""

    def __init__(self, table: Table, config: SearchConfig, timing_pass: int | None) -> None:
        self.config = config
        self.reference = table.reference
        self.reference_step_ms = table.reference_step_time(timing_pass)
        self.clock_scale = table.clock_scale
        self.timing_pass = timing_pass
        self.flops = config.eval_config().reward_cost == "flops"

    def figures(self, net: Net) -> dict[str, Any]:
        step_ms = net.step_time_of_pass(self.timing_pass)
        step_norm = step_ms / self.reference_step_ms
        return {
            "spec": net.spec,
            "hash": net.hash,
            "step_time_ms": step_ms,
            "step_time_norm": step_norm,
            "params": net.params,
            "params_norm": net.params / self.reference["params"],
            "flops": net.flops,
            "flops_norm": net.flops / self.reference["flops"],
            "peak_memory_mb": None,
        }

    def score(self, accuracy: float, figures: Mapping[str, Any]) -> float:
        cost = figures["flops_norm"] if self.flops else figures["step_time_norm"]
        config = self.config
        return reward(accuracy, cost, figures["params_norm"], config.reward_w, config.reward_v)

    def epoch(self, net: Net, seed: int, epoch: int, seconds: float) -> dict[str, Any]:
        run = net.runs[seed]
        figures = self.figures(net)
        accuracy = run.accuracy[epoch - 1]
        return {
            **figures,
            "epoch": float(epoch),
            "accuracy": accuracy,
            "train_loss": run.train_loss[epoch - 1] if len(run.train_loss) >= epoch else None,
            "reward": self.score(accuracy, figures),
            "epochs": epoch,
            "train_seconds": seconds,
        }

    def final(self, net: Net, seed: int, seconds: float) -> dict[str, Any]:
        run = net.runs[seed]
        figures = self.figures(net)
        record = {
            **figures,
            "name": net.hash,
            "reward_cost": "flops" if self.flops else "step_time",
            "epochs": self.config.epochs,
            "image_size": self.config.image_size,
            "timing_image_size": self.config.timing_size,
            "batch_size": self.config.batch_size,
            "device": "cpu",
            "node": "replay",
            "train_seconds": seconds,
            "duration_s": seconds,
            "violations": "",
            "final": True,
        }
        if not run.ok:
            return {**record, "status": "failed", "failure": run.failure or "failed"}
        accuracy = run.accuracy[-1]
        return {
            **record,
            "status": "ok",
            "failure": "",
            "accuracy": accuracy,
            "test_accuracy": run.test_accuracy,
            "reward": self.score(accuracy, figures),
        }


def table_reward(
    table: Table, method: Method, net: Net, seed: int, timing_pass: int | None = None
) -> float | None:
    """The reward a search of ``method`` scores ``net``'s run with ``seed`` with, from the
    table's figures: its held-out accuracy, and the step times (the net's and the reference's)
    of timing pass ``timing_pass`` (None: their medians); None for a failed run."""
    config = method_config(table, method, budget=1, seed=seed, workers=1)
    return _Records(table, config, timing_pass).final(net, seed, 0.0).get("reward")


def replay(
    table: Table,
    method: Method,
    *,
    budget: int,
    seed: int,
    table_seed: int | None = None,
    timing_pass: int | None = None,
    workers: int = 2,
    startup: int | None = None,
) -> list[ReplayTrial]:
    """One search of ``budget`` trials with ``method`` against ``table`` (see the module).

    Args:
        table: the recorded table.
        method: the search method.
        budget: trials the search runs (Tune's ``num_samples``).
        seed: the sampler's seed (the search config's ``seed``).
        table_seed: which recorded seed's runs the trials report (default: ``seed``'s turn
            among the table's seeds, ``seeds[seed % len(seeds)]``).
        timing_pass: which timing pass's step times (each net's and the reference's) the
            trials report, as a live search reports the one measurement it made of each net
            (default: ``seed``'s turn, ``seed % table.timing_passes``).
        workers: trials at once.
        startup: the sampler's random start-up trials (default: the method config's,
            :func:`startup_trials` of the budget).

    Returns:
        Every trial, in the order they were asked for, with its simulated start and end.
    """
    import optuna
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import FIFOScheduler, TrialScheduler

    from nas.search.driver import early_stopping
    from nas.search.searcher import StudySearcher
    from nas.search.study import create_study

    if table_seed is None:
        table_seed = table.seeds[seed % len(table.seeds)]
    if timing_pass is None:
        timing_pass = seed % table.timing_passes
    config = method_config(table, method, budget=budget, seed=seed, workers=workers)
    storage = optuna.storages.InMemoryStorage()
    create_study(storage, config)
    searcher = StudySearcher(
        config.space,
        config.study,
        lambda: storage,
        mode=config.objective,
        sampler=method.sampler,
        seed=config.seed,
        population_size=config.population_size,
        startup_trials=config.startup_trials if startup is None else startup,
        driver="replay",
        constraints=config.constraints,
        image_size=config.timing_size,
    )
    scheduler = early_stopping(config) or FIFOScheduler()
    per_epoch = config.early_stopping  # as the search's trainable reports (driver._trainable)
    nets = table.by_hash()
    records = _Records(table, config, timing_pass)
    controller = _Controller()
    trials: list[ReplayTrial] = []
    by_id: dict[str, tuple[_SimTrial, ReplayTrial]] = {}
    events: list[tuple[float, int, str, dict[str, Any]]] = []
    order = itertools.count()
    running = 0
    now = 0.0

    def start_trials() -> None:
        nonlocal running
        while running < workers and len(trials) < budget:
            trial_id = f"{len(trials):05d}"
            trial_config = searcher.suggest(trial_id)
            sim = _SimTrial(trial_id, trial_config)
            controller.trials.append(sim)
            scheduler.on_trial_add(controller, sim)
            chosen = scheduler.choose_trial_to_run(controller)
            chosen.status = Trial.RUNNING
            spec_hash = _spec_hash(trial_config)
            row = ReplayTrial(len(trials), trial_config["number"], spec_hash, start=now)
            trials.append(row)
            by_id[trial_id] = (chosen, row)
            running += 1
            for when, result in _reports(trial_config, nets, table_seed, records, per_epoch):
                heapq.heappush(events, (now + when, next(order), trial_id, result))

    def end(sim: _SimTrial, row: ReplayTrial, state: str) -> None:
        nonlocal running
        result = sim.last_result
        scheduler.on_trial_complete(controller, sim, result)
        searcher.on_trial_complete(sim.trial_id, result=result)
        sim.status = Trial.TERMINATED
        row.end, row.state = now, state
        row.epochs = 0 if state == "reused" else int(result.get("epochs") or 0)
        if state in ("complete", "reused"):
            row.reward = result.get("reward")
        running -= 1

    start_trials()
    while events:
        now, _, trial_id, result = heapq.heappop(events)
        sim, row = by_id[trial_id]
        if sim.status != Trial.RUNNING:
            continue  # stopped earlier: its later reports never came
        result = {**result, "trial_id": trial_id, "done": False}
        decision = scheduler.on_trial_result(controller, sim, result)
        if decision == TrialScheduler.CONTINUE:
            searcher.on_trial_result(trial_id, result)
        sim.last_result = result
        if decision == TrialScheduler.STOP or result.get("final"):
            if decision != TrialScheduler.STOP:
                # A function trainable that returned: Tune shows its last result once more.
                scheduler.on_trial_result(controller, sim, {**result, "done": True})
            end(sim, row, _state(result, sim.config))
            start_trials()
    return trials


def _spec_hash(trial_config: Mapping[str, Any]) -> str:
    from searchspace.spec import ArchSpec

    return ArchSpec.from_string(trial_config["spec"]).hash


def _reports(
    trial_config: Mapping[str, Any],
    nets: Mapping[str, Net],
    seed: int,
    records: _Records,
    per_epoch: bool,
) -> list[tuple[float, dict[str, Any]]]:
    """A trial's reports and when each comes, in seconds from its start, each with Tune's
    ``training_iteration``."""
    if trial_config.get("cached"):
        # run_trial reports a reused record once, at once.
        return [(0.0, {**trial_config["cached"], "final": True, "training_iteration": 1})]
    net = nets[_spec_hash(trial_config)]
    run = net.runs[seed]
    epoch_times, end = run.report_times(per_epoch)
    # CPU seconds as one machine would have spent them (a recording spans machines).
    scale = records.clock_scale(run)
    epoch_times, end = [t * scale for t in epoch_times], end * scale
    reports = [
        (seconds, records.epoch(net, seed, epoch, seconds))
        for epoch, seconds in enumerate(epoch_times[: len(run.accuracy)], start=1)
    ]
    reports.append((end, records.final(net, seed, end)))
    return [
        (when, {**result, "training_iteration": iteration})
        for iteration, (when, result) in enumerate(reports, start=1)
    ]


def _state(result: Mapping[str, Any], trial_config: Mapping[str, Any]) -> str:
    if not result.get("final"):
        return "stopped"
    if result.get("status") == "failed":
        return "failed"
    return "reused" if trial_config.get("cached") else "complete"


def prefix(trials: Sequence[ReplayTrial], budget: int) -> list[ReplayTrial]:
    """The replay of a search of ``budget`` trials inside one of more trials with the same
    settings and no scheduler: its first ``budget`` trials.

    Exact without a scheduler: trial ``k`` is asked for after the ends of trials before it only,
    and no later trial changes a trial's reports or their times. (With a scheduler, a later
    trial can reach a rung before an earlier one and move its cut-off.)
    """
    return [trial for trial in trials if trial.index < budget]
