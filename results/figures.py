"""Pareto figures of one or several searches: plotly for the report and the dashboard,
matplotlib for PNGs.

Every figure shows each study in its own colour: all completed trials, the Pareto front of the
plotted pair of metrics (joined by its staircase: the boundary of what the front dominates), and
the reward-best trial as a star. Completed trials that broke one of the search's constraints are
drawn apart, as crosses, and are on no front. Hovering a point shows the trial, its metrics and
its spec.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from results.pareto import feasible, front_ranks, pareto_front, reward_best
from results.schema import METRICS
from results.tables import format_cell
from searchspace.files import atomic_write

__all__ = [
    "PLOTS",
    "Plot",
    "axis_values",
    "front_trace_name",
    "log_formatter",
    "percent_formatter",
    "plotly_axis",
    "plotly_figures",
    "png_figures",
    "save_png_figures",
    "study_label",
]

#: Study colours (matplotlib's tab10, so that the PNGs and the HTML agree).
COLORS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
#: Above this many points a trace is drawn with WebGL (``Scattergl``); SVG stays crisp and
#: inspectable below it but slows a browser down at tens of thousands of points.
WEBGL_ABOVE = 5000


@dataclass(frozen=True)
class Plot:
    """A 2-D plot of accuracy (y) against one cost (x, log scale)."""

    key: str
    title: str
    x: str
    y: str = "accuracy"


#: Metrics recorded as fractions and drawn in percent.
PERCENT_METRICS = frozenset({"accuracy"})

PLOTS = (
    Plot("accuracy-vs-step-time", "Accuracy against training step time", "step_time_ms"),
    Plot("accuracy-vs-params", "Accuracy against parameters", "params"),
)
PLOT_3D_KEY = "pareto-3d"


def study_label(frame: pd.DataFrame) -> str:
    """How a study is named in legends and tables."""
    return str(frame.attrs.get("label") or frame.attrs.get("study_name") or "study")


def front_trace_name(label: str) -> str:
    """Name of a study's Pareto-front trace (what the browser test looks for)."""
    return f"{label}: Pareto front"


def _completed(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Completed, feasible trials with every one of ``columns``."""
    return frame[_with_columns(frame, columns) & feasible(frame)]


def _infeasible(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Completed trials with every one of ``columns`` that broke a constraint."""
    return frame[_with_columns(frame, columns) & ~feasible(frame)]


def _with_columns(frame: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    keep = frame["state"] == "COMPLETE"
    for column in columns:
        keep &= pd.to_numeric(frame[column], errors="coerce").notna()
    return keep


def _values(column) -> list[float]:
    """Plain floats. Plotly would store numpy arrays as base64 typed arrays ("bdata"), which
    the plotly.js inside optuna-dashboard may predate; plain lists read everywhere."""
    return [float(value) for value in np.asarray(column, dtype=np.float64)]


def axis_values(metric: str, column) -> list[float]:
    """A metric column as plotted: :data:`PERCENT_METRICS` times 100, plain floats."""
    values = _values(column)
    return [100 * value for value in values] if metric in PERCENT_METRICS else values


def plotly_axis(metric: str, *, log: bool = False, values: Sequence[float] = ()) -> dict:
    """A plotly axis for ``metric`` whose tick labels read plainly.

    Percentages are drawn as numbers with a ``%`` suffix (:func:`axis_values`) rather than with a
    fixed ``tickformat``: plotly then picks the decimals from the tick spacing, so a narrow range
    (or a zoom) never shows the same label on two ticks. Log axes print every tick as a plain
    number, counts with SI suffixes (``200k``, ``3M``), instead of plotly's default of exponents
    (``4x10^1``) or bare leading digits between decades; over a decade or more of ``values``
    (the plotted ones) ticks sit at 1, 2 and 5 times powers of ten, so that full labels fit.
    """
    axis: dict = {"title": METRICS[metric].label}
    if metric in PERCENT_METRICS:
        axis["ticksuffix"] = "%"
    if log:
        # d3 formats: "~s" SI prefixes, "~r" significant digits; "~" drops trailing zeros.
        axis.update(type="log", tickformat="~s" if METRICS[metric].integer else "~r")
        positive = np.asarray(values, dtype=np.float64)
        positive = positive[np.isfinite(positive) & (positive > 0)]
        if positive.size and np.log10(positive.max() / positive.min()) >= 1:
            axis["dtick"] = "D2"
    return axis


def plain_number(value: float, *, si: bool = False) -> str:
    """``0.05``, ``40``, ``1500`` (or with ``si``: ``1.5k``, ``3M``): never an exponent."""
    if si:
        for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
            if abs(value) >= size:
                return np.format_float_positional(value / size, precision=3, trim="-") + unit
    return np.format_float_positional(value, precision=6, trim="-")


def log_formatter(metric: str):
    """A matplotlib tick formatter for a log axis of ``metric``: matplotlib's own choice of
    which ticks to label, printed as :func:`plain_number` (its default prints ``4x10^1``)."""
    from matplotlib.ticker import LogFormatter

    si = METRICS[metric].integer

    class PlainLogFormatter(LogFormatter):
        def _num_to_string(self, x, vmin, vmax):  # LogFormatter's hook for one label
            return plain_number(x, si=si)

    return PlainLogFormatter()


def tick_decimals(values: Sequence[float], *, most: int = 6) -> int:
    """The fewest decimals that write every one of ``values`` exactly (ticks: 97.5 needs 1)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    for decimals in range(most):
        if np.allclose(np.round(values, decimals), values, rtol=0, atol=10.0 ** -(decimals + 3)):
            return decimals
    return most


def percent_formatter():
    """A matplotlib tick formatter for fractions as percentages, with the decimals the ticks
    need (:func:`tick_decimals`): ``97%, 97.5%, 98%``, never ``98%, 98%``."""
    from matplotlib.ticker import PercentFormatter

    class TickPercentFormatter(PercentFormatter):
        def set_locs(self, locs):  # called with the ticks before they are labelled
            super().set_locs(locs)
            self.decimals = tick_decimals(np.asarray(locs) * 100)

    return TickPercentFormatter(xmax=1.0)


def _hover(frame: pd.DataFrame) -> tuple[list[list[str]], str]:
    """customdata columns and a hover template: trial, name, metrics, spec, and the broken
    constraints of trials that broke one."""

    def text(column: str, fmt) -> list[str]:
        return [("-" if pd.isna(v) else fmt(v)) for v in frame[column]]

    columns = [
        frame["number"].astype(str).tolist(),
        frame["name"].fillna("").astype(str).tolist(),
        text("accuracy", lambda v: f"{100 * v:.2f}%"),
        text("test_accuracy", lambda v: f"{100 * v:.2f}%"),
        text("step_time_ms", lambda v: f"{v:.3g} ms"),
        text("step_time_norm", lambda v: f"{v:.3g}"),
        text("params", lambda v: format_cell("params", v)),
        text("flops", lambda v: format_cell("flops", v)),
        text("reward", lambda v: f"{v:.4f}"),
        frame["spec"].fillna("").astype(str).tolist(),
    ]
    template = (
        "trial #%{customdata[0]} %{customdata[1]}<br>"
        "accuracy %{customdata[2]} held-out, %{customdata[3]} test<br>"
        "step %{customdata[4]} (x%{customdata[5]} reference)<br>"
        "params %{customdata[6]}, FLOPs %{customdata[7]}, reward %{customdata[8]}<br>"
        "%{customdata[9]}"
    )
    if not feasible(frame).all():  # trials that broke a constraint say which
        columns.append(frame["violations"].fillna("").astype(str).tolist())
        template += "<br>infeasible: %{customdata[10]}"
    data = [list(row) for row in zip(*columns, strict=True)]
    return data, template + "<extra></extra>"


def plotly_figures(frames: Sequence[pd.DataFrame], objectives: Sequence[str]) -> dict[str, object]:
    """The report's plotly figures by key: the :data:`PLOTS` and a 3-D view.

    The 3-D view plots step time, parameters and accuracy, and marks the front over
    ``objectives`` (the front the report's table lists).
    """
    import plotly.graph_objects as go

    figures: dict[str, object] = {}
    for plot in PLOTS:
        figure = go.Figure()
        for index, frame in enumerate(frames):
            color = COLORS[index % len(COLORS)]
            label = study_label(frame)
            done = _completed(frame, [plot.x, plot.y])
            front = pareto_front(done, [plot.y, plot.x]).sort_values(plot.x, kind="stable")
            marker = {"color": color, "size": 6, "opacity": 0.35}
            figure.add_trace(_scatter_2d(done, plot, label, f"{label}: trials", marker=marker))
            figure.add_trace(
                _scatter_2d(
                    front, plot, label, front_trace_name(label),
                    mode="lines+markers",
                    line={"shape": "hv", "color": color, "width": 1.5},
                    marker={"color": color, "size": 9, "line": {"color": "black", "width": 1}},
                )
            )  # fmt: skip
            infeasible = _infeasible(frame, [plot.x, plot.y])
            if len(infeasible):
                marker = {"color": color, "size": 8, "symbol": "x-thin",
                          "line": {"width": 1.5, "color": color}}  # fmt: skip
                name = f"{label}: infeasible (broke a constraint)"
                figure.add_trace(_scatter_2d(infeasible, plot, label, name, marker=marker))
            _add_best_2d(figure, frame, plot, label, color)
        figure.update_layout(
            title=plot.title,
            xaxis=plotly_axis(plot.x, log=True, values=_plotted(figure, "x")),
            yaxis=plotly_axis(plot.y),
            legend={"orientation": "h", "y": -0.2},
            margin={"l": 60, "r": 20, "t": 50, "b": 40},
            height=480,
            template="plotly_white",
        )
        figures[plot.key] = figure
    figures[PLOT_3D_KEY] = _figure_3d(frames, objectives)
    return figures


def _plotted(figure, axis: str) -> list[float]:
    """Every value a figure's traces plot on ``axis`` ("x" or "y")."""
    return [value for trace in figure.data for value in (getattr(trace, axis) or ())]


def _scatter_2d(trials: pd.DataFrame, plot: Plot, label: str, name: str, **style: object):
    """One plotly trace of study ``label``'s ``trials`` on a plot, with the hover text of every
    point (WebGL above :data:`WEBGL_ABOVE` points)."""
    import plotly.graph_objects as go

    data, template = _hover(trials)
    scatter = go.Scattergl if len(trials) > WEBGL_ABOVE else go.Scatter
    return scatter(
        x=axis_values(plot.x, trials[plot.x]),
        y=axis_values(plot.y, trials[plot.y]),
        name=name,
        legendgroup=label,
        customdata=data,
        hovertemplate=template,
        **{"mode": "markers", **style},
    )


def _add_best_2d(figure, frame: pd.DataFrame, plot: Plot, label: str, color: str) -> None:
    import plotly.graph_objects as go

    best = reward_best(frame)
    if best is None or pd.isna(best[plot.x]) or pd.isna(best[plot.y]):
        return
    data, template = _hover(best.to_frame().T)
    figure.add_trace(
        go.Scatter(
            x=axis_values(plot.x, [best[plot.x]]),
            y=axis_values(plot.y, [best[plot.y]]),
            mode="markers",
            name=f"{label}: reward-best (trial #{best['number']})",
            legendgroup=label,
            marker={
                "symbol": "star",
                "size": 18,
                "color": color,
                "line": {"color": "black", "width": 1.5},
            },
            customdata=data,
            hovertemplate=template,
        )
    )


def _figure_3d(frames: Sequence[pd.DataFrame], objectives: Sequence[str]):
    import plotly.graph_objects as go

    figure = go.Figure()
    axes = ("step_time_ms", "params", "accuracy")
    for index, frame in enumerate(frames):
        color = COLORS[index % len(COLORS)]
        label = study_label(frame)
        done = _completed(frame, axes)
        on_front = (front_ranks(done, objectives, max_rank=1) == 1).fillna(False).to_numpy(bool)
        for part, name, size, opacity, symbol in (
            (done[~on_front], f"{label}: trials", 3, 0.3, "circle"),
            (done[on_front], f"{label}: front on {', '.join(objectives)}", 6, 1.0, "circle"),
            (_infeasible(frame, axes), f"{label}: infeasible", 4, 0.6, "x"),
        ):
            if part.empty:
                continue
            data, template = _hover(part)
            figure.add_trace(
                go.Scatter3d(
                    x=_values(np.log10(part["step_time_ms"].astype(float))),
                    y=_values(np.log10(part["params"].astype(float))),
                    z=axis_values("accuracy", part["accuracy"]),
                    mode="markers",
                    name=name,
                    legendgroup=label,
                    marker={"color": color, "size": size, "opacity": opacity, "symbol": symbol},
                    customdata=data,
                    hovertemplate=template,
                )
            )
    figure.update_layout(
        title=f"Trials in 3-D; the front on {', '.join(objectives)} marked",
        scene={
            "xaxis": {"title": "log10 step time (ms)"},
            "yaxis": {"title": "log10 parameters"},
            "zaxis": {"title": "accuracy", "ticksuffix": "%"},
        },
        legend={"orientation": "h"},
        margin={"l": 0, "r": 0, "t": 50, "b": 0},
        height=600,
        template="plotly_white",
    )
    return figure


def save_png_figures(frames: Sequence[pd.DataFrame], prefix: Path) -> list[Path]:
    """Write the :data:`PLOTS` as PNGs named ``<prefix>-<plot key>.png``; return their paths."""
    paths = []
    for key, figure in png_figures(frames).items():
        path = prefix.with_name(f"{prefix.name}-{key}.png")
        atomic_write(path, lambda file, figure=figure: figure.savefig(file, format="png"))
        paths.append(path)
    return paths


def png_figures(frames: Sequence[pd.DataFrame]) -> dict[str, object]:
    """The :data:`PLOTS` as matplotlib figures, by key.

    Uses matplotlib's object API (``Figure``, the Agg renderer): no display and no global pyplot
    state, so it is safe inside a server or a test process.
    """
    from matplotlib.figure import Figure

    figures = {}
    for plot in PLOTS:
        figure = Figure(figsize=(6.4, 4.4), dpi=150, layout="constrained")
        axes = figure.add_subplot()
        for index, frame in enumerate(frames):
            color = COLORS[index % len(COLORS)]
            label = study_label(frame)
            done = _completed(frame, [plot.x, plot.y])
            front = pareto_front(done, [plot.y, plot.x]).sort_values(plot.x, kind="stable")
            axes.scatter(
                done[plot.x].astype(float), done[plot.y], s=10, alpha=0.3, color=color,
                linewidths=0, label=f"{label}: {len(done)} trials",
            )  # fmt: skip
            axes.step(
                front[plot.x].astype(float), front[plot.y], where="post", color=color,
                marker="o", markersize=5, markeredgecolor="black", markeredgewidth=0.5,
                label=f"{label}: Pareto front ({len(front)})",
            )  # fmt: skip
            infeasible = _infeasible(frame, [plot.x, plot.y])
            if len(infeasible):
                axes.scatter(
                    infeasible[plot.x].astype(float), infeasible[plot.y], s=18, marker="x",
                    color=color, linewidths=0.8, label=f"{label}: {len(infeasible)} infeasible",
                )  # fmt: skip
            best = reward_best(frame)
            if best is not None and not (pd.isna(best[plot.x]) or pd.isna(best[plot.y])):
                axes.scatter(
                    [float(best[plot.x])], [float(best[plot.y])], marker="*", s=220, color=color,
                    edgecolors="black", linewidths=0.8, zorder=5,
                    label=f"{label}: reward-best (#{best['number']})",
                )  # fmt: skip
        axes.set_xscale("log")
        axes.xaxis.set_major_formatter(log_formatter(plot.x))
        axes.xaxis.set_minor_formatter(log_formatter(plot.x))
        axes.set_xlabel(METRICS[plot.x].label)
        axes.set_ylabel(METRICS[plot.y].label)
        axes.yaxis.set_major_formatter(percent_formatter())
        axes.set_title(plot.title)
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize="small")
        figures[plot.key] = figure
    return figures
