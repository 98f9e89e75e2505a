"""``nas report``: a self-contained HTML report and PNG figures of one or several searches."""

from __future__ import annotations

import argparse

from nas.cli.args import add_run_arguments
from nas.cli.paths import output_file

#: The cheapest valid command line, by argument (tests/nas/cli/test_paths.py reaches every path
#: argument from it; {config}: a search config, {torch}: a torch file, {run}, {out}: folders).
EXAMPLE = {"run": "{run}"}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="write an HTML report (opens offline) and PNG figures of searches",
        description="Write one self-contained HTML file with accuracy against step time and "
        "parameters, a 3-D view, the hypervolume of the Pareto front against trials and wall "
        "time, which choices matter for each objective, the reward-best trial and the Pareto "
        "front as a table, plus matplotlib PNGs beside it. Several runs are drawn side by side "
        "on the same axes.",
    )
    add_run_arguments(parser, several=True)
    parser.add_argument(
        "--out",
        type=output_file("html"),
        metavar="FILE",
        help="HTML file to write (default: <run>/report.html; required for several runs)",
    )
    parser.add_argument(
        "--objectives",
        type=str,
        help="metrics of the front tables, the 3-D view and the hypervolume (default: the "
        "study's objectives, else accuracy,step_time_norm,params)",
    )
    parser.add_argument("--no-png", action="store_true", help="write only the HTML file")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from results import ResultsError, load_study_frame, parse_objectives
    from results.report import write_report

    # Validate cheap arguments before reading any study.
    objectives = parse_objectives(args.objectives) if args.objectives is not None else None
    if len(args.run) > 1 and args.out is None:
        raise ResultsError("--out FILE is required when reporting on several runs")
    frames = [load_study_frame(run, args.study) for run in args.run]
    out = Path(args.out) if args.out else Path(frames[0].attrs["run_dir"]) / "report.html"
    files = write_report(frames, out, objectives=objectives, png=not args.no_png)
    print(f"report: {files.html}")
    for path in files.pngs:
        print(f"figure: {path}")
    return 0
