"""A live optuna-dashboard on a search's storage, with our Pareto figures and a note attached.

optuna-dashboard reads the study straight from its storage, so it follows a running search. We
add what it does not know: the study's metric names (if the search did not set them), the
Pareto figures of :mod:`results.figures` and the progress figures of :mod:`results.progress`
(the hypervolume of the front against trials and wall time, which choices matter for each
objective), saved with ``save_plotly_graph_object`` and shown with the study in the dashboard,
and a Markdown note with the reward-best spec, the front and the hypervolume (``save_note``).
These are study system attributes, written in short transactions that a search's writes wait
out; a background thread refreshes them while trials keep arriving.
"""

from __future__ import annotations

import datetime as dt
import errno
import socket
import threading
import warnings
from collections.abc import Sequence

import optuna
import pandas as pd

from results.errors import ResultsError
from results.figures import plotly_figures
from results.pareto import pareto_front, reward_best
from results.progress import IMPORTANCE_NOTE, IMPORTANCE_PREFIX, ProgressResult, progress
from results.schema import describe_objectives, parse_objectives
from results.study import StudySource, open_study, study_frame
from results.tables import default_objectives, format_cell, winners_curse

__all__ = ["attach_to_study", "check_port_free", "serve_dashboard", "study_note"]

#: Graph-object IDs of our figures in the dashboard (fixed, so a refresh replaces them).
FIGURE_ID_PREFIX = "effnas-"
#: The objectives a search's study has in each mode, for a study that lacks metric names.
MODE_METRIC_NAMES = {"reward": ["reward"], "pareto": ["accuracy", "step_time_norm", "params"]}
#: Most front rows the note lists (the dashboard shows every trial anyway).
NOTE_ROWS = 20


def check_port_free(host: str, port: int) -> None:
    """Fail early, with a one-line error, when ``host:port`` cannot be listened on.

    Raises:
        ResultsError: an unresolvable host, a port out of range or one already in use.
    """
    if not 0 < port < 65536:
        raise ResultsError(f"--port must be in 1..65535, got {port}")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as error:
        raise ResultsError(f"--host {host!r} cannot be resolved: {error.strerror}") from None
    with socket.socket(family, kind, proto) as probe:
        # The dashboard's server (wsgiref) sets SO_REUSEADDR too: a port left in TIME_WAIT by
        # an earlier dashboard is free for it, a port another server listens on is not.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise ResultsError(f"--port {port} is already in use on {host}") from None
            raise ResultsError(f"cannot listen on {host}:{port}: {error.strerror}") from None


def study_note(
    frame: pd.DataFrame, objectives: Sequence[str], found: ProgressResult | None = None
) -> str:
    """The Markdown note attached to the study: the reward-best spec, the front and, given
    ``found`` (:func:`results.progress.progress` of this study), the hypervolume and the
    importances that could not be computed."""
    study = frame.attrs.get("study_name", "?")
    now = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    states = frame["state"].value_counts()
    lines = [
        f"## effnas: {study}",
        "",
        f"Updated {now} by `nas dashboard`: {len(frame)} trials, "
        f"{states.get('COMPLETE', 0)} complete, {states.get('FAIL', 0)} failed, "
        f"{states.get('RUNNING', 0)} running. The figures below are ours (effnas-*).",
        "",
    ]
    best = reward_best(frame)
    if best is None:
        lines.append("No completed trial yet.")
        return "\n".join(lines)
    gap = winners_curse(best)
    test = (
        ""
        if gap is None
        else f" (test {format_cell('test_accuracy', best['test_accuracy'])}: held-out - test "
        f"{gap:+.2f} points)"
    )
    lines += [
        f"**Best by reward:** trial {best['number']}, reward {best['reward']:.4f}, held-out "
        f"accuracy {format_cell('accuracy', best['accuracy'])}{test}, "
        f"{format_cell('step_time_ms', best['step_time_ms'])} ms per step, "
        f"{format_cell('params', best['params'])} parameters.",
        "",
        "```",
        str(best["spec"]),
        "```",
        "",
    ]
    front = pareto_front(frame, objectives)
    on = describe_objectives(objectives)
    lines += [f"**Pareto front** on {on}: {len(front)} trials.", ""]
    columns = ["number", "accuracy", "test_accuracy", "step_time_ms", "params", "reward", "spec"]
    lines.append("| trial | held-out | test | step ms | params | reward | spec |")
    lines.append("|---:|---:|---:|---:|---:|---:|:---|")
    for _, trial in front.head(NOTE_ROWS).iterrows():
        cells = [format_cell(column, trial[column]) for column in columns]
        cells[-1] = f"`{cells[-1]}`"
        lines.append("| " + " | ".join(cells) + " |")
    if len(front) > NOTE_ROWS:
        lines.append(f"\n... and {len(front) - NOTE_ROWS} more (`nas front` lists them all).")
    if found is not None:
        lines += ["", *_progress_lines(found)]
    return "\n".join(lines)


def _progress_lines(found: ProgressResult) -> list[str]:
    lines = []
    for history in found.histories.values():
        if len(history):
            lines.append(
                f"**Hypervolume** {history['hypervolume'].iloc[-1]:.4f} after "
                f"{len(history)} finished trials (figures effnas-hypervolume-*)."
            )
    lines += ["", found.hypervolume_note()]
    if any(key.startswith(IMPORTANCE_PREFIX) for key in found.figures):
        lines += ["", IMPORTANCE_NOTE + " (figures effnas-importance-*)"]
    notes = found.importance_notes()
    if notes:
        lines += ["", "**Importances not computed:** " + "; ".join(notes) + "."]
    return lines


def attach_to_study(
    study: optuna.Study, objectives: Sequence[str] | str | None = None
) -> pd.DataFrame:
    """Set missing metric names, and save our figures and note on ``study``; return its frame.

    The study must be opened for writing. Figures keep fixed IDs, so calling this again
    replaces them instead of piling up copies.
    """
    from optuna_dashboard import save_note, save_plotly_graph_object

    frame = study_frame(study)
    if study.metric_names is None:
        mode = frame.attrs["mode"]
        names = MODE_METRIC_NAMES.get(mode)
        if names is not None and len(names) == len(study.directions):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names(names)
            frame.attrs["objectives"] = names
    names = default_objectives(frame) if objectives is None else parse_objectives(objectives)
    found = None
    if (frame["state"] == "COMPLETE").any():
        found = progress([frame], names)
        figures = {**plotly_figures([frame], names), **found.figures}
        for key, figure in figures.items():
            # No fixed height: the figure fills the dashboard's card (450 px in 0.21) instead of
            # being cut off at its bottom.
            figure.update_layout(height=None)
            save_plotly_graph_object(study, figure, graph_object_id=FIGURE_ID_PREFIX + key)
    save_note(study, study_note(frame, names, found))
    return frame


def _refresh_loop(
    source: StudySource, objectives: Sequence[str] | None, every_s: float, stop: threading.Event
) -> None:
    """Re-attach figures and note whenever the number of finished trials changed."""
    seen = None
    while not stop.wait(every_s):
        try:
            study = source.load()
            finished = sum(trial.state.is_finished() for trial in study.get_trials(deepcopy=False))
            if finished != seen:
                attach_to_study(study, objectives)
                seen = finished
        except Exception as error:  # a refresh must never take the dashboard down
            print(f"nas dashboard: refresh failed: {error}", flush=True)


def serve_dashboard(
    run: str,
    study: str | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    objectives: Sequence[str] | str | None = None,
    refresh_s: float = 60.0,
) -> None:
    """Run optuna-dashboard on the study's storage until interrupted.

    Args:
        run, study: as :func:`results.open_study`.
        host: address to listen on; loopback unless the user asks otherwise.
        port: TCP port; checked to be free before anything is written to the study.
        objectives: metrics of the attached front; default the study's objectives.
        refresh_s: how often to refresh the attached figures and note (0: never).

    Raises:
        ResultsError: a port in use, or as :func:`results.open_study`.
    """
    names = parse_objectives(objectives) if objectives is not None else None
    check_port_free(host, port)
    source = open_study(run, study, writable=True)
    attach_to_study(source.load(), names)
    stop = threading.Event()
    if refresh_s > 0:
        threading.Thread(
            target=_refresh_loop, args=(source, names, refresh_s, stop), daemon=True
        ).start()
    url_host = f"[{host}]" if ":" in host else host
    study_id = source.storage.get_study_id_from_name(source.study_name)
    print(
        f"nas dashboard: study {source.study_name!r} on "
        f"http://{url_host}:{port}/dashboard/studies/{study_id} (Ctrl-C to stop)",
        flush=True,
    )
    try:
        _serve(source.storage, host, port)
    finally:
        stop.set()


def _serve(storage: optuna.storages.BaseStorage, host: str, port: int) -> None:
    """Serve optuna-dashboard's WSGI app until Ctrl-C or SIGTERM.

    Not ``optuna_dashboard.run_server``: it serves on the main thread, where the
    KeyboardInterrupt of a signal that lands while a request is being answered is swallowed by
    wsgiref's handler (a bare ``except``), so the dashboard would ignore that Ctrl-C or SIGTERM.
    Here requests are answered on a worker thread and the main thread only waits.
    """
    from wsgiref.simple_server import WSGIServer, make_server

    from optuna_dashboard import wsgi

    class Server(WSGIServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    try:
        server = make_server(host, port, wsgi(storage), server_class=Server)
    except OSError as error:  # lost a race for the port after the check
        raise ResultsError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    worker = threading.Thread(target=server.serve_forever, name="dashboard-server", daemon=True)
    worker.start()
    try:
        worker.join()
    finally:  # KeyboardInterrupt: stop after the request in hand, free the port
        server.shutdown()
        server.server_close()
