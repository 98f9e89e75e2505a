"""The result-record schema: what a trial records, in one place.

:data:`RECORD` lists every field of the record a candidate's evaluation produces
(``nas.evaluate.EvalResult`` is generated from it), which the search stores on each Optuna trial
as user attributes and :func:`results.study_frame` turns into columns. The fields that are
metrics say which way is better: accuracy (and reward, images/s) high, every cost low.
Non-dominated sorting, reports, dashboards and the CLI all take their directions from
:data:`METRICS`, so a user names an objective and never its direction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from results.errors import ResultsError

__all__ = [
    "DEFAULT_OBJECTIVES",
    "METRICS",
    "OBJECTIVES_BY_MODE",
    "RECORD",
    "RECORD_KEYS",
    "REFUSED",
    "REPORTED_ONLY",
    "STOPPED",
    "Field",
    "describe_objectives",
    "parse_objectives",
]


@dataclass(frozen=True)
class Field:
    """One field of the record.

    Attributes:
        name: its key in the record, the trial's user attributes and the study frame.
        kind: ``str``, ``int`` or ``float``; any number field is ``None`` when not measured.
        description: what it holds, for docs and ``nas evaluate --json`` readers.
        maximize: for a metric, whether higher is better; ``None`` for a field that is not one.
        label: how a figure's axis names the metric.
    """

    name: str
    kind: type
    description: str
    maximize: bool | None = None
    label: str = ""

    @property
    def integer(self) -> bool:
        return self.kind is int

    @property
    def direction(self) -> str:
        """``"maximize"`` or ``"minimize"``, as Optuna spells study directions."""
        return "maximize" if self.maximize else "minimize"


#: Every field of the record, in the order the study frame shows them.
RECORD: tuple[Field, ...] = (
    Field("name", str, "the spec's label (its name, else its hash)"),
    Field("spec", str, "canonical spec string, with the dataset's classes"),
    Field("hash", str, "the spec's stable hash"),
    Field("accuracy", float, "top-1 on the held-out split, 0..1; None if the candidate failed",
          True, "top-1 accuracy"),
    Field("test_accuracy", float, "top-1 on the test split, 0..1, measured once after training; "
          "reported only: no search decision reads it; None if failed or stopped", True,
          "test top-1 accuracy"),
    Field("step_time_ms", float, "median time of one training step at timing_image_size, ms",
          False, "train step time (ms)"),
    Field("step_time_norm", float, "step_time_ms / reference_step_time_ms", False,
          "step time / reference"),
    Field("params", int, "trainable parameters", False, "parameters"),
    Field("params_norm", float, "params / the reference's", False, "parameters / reference"),
    Field("flops", int, "fvcore FLOPs of one image at timing_image_size (a multiply-add is one)",
          False, "FLOPs"),
    Field("flops_norm", float, "flops / the reference's at the same image size", False,
          "FLOPs / reference"),
    Field("reward", float, "accuracy * S^w * params_norm^v, S the reward_cost's normalized "
          "figure; None if failed", True, "reward A·S^w·P^v"),
    Field("reward_cost", str, "what S in the reward is: step_time (step_time_norm, the "
          "paper's) or flops (flops_norm)"),
    Field("device", str, "cpu or cuda:<GPU model>"),
    Field("node", str, "where it ran: in a search the Ray node, as <IP>/<first 8 hex digits of "
          "its node ID>; else the host name"),
    Field("duration_s", float, "wall time of the whole evaluation, s", False,
          "trial duration (s)"),
    Field("failure", str, "why the candidate failed; empty when ok"),
    Field("status", str, "ok or failed; in a search also stopped (early, by the scheduler) or "
          "refused (broke a constraint before training: never run)"),
    Field("violations", str, "the search's constraints this net broke, e.g. 'params 6.1M > "
          "max_params 5M'; empty when it broke none (a feasible trial)"),
    Field("step_time_spread_ms", float, "interquartile range of the timed steps, ms", False,
          "step time IQR (ms)"),
    Field("reference_step_time_ms", float, "the reference net's median step time, ms"),
    Field("images_per_second", float, "batch_size / step time", True, "training images/s"),
    Field("peak_memory_mb", float, "peak GPU memory of the training step, MiB; None on a CPU",
          False, "peak memory (MB)"),
    Field("epochs", int, "training epochs"),
    Field("image_size", int, "the brief training's image size (training and accuracy)"),
    Field("timing_image_size", int, "image size of the timed step, FLOPs and peak memory: the "
          "final training's, whatever size the brief training used"),
    Field("batch_size", int, "training batch size"),
    Field("train_seconds", float, "wall time of the training epochs, s", False,
          "training time (s)"),
)  # fmt: skip

#: The ``status`` of a trial a search stopped early (its figures are the ones it reached).
STOPPED = "stopped"
#: The ``status`` of a net a search refused before training: it broke a constraint that the
#: spec alone shows (parameters, FLOPs). It never ran and spent nothing.
REFUSED = "refused"

#: The record's keys, in order.
RECORD_KEYS: tuple[str, ...] = tuple(field.name for field in RECORD)

#: Figures a trial reports but no search decision may read (sampler, scheduler, constraint).
REPORTED_ONLY: frozenset[str] = frozenset({"test_accuracy"})

#: Every field that may be an objective, by name.
METRICS: dict[str, Field] = {field.name: field for field in RECORD if field.maximize is not None}

#: The objectives of a search, per ``objective`` mode: the paper's reward alone, or the
#: trade-off it weighs (accuracy, normalized step time, parameters) as a Pareto search.
OBJECTIVES_BY_MODE: dict[str, tuple[str, ...]] = {
    "reward": ("reward",),
    "pareto": ("accuracy", "step_time_norm", "params"),
}

#: The objectives a front is taken over when the study does not name several.
DEFAULT_OBJECTIVES: tuple[str, ...] = OBJECTIVES_BY_MODE["pareto"]


def parse_objectives(objectives: str | Iterable[str]) -> tuple[str, ...]:
    """Validate objective names given as ``"accuracy,step_time_ms"`` or a sequence of names.

    Raises:
        ResultsError: an empty list, a repeated name or a name not in :data:`METRICS`.
    """
    names = objectives.split(",") if isinstance(objectives, str) else list(objectives)
    names = [name.strip() for name in names]
    if not names or any(not name for name in names):
        raise ResultsError(f"objectives must be comma-separated metric names, got {objectives!r}")
    for name in names:
        if name not in METRICS:
            raise ResultsError(f"unknown objective {name!r} (known: {', '.join(sorted(METRICS))})")
    if len(set(names)) != len(names):
        raise ResultsError(f"objectives must not repeat a name, got {','.join(names)}")
    return tuple(names)


def describe_objectives(names: Sequence[str]) -> str:
    """``"accuracy (max), params (min)"``: objectives with their directions, for headings."""
    return ", ".join(f"{name} ({'max' if METRICS[name].maximize else 'min'})" for name in names)
