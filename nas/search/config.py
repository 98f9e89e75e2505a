"""Search configuration: one YAML file, validated, with command-line overrides.

Unknown keys are errors, not ignored: a typo in a config that silently falls back to a default
would waste a cluster's night. Imports no torch and no Ray: a bad config is refused at once.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from nas.errors import ConfigError
from nas.evaluate.config import EvalConfig
from nas.search.constraints import Constraints
from results.schema import OBJECTIVES_BY_MODE
from results.storage import hide_password
from searchspace.checks import check_bool, check_choice, check_int, check_number
from searchspace.errors import EffnasError
from searchspace.files import load_yaml_file
from searchspace.space import SearchSpace

__all__ = ["SAMPLERS", "Resources", "SearchConfig"]

#: Every sampler a search may use (:func:`nas.search.searcher.make_sampler` says what each is).
SAMPLERS = ("tpe", "tpe-univariate", "gp", "nsga2", "random")
#: The random start-up trials Optuna's TPE and GP samplers draw unless told otherwise.
OPTUNA_STARTUP_TRIALS = 10
_STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
#: Evaluation settings a search config gives at its top level; their defaults are EvalConfig's
#: unless a search wants its own (a reduced image size, brief training).
_EVAL_DEFAULTS = {f.name: f.default for f in fields(EvalConfig)}


@dataclass(frozen=True)
class Resources:
    """What each trial asks Ray for. Timing on a GPU always takes a whole GPU (never a fraction)."""

    cpus: float = 1.0
    gpus: int = 0

    def __post_init__(self) -> None:
        check_number("resources.cpus", self.cpus, 0.0, error=ConfigError)
        if isinstance(self.gpus, bool) or not isinstance(self.gpus, int) or self.gpus < 0:
            raise ConfigError(
                f"resources.gpus must be a whole number >= 0 (a shared GPU makes step times "
                f"meaningless), got {self.gpus!r}"
            )


@dataclass(frozen=True)
class SearchConfig:
    """Everything a search needs. See ``configs/quick.yaml`` for a commented example.

    Attributes:
        study: study name; the run lives in ``runs_dir/study``.
        space: the search space.
        dataset: dataset spec ``NAME[:PATH]`` (see ``nas.data``).
        image_size: the brief training's image size (reduced, as in the paper).
        timing_image_size: the image size at which each candidate's training step is timed and
            its FLOPs counted (the reference's too): the size the final training pays for.
            ``None``: the space's ``train_resolution``. See :attr:`timing_size`.
        batch_size: training batch size; step time is measured at this size.
        epochs: brief-training epochs per candidate.
        trials: number of candidates to evaluate.
        concurrent: how many trials run at once.
        resources: CPUs and GPUs per trial.
        objective: ``reward`` (one objective, A * S^w * P^v) or ``pareto`` (accuracy, normalized
            step time and parameters as three objectives).
        reward_w, reward_v: the reward's exponents for step time and parameters.
        sampler: ``tpe`` (multivariate; with ``pareto``, multi-objective TPE),
            ``tpe-univariate``, ``gp`` (Optuna's Gaussian-process sampler), ``nsga2`` or
            ``random``.
        population_size: NSGA-II's generation size (``sampler: nsga2``; Optuna's default 50).
            Its first generation is drawn at random, so a search of fewer trials than this is a
            random search: size it to a fraction of ``trials`` (a quarter gives four
            generations).
        startup_trials: the random trials TPE or GP draws before it models the study
            (``sampler: tpe``, ``tpe-univariate`` or ``gp``); ``None``: Optuna's default, 10.
            A search of no more trials than this is a random search.
        early_stopping: stop weak candidates after their first epochs: Tune's ASHA on the
            reward in ``reward`` mode; in ``pareto`` mode
            :class:`~nas.search.schedulers.ParetoASHA` (MO-ASHA), which keeps a third of the
            candidates at each rung (epochs 1, 3, 9, ... below the last) by non-dominated rank,
            an epsilon-net inside a front, those that broke a measured constraint last. A
            stopped trial keeps the figures it reached (``PRUNED``, ``status: stopped``).
        storage: Optuna storage URL; default ``sqlite:///<runs_dir>/<study>/study.db``. A
            PostgreSQL URL may hold the password; the search uses it and saves the URL
            without it (see :mod:`nas.search.driver`).
        seed: seed of the sampler and of every candidate's training.
        runs_dir: where run directories are made.
        max_failures: how many times Tune retries a trial whose worker died.
        evaluation: further settings of the candidate evaluation (lr, optimizer, timing steps,
            ...): any other field of :class:`~nas.evaluate.config.EvalConfig`.
        constraints: bounds a net must stay within to count (:mod:`nas.search.constraints`):
            ``max_params`` and ``max_flops`` (checked before a candidate is trained: a spec
            that breaks one is never sent to a worker), ``max_step_time_ms``,
            ``max_step_time_norm``, ``max_peak_memory_mb`` (GPU trials only) and
            ``min_accuracy`` (measured, passed to the sampler). In YAML a mapping, e.g.
            ``{max_params: 5M, max_step_time_norm: 1.2}``.
    """

    space: SearchSpace
    study: str = "search"
    dataset: str = _EVAL_DEFAULTS["dataset"]
    image_size: int = 32
    timing_image_size: int | None = None
    batch_size: int = _EVAL_DEFAULTS["batch_size"]
    epochs: int = 2
    trials: int = 12
    concurrent: int = 1
    resources: Resources = field(default_factory=Resources)
    objective: str = "reward"
    reward_w: float = _EVAL_DEFAULTS["reward_w"]
    reward_v: float = _EVAL_DEFAULTS["reward_v"]
    sampler: str = "tpe"
    population_size: int = 50
    startup_trials: int | None = None
    early_stopping: bool = True
    storage: str | None = None
    seed: int = _EVAL_DEFAULTS["seed"]
    runs_dir: str = "runs"
    max_failures: int = 1
    evaluation: Mapping[str, Any] = field(default_factory=dict)
    constraints: Constraints = field(default_factory=Constraints)

    def __post_init__(self) -> None:
        # A mapping (from YAML or a caller) becomes Constraints, validated.
        object.__setattr__(self, "constraints", Constraints.from_dict(self.constraints))
        if "max_peak_memory_mb" in self.constraints.bounds and not self.resources.gpus:
            raise ConfigError(
                "constraints.max_peak_memory_mb needs GPU trials (resources.gpus >= 1): peak "
                "memory is measured on a GPU only"
            )
        if not isinstance(self.study, str) or not _STUDY_NAME.match(self.study):
            raise ConfigError(
                f"study must be a name of letters, digits, '_', '.', '-', got {self.study!r}"
            )
        check_int("trials", self.trials, 1, ConfigError)
        check_int("concurrent", self.concurrent, 1, ConfigError)
        check_int("max_failures", self.max_failures, 0, ConfigError)
        check_choice("objective", self.objective, OBJECTIVES_BY_MODE, ConfigError)
        check_choice("sampler", self.sampler, SAMPLERS, ConfigError)
        # Optuna's NSGA-II needs two parents to cross over.
        check_int("population_size", self.population_size, 2, ConfigError)
        if self.startup_trials is not None:
            check_int("startup_trials", self.startup_trials, 1, ConfigError)
        check_bool("early_stopping", self.early_stopping, ConfigError)
        if not isinstance(self.runs_dir, str) or not self.runs_dir:
            raise ConfigError(f"runs_dir must be a directory path, got {self.runs_dir!r}")
        if self.storage is not None and (
            not isinstance(self.storage, str) or "://" not in self.storage
        ):
            shown = hide_password(self.storage) if isinstance(self.storage, str) else self.storage
            raise ConfigError(
                f"storage must be a SQLAlchemy URL such as sqlite:///path.db or "
                f"postgresql://user@host/db, got {shown!r}"
            )
        if not isinstance(self.evaluation, Mapping):
            raise ConfigError(f"evaluation must be a mapping, got {self.evaluation!r}")
        self.eval_config()  # validate the evaluation settings now, not on a worker
        if self.timing_image_size is not None:
            check_int("timing_image_size", self.timing_image_size, 1, ConfigError)
        stride = 2 * math.prod(stage.stride for stage in self.space.stages)
        sizes = (("image_size", self.image_size), ("timing_image_size", self.timing_size))
        for name, size in sizes:
            if size < stride:
                raise ConfigError(
                    f"{name} must be at least the space's total stride {stride}, got {size}"
                )

    # -- derived ----------------------------------------------------------------------------------

    @property
    def timing_size(self) -> int:
        """The image size steps are timed and FLOPs counted at: :attr:`timing_image_size`, else
        the space's train resolution (the final training's)."""
        if self.timing_image_size is None:
            return self.space.train_resolution
        return self.timing_image_size

    def eval_config(self) -> EvalConfig:
        """The per-candidate evaluation settings this search uses.

        Raises:
            ConfigError: ``evaluation`` holds an unknown key or a bad value.
        """
        fixed = {
            "dataset": self.dataset,
            "image_size": self.image_size,
            "timing_image_size": self.timing_size,
            "batch_size": self.batch_size,
            "epochs": self.epochs,
            "seed": self.seed,
            "reward_w": self.reward_w,
            "reward_v": self.reward_v,
        }
        allowed = [f.name for f in fields(EvalConfig) if f.name not in fixed]
        for key in self.evaluation:
            if key not in allowed:
                where = "set at the top level" if key in fixed else f"allowed: {', '.join(allowed)}"
                raise ConfigError(f"unknown key evaluation.{key} ({where})")
        EvalConfig(**fixed)  # the top-level settings, named as the user wrote them
        try:
            return EvalConfig(**fixed, **self.evaluation)
        except EffnasError as error:
            raise ConfigError(f"evaluation: {error}") from None

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.study

    def sampler_summary(self) -> str:
        """One line on how the sampler chooses over this config's trials: its random start-up
        (TPE's and GP's start-up trials, NSGA-II's first generation), and whether the search
        ends before the sampler models anything."""
        name = self.sampler
        if name == "random":
            return "sampler random"
        if name == "nsga2":
            start, what = self.population_size, f"generations of {self.population_size}"
            then = "bred from earlier generations"
        else:
            then = "modelled"
            start = OPTUNA_STARTUP_TRIALS if self.startup_trials is None else self.startup_trials
            default = " (Optuna's default)" if self.startup_trials is None else ""
            what = f"{start} random start-up trials{default}"
        if start >= self.trials:
            return (
                f"sampler {name}: {what}, so all {self.trials} trials are drawn at random "
                f"(a random search)"
            )
        return f"sampler {name}: {what}, then {self.trials - start} trials {then}"

    @property
    def storage_url(self) -> str:
        if self.storage:
            return self.storage
        return f"sqlite:///{(self.run_dir / 'study.db').resolve()}"

    def replace(self, **changes: Any) -> SearchConfig:
        return dataclasses.replace(self, **changes)

    # -- serial forms -----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["space"] = self.space.to_dict()
        data["resources"] = dataclasses.asdict(self.resources)
        data["evaluation"] = dict(self.evaluation)
        data["constraints"] = self.constraints.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "config") -> SearchConfig:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: a search config must be a YAML mapping, got {data!r}")
        allowed = [f.name for f in fields(cls)]
        for key in data:
            if key not in allowed:
                raise ConfigError(f"{source}: unknown key {key!s} (allowed: {', '.join(allowed)})")
        if "space" not in data:
            raise ConfigError(f"{source}: space is required")
        kwargs = dict(data)
        try:
            kwargs["space"] = SearchSpace.from_dict(data["space"])
            resources = data.get("resources", {})
            if not isinstance(resources, Mapping):
                raise ConfigError(f"resources must be a mapping, got {resources!r}")
            for key in resources:
                if key not in ("cpus", "gpus"):
                    raise ConfigError(f"unknown key resources.{key} (allowed: cpus, gpus)")
            kwargs["resources"] = Resources(**resources)
            if kwargs.get("evaluation") is None:
                kwargs.pop("evaluation", None)
            return cls(**kwargs)
        except EffnasError as error:
            raise ConfigError(f"{source}: {error}") from None

    @classmethod
    def load(cls, path: str | Path) -> SearchConfig:
        data = load_yaml_file(path, "config", ConfigError)
        return cls.from_dict(data, source=str(path))
