"""Figures of a search's progress and of what matters: the hypervolume of the Pareto front as
trials finish (against trials and against wall time), and the importance of each choice for
each objective. Plotly for the report and the dashboard, matplotlib for a PNG.

Several studies share each figure, in the colours of :mod:`results.figures`, so that searches on
one page compare: the hypervolume is normalized over all of them (:mod:`results.hypervolume`).
"""

from __future__ import annotations

import html
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from results.figures import COLORS, WEBGL_ABOVE, study_label
from results.hypervolume import Normalization, hypervolume_progress
from results.importance import (
    TARGET_QUANTILE,
    TOP_TRIALS,
    Importances,
    choice_label,
    param_importances,
    sorted_choices,
)
from results.schema import describe_objectives
from searchspace.files import atomic_write

__all__ = [
    "HYPERVOLUME_PLOTS",
    "IMPORTANCE_NOTE",
    "IMPORTANCE_PREFIX",
    "ProgressResult",
    "hypervolume_trace_name",
    "importance_objectives",
    "progress",
    "save_hypervolume_png",
]

#: Keys of the two hypervolume figures, their titles and what their x axes show.
HYPERVOLUME_PLOTS = {
    "hypervolume-vs-trials": (
        "Hypervolume of the Pareto front against trials",
        "trials finished (completed, failed or stopped)",
    ),
    "hypervolume-vs-time": (
        "Hypervolume of the Pareto front against wall time",
        "wall time since the study's first trial started",
    ),
}
#: Importance figures are keyed ``importance-<objective>``.
IMPORTANCE_PREFIX = "importance-"
#: How the importances are computed, for the report and the dashboard's note.
IMPORTANCE_NOTE = (
    "Which choices matter, by Optuna's PED-ANOVA: how differently each choice's values are "
    f"distributed among a study's best trials (the top {TARGET_QUANTILE:.0%} by the objective, at "
    f"least {TOP_TRIALS} trials) than among all its completed trials. The SE choice of a stage "
    "exists only for its block type; trials with the other block type form their own group "
    "(conditional PED-ANOVA). Importances sum to 1 per objective and study."
)
HYPERVOLUME_AXIS = "hypervolume (fraction of the reference box)"
#: Wall-time units: the first whose limit exceeds the longest study on the page.
_TIME_UNITS = ((120.0, "s", 1.0), (120 * 60.0, "min", 60.0), (np.inf, "h", 3600.0))


def hypervolume_trace_name(label: str) -> str:
    """Name of a study's hypervolume trace (what the browser test looks for)."""
    return f"{label}: hypervolume"


def importance_objectives(objectives: Sequence[str]) -> tuple[str, ...]:
    """The objectives whose importances are shown: ``objectives`` and the reward (what a
    ``reward`` search maximizes; every completed trial records it)."""
    return tuple(objectives) + (() if "reward" in objectives else ("reward",))


@dataclass
class ProgressResult:
    """What :func:`progress` computed for a page of studies.

    Attributes:
        figures: plotly figures by key (:data:`HYPERVOLUME_PLOTS`, then
            ``importance-<objective>`` for each objective some study has importances for);
            a key is absent when nothing could be drawn.
        normalization: the hypervolume's common scale; None when no trial has every objective.
        histories: per study label, :func:`results.hypervolume.hypervolume_progress`'s frame.
        importances: per study label, one :class:`Importances` per objective.
    """

    figures: dict[str, object] = field(default_factory=dict)
    normalization: Normalization | None = None
    histories: dict[str, pd.DataFrame] = field(default_factory=dict)
    importances: dict[str, list[Importances]] = field(default_factory=dict)

    def hypervolume_note(self) -> str:
        """How the hypervolume is normalized, in words (plain text)."""
        if self.normalization is None:
            return "No completed trial has every objective yet: no hypervolume to draw."
        return (
            "Hypervolume of the Pareto front on "
            f"{describe_objectives(self.normalization.objectives)}, all minimized (maximized "
            "metrics negated; positive costs on a log10 scale). "
            f"{self.normalization.describe()} Shown as a fraction of the reference box: 1 would "
            "be one trial that is the best in every objective."
        )

    def hypervolume_subtitle(self) -> str:
        """The normalization in one short line, for the figures' titles."""
        if self.normalization is None:
            return ""
        return (
            "each objective scaled from 0 (best seen) to 1 (worst seen), costs on log10; "
            f"reference point {1 + self.normalization.margin:g}; 1 = best in everything"
        )

    def importance_notes(self) -> list[str]:
        """One line per study whose importances could not be computed for some objectives,
        naming those objectives and why."""
        notes = []
        for label, results in self.importances.items():
            reasons: dict[str, list[str]] = {}
            for result in results:
                if result.reason:
                    reasons.setdefault(result.reason, []).append(result.objective)
            notes += [f"{label} ({', '.join(names)}): {why}" for why, names in reasons.items()]
        return notes


def progress(frames: Sequence[pd.DataFrame], objectives: Sequence[str]) -> ProgressResult:
    """Hypervolume histories, importances and their plotly figures for ``frames``.

    Args:
        frames: study frames with unique labels (:func:`results.figures.study_label`).
        objectives: the hypervolume's objectives; importances are shown for these and the
            reward (:func:`importance_objectives`).
    """
    result = ProgressResult(normalization=Normalization.fit(frames, objectives))
    for frame in frames:
        label = study_label(frame)
        if result.normalization is not None:
            result.histories[label] = hypervolume_progress(frame, result.normalization)
        result.importances[label] = param_importances(frame, importance_objectives(objectives))
    if result.normalization is not None:
        result.figures.update(_hypervolume_figures(result))
    for objective in importance_objectives(objectives):
        by_study = {
            label: next(item for item in items if item.objective == objective)
            for label, items in result.importances.items()
        }
        if any(item.values for item in by_study.values()):
            result.figures[IMPORTANCE_PREFIX + objective] = _importance_figure(objective, by_study)
    return result


def _time_unit(histories: Sequence[pd.DataFrame]) -> tuple[str, float]:
    longest = max((history["elapsed_s"].max() for history in histories if len(history)), default=0)
    return next((unit, size) for limit, unit, size in _TIME_UNITS if longest < limit)


def _title(title: str, subtitle: str) -> dict:
    """A title with a small second line (``<sup>``: plotly.js versions without
    ``title.subtitle``, such as optuna-dashboard's, show it too)."""
    return {"text": f"{title}<br><sup>{html.escape(subtitle)}</sup>", "x": 0.02}


def _hypervolume_figures(result: ProgressResult) -> dict[str, object]:
    import plotly.graph_objects as go

    unit, size = _time_unit(list(result.histories.values()))
    figures = {}
    for key, (title, x_title) in HYPERVOLUME_PLOTS.items():
        figure = go.Figure()
        for index, (label, history) in enumerate(result.histories.items()):
            x = (
                history["finished"]
                if key == "hypervolume-vs-trials"
                else history["elapsed_s"] / size
            )
            scatter = go.Scattergl if len(history) > WEBGL_ABOVE else go.Scatter
            figure.add_trace(
                scatter(
                    x=[float(value) for value in x],
                    y=[float(value) for value in history["hypervolume"]],
                    mode="lines+markers" if len(history) <= 200 else "lines",
                    line={"shape": "hv", "color": COLORS[index % len(COLORS)], "width": 2},
                    marker={"size": 4},
                    name=hypervolume_trace_name(label),
                    customdata=[int(number) for number in history["number"]],
                    hovertemplate=f"{html.escape(label)}<br>after trial #%{{customdata}}: "
                    "hypervolume %{y:.4f}<extra></extra>",
                )
            )
        figure.update_layout(
            title=_title(title, result.hypervolume_subtitle()),
            xaxis={"title": x_title + ("" if key.endswith("trials") else f" ({unit})")},
            yaxis={"title": HYPERVOLUME_AXIS, "rangemode": "tozero"},
            legend={"orientation": "h", "y": -0.2},
            margin={"l": 60, "r": 20, "t": 70, "b": 40},
            height=450,
            template="plotly_white",
        )
        figures[key] = figure
    return figures


def _importance_figure(objective: str, by_study: dict[str, Importances]):
    """Horizontal bars, one per choice in the space's order; one bar colour per study."""
    import plotly.graph_objects as go

    choices = sorted_choices([name for result in by_study.values() for name in result.values])
    labels = [choice_label(name) for name in choices]
    figure = go.Figure()
    for index, (label, result) in enumerate(by_study.items()):
        if not result.values:
            continue
        figure.add_trace(
            go.Bar(
                x=[result.values.get(name, 0.0) for name in choices],
                y=labels,
                orientation="h",
                name=label,
                marker={"color": COLORS[index % len(COLORS)]},
                hovertemplate=f"{html.escape(label)}: %{{y}} %{{x:.3f}} (best {result.top} of "
                f"{result.trials} trials)<extra></extra>",
            )
        )
    studies = len(figure.data)
    figure.update_layout(
        title=_title(
            f"Which choices matter for {describe_objectives([objective])}",
            "PED-ANOVA: how differently the best trials chose than all trials; sums to 1",
        ),
        barmode="group",
        xaxis={"title": "importance", "rangemode": "tozero"},
        yaxis={"categoryorder": "array", "categoryarray": labels[::-1]},
        legend={"orientation": "h", "y": -0.12},
        margin={"l": 130, "r": 20, "t": 70, "b": 40},
        height=int(150 + 16 * len(choices) * max(1.0, 0.6 * studies)),
        template="plotly_white",
    )
    return figure


def save_hypervolume_png(result: ProgressResult, path: Path) -> Path | None:
    """Both hypervolume plots side by side as one PNG; None (and no file) without a history."""
    from matplotlib.figure import Figure

    if result.normalization is None:
        return None
    unit, size = _time_unit(list(result.histories.values()))
    figure = Figure(figsize=(11, 4.8), dpi=150, layout="constrained")
    panels = figure.subplots(1, 2, sharey=True)
    for axes, (key, (_, x_title)) in zip(panels, HYPERVOLUME_PLOTS.items(), strict=True):
        for index, (label, history) in enumerate(result.histories.items()):
            by_trials = key == "hypervolume-vs-trials"
            x = history["finished"] if by_trials else history["elapsed_s"] / size
            axes.step(x, history["hypervolume"], where="post", color=COLORS[index % len(COLORS)],
                      label=label)  # fmt: skip
        axes.set_xlabel(x_title + ("" if key.endswith("trials") else f" ({unit})"))
        axes.set_ylim(bottom=0)
        axes.grid(True, alpha=0.3)
    panels[0].set_ylabel(HYPERVOLUME_AXIS)
    panels[0].legend(fontsize="small")
    figure.suptitle("Hypervolume of the Pareto front as the search ran")
    figure.text(0.01, -0.01, textwrap.fill(result.hypervolume_note(), 170), fontsize=7,
                color="#555", va="top")  # fmt: skip
    atomic_write(path, lambda file: figure.savefig(file, format="png", bbox_inches="tight"))
    return path
