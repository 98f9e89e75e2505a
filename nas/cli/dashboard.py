"""``nas dashboard``: optuna-dashboard on a search's study, with our Pareto figures attached."""

from __future__ import annotations

import argparse

from nas.cli.args import add_run_arguments

#: The cheapest valid command line, by argument (tests/nas/cli/test_paths.py reaches every path
#: argument from it; {config}: a search config, {torch}: a torch file, {run}, {out}: folders).
EXAMPLE = {"run": "{run}"}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "dashboard",
        help="serve optuna-dashboard on a search's study (live while it runs)",
        description="Run optuna-dashboard on the study's storage, after attaching our Pareto "
        "figures and a note with the reward-best spec to the study. Listens on 127.0.0.1 "
        "unless --host says otherwise.",
    )
    add_run_arguments(parser)
    parser.add_argument(
        "--host", type=str, default="127.0.0.1", help="address to listen on (127.0.0.1)"
    )
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (8080)")
    parser.add_argument(
        "--objectives",
        type=str,
        help="metrics of the attached front (default: the study's objectives)",
    )
    parser.add_argument(
        "--refresh",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="refresh the attached figures this often while trials arrive (0: never; 60)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from results import ResultsError
    from results.dashboard import serve_dashboard

    if args.refresh < 0:
        raise ResultsError(f"--refresh must be 0 or more seconds, got {args.refresh:g}")
    serve_dashboard(
        args.run,
        args.study,
        host=args.host,
        port=args.port,
        objectives=args.objectives,
        refresh_s=args.refresh,
    )
    return 0
