"""The search report: one self-contained HTML file and PNG figures.

The HTML embeds plotly's JavaScript (no network needed to open it) and holds: a summary, the
Pareto figures of :mod:`results.figures`, the search's progress (the hypervolume of the front
against trials and wall time) and which choices matter for each objective (:mod:`results.progress`),
then per study the Pareto front as a table with the reward-best trial marked, and the reasons
trials failed. Several studies share the figures, in different colours, so that searches on
different hardware or data compare at a glance.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from results.errors import ResultsError
from results.figures import PLOT_3D_KEY, PLOTS, plotly_figures, save_png_figures, study_label
from results.pareto import feasible, pareto_front, reward_best
from results.progress import (
    HYPERVOLUME_PLOTS,
    IMPORTANCE_NOTE,
    IMPORTANCE_PREFIX,
    ProgressResult,
    progress,
    save_hypervolume_png,
)
from results.schema import REFUSED, describe_objectives, parse_objectives
from results.tables import (
    INFEASIBLE_COLUMNS,
    REFUSED_LISTED,
    default_objectives,
    format_cell,
    infeasible_trials,
    node_columns,
    winners_curse,
)
from searchspace.files import atomic_write

__all__ = ["ReportResult", "write_report"]

#: Columns of the report's front tables.
TABLE_COLUMNS = ("number", "name", "accuracy", "test_accuracy", "step_time_ms",
                 "step_time_norm", "params", "flops", "reward", "device", "spec")  # fmt: skip

_STYLE = """
html { overflow-y: scroll; } /* a constant width while plots render */
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: right; white-space: nowrap; }
.table { overflow-x: auto; max-width: 100%; }
th { background: #f4f4f4; } td.text { text-align: left; font-family: monospace; }
tr.best { background: #fff3c4; font-weight: bold; }
.figures { display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: 1em; }
.figures > div { min-width: 0; }
.note { color: #666; font-size: 0.85em; }
"""


@dataclass(frozen=True)
class ReportResult:
    """What :func:`write_report` wrote."""

    html: Path
    pngs: tuple[Path, ...]


def write_report(
    frames: Sequence[pd.DataFrame],
    out: str | Path,
    *,
    objectives: Sequence[str] | str | None = None,
    png: bool = True,
) -> ReportResult:
    """Write the report of one or several study frames to ``out`` (HTML) and PNGs beside it.

    Args:
        frames: study frames from :func:`results.load_study_frame`, one per search.
        out: the HTML file; PNGs are named ``<out stem>-<plot>.png`` in the same folder.
        objectives: metrics of the front tables, the 3-D view and the hypervolume; default the
            first study's objectives (:func:`results.default_objectives`). Importances are shown
            for these and the reward.
        png: also write the matplotlib PNGs.

    Raises:
        ResultsError: no frames, an unknown objective, or a folder for ``out`` that does not
            exist.
    """
    if not frames:
        raise ResultsError("no study to report on")
    names = default_objectives(frames[0]) if objectives is None else parse_objectives(objectives)
    out = Path(out)
    if not out.parent.is_dir():
        raise ResultsError(f"--out: directory {out.parent} does not exist")
    frames = _labelled(frames)
    figures = plotly_figures(frames, names)
    found = progress(frames, names)
    divs = _PlotDivs()
    title = "effnas search report: " + ", ".join(study_label(frame) for frame in frames)
    now = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="note">Snapshot of the studies at {html.escape(now)}; a search still running '
        "has more trials now. Fronts: accuracy is maximized, every cost minimized.</p>",
        _summary_table(frames, names),
        '<div class="figures">',
        *(f"<div>{divs(figures[plot.key], plot.key)}</div>" for plot in PLOTS),
        "</div>",
        divs(figures[PLOT_3D_KEY], PLOT_3D_KEY),
        *_progress_sections(found, divs),
    ]
    for frame in frames:
        parts.append(_front_section(frame, names))
    # Plots size themselves when their script runs, before the tables below exist; fit them to
    # the finished page once (plotly's "responsive" only follows window resizes).
    parts.append(
        "<script>window.addEventListener('load', () => document.querySelectorAll("
        "'.js-plotly-plot').forEach((plot) => Plotly.Plots.resize(plot)));</script>"
    )
    parts.append("</body></html>")
    atomic_write(out, "\n".join(parts), ResultsError)
    pngs = []
    if png:
        pngs += save_png_figures(frames, out.with_suffix(""))
        hypervolume_png = save_hypervolume_png(found, out.with_name(f"{out.stem}-hypervolume.png"))
        pngs += [hypervolume_png] if hypervolume_png is not None else []
    return ReportResult(out, tuple(pngs))


class _PlotDivs:
    """Plotly figures as HTML divs; the first one carries plotly.js, embedded (opens offline)."""

    def __init__(self) -> None:
        self.first = True

    def __call__(self, figure, div_id: str) -> str:
        div = figure.to_html(
            full_html=False,
            include_plotlyjs=self.first,
            div_id=div_id,
            config={"displaylogo": False, "responsive": True},
        )
        self.first = False
        return div


def _progress_sections(found: ProgressResult, divs: _PlotDivs) -> list[str]:
    """The hypervolume figures and the importances, with what could not be computed said."""
    parts = ['<h2 id="section-progress">Search progress: the hypervolume of the Pareto front</h2>']
    hypervolume = [key for key in HYPERVOLUME_PLOTS if key in found.figures]
    if hypervolume:
        parts.append('<div class="figures">')
        parts += [f"<div>{divs(found.figures[key], key)}</div>" for key in hypervolume]
        parts.append("</div>")
    parts.append(f'<p class="note">{html.escape(found.hypervolume_note())}</p>')
    parts.append('<h2 id="section-importance">Which choices matter for each objective</h2>')
    importance = [key for key in found.figures if key.startswith(IMPORTANCE_PREFIX)]
    if importance:
        parts.append('<div class="figures">')
        parts += [f"<div>{divs(found.figures[key], key)}</div>" for key in importance]
        parts.append("</div>")
        parts.append(f'<p class="note">{html.escape(IMPORTANCE_NOTE)}</p>')
    else:
        parts.append("<p>No study has importances to show.</p>")
    notes = found.importance_notes()
    if notes:
        parts.append('<p class="note">Importances not computed:</p><ul class="note">')
        parts += [f"<li>{html.escape(note)}</li>" for note in notes]
        parts.append("</ul>")
    return parts


def _labelled(frames: Sequence[pd.DataFrame]) -> list[pd.DataFrame]:
    """Frames with a unique ``attrs["label"]``: the study name, or the run too when two studies
    share a name (two runs of ``quick`` on different machines)."""
    names = [str(frame.attrs.get("study_name", "study")) for frame in frames]
    labelled = []
    for frame, name in zip(frames, names, strict=True):
        frame = frame.copy()
        frame.attrs = dict(frame.attrs)
        if names.count(name) > 1:
            frame.attrs["label"] = f"{name} ({frame.attrs.get('run_dir', '?')})"
        else:
            frame.attrs["label"] = name
        labelled.append(frame)
    return labelled


def _summary_table(frames: Sequence[pd.DataFrame], objectives: Sequence[str]) -> str:
    header = ["study", "mode", "device", "trials", "complete", "failed", "stopped", "running",
              "infeasible", "refused", "front size", "reward-best", "held-out", "test",
              "held-out - test", "step ms", "params", "storage"]  # fmt: skip
    rows = []
    for frame in frames:
        refused = (frame["status"] == REFUSED).to_numpy(dtype=bool)
        states = frame.loc[~refused, "state"].value_counts()  # trials that ran
        best = reward_best(frame)
        devices = sorted({device for device in frame["device"] if device})
        cells = [
            study_label(frame),
            str(frame.attrs.get("mode", "?")),
            ", ".join(devices) or "-",
            str(int((~refused).sum())),
            str(states.get("COMPLETE", 0)),
            str(states.get("FAIL", 0)),
            str(states.get("PRUNED", 0)),
            str(states.get("RUNNING", 0) + states.get("WAITING", 0)),
            str(int((~feasible(frame) & ~refused).sum())),
            str(int(refused.sum())),
            str(len(pareto_front(frame, objectives))),
        ]
        if best is None:
            cells += ["-"] * 6
        else:
            gap = winners_curse(best)
            cells += [
                f"#{best['number']} ({best['reward']:.4f})",
                format_cell("accuracy", best["accuracy"]),
                format_cell("test_accuracy", best["test_accuracy"]),
                "-" if gap is None else f"{gap:+.2f} points",
                format_cell("step_time_ms", best["step_time_ms"]),
                format_cell("params", best["params"]),
            ]
        cells.append(str(frame.attrs.get("url", "")))
        rows.append(cells)
    return _html_table(header, rows, text_columns={0, 1, 2, len(header) - 1})


def _front_section(frame: pd.DataFrame, objectives: Sequence[str]) -> str:
    label = study_label(frame)
    front = pareto_front(frame, objectives)
    best = reward_best(frame)
    on = describe_objectives(objectives)
    parts = [
        f"<h2>{html.escape(label)}: Pareto front on {html.escape(on)} ({len(front)} trials)</h2>"
    ]
    columns = list(TABLE_COLUMNS)
    # Where each trial ran, when the study spans several Ray nodes: beside the device.
    columns[columns.index("device") + 1 : columns.index("device") + 1] = node_columns(frame)
    columns += [name for name in objectives if name not in columns]
    rows, classes = [], []
    for _, trial in front.iterrows():
        rows.append([format_cell(column, trial[column]) for column in columns])
        is_best = best is not None and trial["number"] == best["number"]
        classes.append("best" if is_best else "")
    text = {
        columns.index(column) for column in ("name", "device", "node", "spec") if column in columns
    }
    parts.append(
        _html_table(
            columns, rows, text_columns=text, row_classes=classes, table_id=f"front-{label}"
        )
    )
    if best is not None:
        where = "on the front (highlighted)" if "best" in classes else "not on this front"
        gap = winners_curse(best)
        curse = (
            ""
            if gap is None
            else f" Held-out accuracy {format_cell('accuracy', best['accuracy'])}, test "
            f"{format_cell('test_accuracy', best['test_accuracy'])}: held-out - test "
            f"{gap:+.2f} points, what picking the best of many noisy held-out figures "
            "overstates (the test split steered nothing)."
        )
        parts.append(
            f"<p>Reward-best: trial #{best['number']}, reward {best['reward']:.4f}, {where}:"
            f" <code>{html.escape(str(best['spec']))}</code>.{curse}</p>"
        )
    parts += _infeasible_section(frame, label)
    failures = frame.loc[frame["state"] == "FAIL", "failure"].replace("", "(no reason recorded)")
    if len(failures):
        counts = failures.value_counts().head(10)
        parts.append(f"<p>{len(failures)} failed trials; most common reasons:</p>")
        parts.append(
            _html_table(
                ["reason", "trials"],
                [[reason, str(count)] for reason, count in counts.items()],
                text_columns={0},
            )
        )
    return "\n".join(parts)


def _infeasible_section(frame: pd.DataFrame, label: str) -> list[str]:
    """The trials that broke a constraint, apart from the front (none: nothing)."""
    shown, ran, refused = infeasible_trials(frame)
    if shown.empty:
        return []
    more = f"; the first {REFUSED_LISTED} refused are listed" if refused > REFUSED_LISTED else ""
    columns = list(INFEASIBLE_COLUMNS)
    rows = [
        [format_cell(column, trial[column]) for column in columns] for _, trial in shown.iterrows()
    ]
    return [
        f"<p>Infeasible, on no front: {ran} trials ran and broke a constraint, {refused} nets "
        f"were refused before training (they broke a constraint the spec shows){more}.</p>",
        _html_table(columns, rows, text_columns={1, 2, 3}, table_id=f"infeasible-{label}"),
    ]


def _html_table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    text_columns: set[int] = frozenset(),
    row_classes: Sequence[str] | None = None,
    table_id: str | None = None,
) -> str:
    id_attr = f' id="{html.escape(table_id, quote=True)}"' if table_id else ""
    lines = [f'<div class="table"><table{id_attr}><thead><tr>']
    lines.append("".join(f"<th>{html.escape(str(cell))}</th>" for cell in header))
    lines.append("</tr></thead><tbody>")
    for index, row in enumerate(rows):
        css = row_classes[index] if row_classes else ""
        lines.append(f'<tr class="{css}">' if css else "<tr>")
        for column, cell in enumerate(row):
            klass = ' class="text"' if column in text_columns else ""
            lines.append(f"<td{klass}>{html.escape(str(cell))}</td>")
        lines.append("</tr>")
    lines.append("</tbody></table></div>")
    return "".join(lines)
