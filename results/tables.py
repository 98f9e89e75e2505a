"""The Pareto front as text: what ``nas front`` prints and the search prints when it ends."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from results.pareto import feasible, pareto_front, reward_best
from results.schema import (
    DEFAULT_OBJECTIVES,
    METRICS,
    REFUSED,
    describe_objectives,
    parse_objectives,
)

__all__ = [
    "default_objectives",
    "format_cell",
    "format_front",
    "front_records",
    "front_table",
    "infeasible_lines",
    "infeasible_trials",
    "node_columns",
    "reward_best_line",
    "trial_counts",
    "winners_curse",
]

#: Columns of the printed table, besides any objective that is not among them.
TABLE_COLUMNS = (
    "number",
    "accuracy",
    "test_accuracy",
    "step_time_ms",
    "step_time_norm",
    "params",
    "flops",
    "reward",
    "spec",
)

#: How trial states read in summaries (a pruned trial is one the search stopped early).
STATE_WORDS = {"COMPLETE": "complete", "FAIL": "failed", "PRUNED": "stopped early",
               "RUNNING": "running", "WAITING": "waiting"}  # fmt: skip


#: Columns of the table of trials that broke a constraint.
INFEASIBLE_COLUMNS = ("number", "state", "violations", "spec")
#: At most this many refused nets are listed one by one; the rest are counted.
REFUSED_LISTED = 10


def default_objectives(frame: pd.DataFrame) -> tuple[str, ...]:
    """The study's own objectives when it is multi-objective and names known metrics, else the
    paper's trade-off (accuracy, normalized step time, parameters)."""
    names = tuple(frame.attrs.get("objectives") or ())
    if len(names) > 1 and all(name in METRICS for name in names):
        return names
    return DEFAULT_OBJECTIVES


def _missing(value: Any) -> bool:
    """None, NaN, NA or NaT (a running trial has no end time, a failed one no accuracy)."""
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def format_cell(column: str, value: Any) -> str:
    """One metric as a table shows it: accuracy in %, sizes in k/M/G, "-" when missing."""
    if _missing(value):
        return "-"
    if column in ("accuracy", "test_accuracy"):
        return f"{100 * value:.2f}%"
    if column in ("params", "flops"):
        scaled = float(value)
        for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
            if abs(scaled) >= size:
                return f"{scaled / size:.2f}{unit}"
        return f"{int(value)}"
    if column == "number":
        return f"#{int(value)}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def node_columns(frame: pd.DataFrame) -> tuple[str, ...]:
    """``("node",)`` when the study's trials ran on several Ray nodes, else nothing: the column
    front tables add, so that a multi-node search says where each trial ran."""
    nodes = {node for node in frame["node"] if isinstance(node, str) and node}
    return ("node",) if len(nodes) > 1 else ()


def front_table(
    front: pd.DataFrame, objectives: Sequence[str] = (), extra: Sequence[str] = ()
) -> str:
    """A plain-text table of trials: number, metrics (objectives included), the ``extra``
    columns (e.g. :func:`node_columns`) and the spec last."""
    columns = [c for c in TABLE_COLUMNS if c != "spec"]
    columns += [name for name in (*objectives, *extra) if name not in columns]
    columns.append("spec")
    return _table(front, columns)


def _table(trials: pd.DataFrame, columns: Sequence[str]) -> str:
    """Trials as a plain-text table of ``columns``: numbers right-aligned, text left."""
    headers = {
        "number": "trial",
        "accuracy": "held-out",
        "test_accuracy": "test",
        "step_time_ms": "step ms",
        "step_time_norm": "step/ref",
    }
    rows = [[headers.get(column, column) for column in columns]]
    for _, trial in trials.iterrows():
        rows.append([format_cell(column, trial[column]) for column in columns])
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    lines = []
    for index, row in enumerate(rows):
        cells = [
            cell.ljust(width) if column in _TEXT_COLUMNS else cell.rjust(width)
            for cell, width, column in zip(row, widths, columns, strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


#: Columns whose cells read left to right.
_TEXT_COLUMNS = frozenset({"spec", "node", "state", "violations"})


def trial_counts(frame: pd.DataFrame) -> str:
    """``"12 trials: 9 complete, 2 stopped early, 1 failed; 5 nets refused before training"``:
    the trials a search ran, by state, and apart from them the nets it refused (they broke a
    constraint before training and never ran)."""
    refused = (frame["status"] == REFUSED).to_numpy(dtype=bool)
    states = frame.loc[~refused, "state"].value_counts()
    counts = ", ".join(
        f"{count} {STATE_WORDS.get(state, state.lower())}" for state, count in states.items()
    )
    text = f"{int((~refused).sum())} trials: {counts or 'none yet'}"
    if refused.any():
        text += f"; {int(refused.sum())} nets refused before training"
    return text


def infeasible_trials(frame: pd.DataFrame) -> tuple[pd.DataFrame, int, int]:
    """The trials that broke a constraint, as tables show them: every one that ran, then the
    first :data:`REFUSED_LISTED` refused nets (``state`` reads ``refused`` for them).

    Returns:
        ``(trials, ran, refused)``: the rows to show, and how many ran and were refused.
    """
    infeasible = frame[~feasible(frame)]
    refused = infeasible["status"] == REFUSED
    shown = pd.concat([infeasible[~refused], infeasible[refused].head(REFUSED_LISTED)])
    shown = shown.assign(state=shown["state"].where(shown["status"] != REFUSED, REFUSED))
    return shown, int((~refused).sum()), int(refused.sum())


def infeasible_lines(frame: pd.DataFrame) -> list[str]:
    """The trials that broke a constraint (:func:`infeasible_trials`) as text, apart from the
    front; empty when every trial is feasible."""
    shown, ran, refused = infeasible_trials(frame)
    if shown.empty:
        return []
    lines = [
        f"infeasible (broke a constraint; on no front): {ran} trials ran, {refused} nets "
        "refused before training",
        _table(shown, INFEASIBLE_COLUMNS),
    ]
    if refused > REFUSED_LISTED:
        lines.append(f"... and {refused - REFUSED_LISTED} more refused nets")
    return lines


def format_front(frame: pd.DataFrame, objectives: Sequence[str] | str | None = None) -> str:
    """The study's state, its Pareto front over ``objectives`` as a table, the trials that broke
    a constraint (apart: the front holds feasible trials only) and the reward-best feasible
    trial: a complete text block (what ``nas front`` and the end of ``nas search`` print). The
    table has a ``node`` column when the study's trials ran on several nodes.

    Args:
        frame: a study frame from :func:`results.load_study_frame`.
        objectives: metric names; default :func:`default_objectives`.

    Raises:
        ResultsError: an unknown objective name.
    """
    names = default_objectives(frame) if objectives is None else parse_objectives(objectives)
    front = pareto_front(frame, names)
    study = frame.attrs.get("study_name", "?")
    mode = frame.attrs.get("mode", "?")
    on = describe_objectives(names)
    of = " (feasible trials)" if not feasible(frame).all() else ""
    lines = [
        f"study {study} ({mode} mode, {trial_counts(frame)})",
        f"Pareto front on {on}{of}: {len(front)} trials",
    ]
    if len(front):
        lines.append(front_table(front, names, node_columns(frame)))
    lines += infeasible_lines(frame)
    best = reward_best(frame)
    if best is not None:
        lines.append(reward_best_line(best))
    return "\n".join(lines)


def winners_curse(trial: pd.Series) -> float | None:
    """A trial's held-out accuracy minus its test accuracy, in points (``None`` when either is
    missing). For the trial a search picked, the held-out figure is the best of many noisy ones,
    so it tends to overstate what the net does on images no decision saw: the winner's curse."""
    heldout, test = trial.get("accuracy"), trial.get("test_accuracy")
    if _missing(heldout) or _missing(test):
        return None
    return 100 * (float(heldout) - float(test))


def reward_best_line(best: pd.Series) -> str:
    """One line on the reward-best trial: reward, held-out and test accuracy and the gap
    between them (:func:`winners_curse`), step time, parameters and spec."""
    step = format_cell("step_time_ms", best["step_time_ms"])
    params = format_cell("params", best["params"])
    accuracy = f"held-out accuracy {format_cell('accuracy', best['accuracy'])}"
    gap = winners_curse(best)
    if gap is not None:
        accuracy += (
            f", test {format_cell('test_accuracy', best['test_accuracy'])} "
            f"(held-out - test {gap:+.2f} points)"
        )
    return (
        f"reward-best: trial #{best['number']} reward {best['reward']:.4g}, {accuracy}, "
        f"{step} ms/step, {params} params: {best['spec'] or '-'}"
    )


def front_records(front: pd.DataFrame) -> list[dict[str, Any]]:
    """Trials as JSON-ready dicts (``None`` for missing values, ISO 8601 times)."""
    records = []
    for _, trial in front.iterrows():
        record = {}
        for column, value in trial.items():
            if _missing(value):
                record[column] = None
            elif isinstance(value, pd.Timestamp) or hasattr(value, "isoformat"):
                record[column] = value.isoformat()
            elif hasattr(value, "item"):  # numpy scalar
                record[column] = value.item()
            else:
                record[column] = value
        records.append(record)
    return records
