"""``nas front``: the Pareto front of a search as a table, CSV or JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nas.cli.args import add_run_arguments
from nas.cli.paths import output_file

#: The cheapest valid command line, by argument (tests/nas/cli/test_paths.py reaches every path
#: argument from it; {config}: a search config, {torch}: a torch file, {run}, {out}: folders).
EXAMPLE = {"run": "{run}"}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "front",
        help="print a search's Pareto front (works while the search runs)",
        description="Print the non-dominated trials of a search over the chosen objectives "
        "(accuracy is maximized, every cost minimized), and the reward-best trial. Trials "
        "that broke one of the search's constraints are on no front and are listed apart.",
    )
    add_run_arguments(parser)
    parser.add_argument(
        "--objectives",
        type=str,
        help="comma-separated metrics, e.g. accuracy,step_time_ms "
        "(default: the study's objectives, else accuracy,step_time_norm,params)",
    )
    parser.add_argument(
        "--csv",
        type=output_file("csv"),
        metavar="FILE",
        help="also write the front's trials to FILE",
    )
    parser.add_argument("--json", action="store_true", help="print the front as JSON instead")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from results import (
        ResultsError,
        default_objectives,
        format_front,
        front_records,
        load_study_frame,
        pareto_front,
        parse_objectives,
    )
    from results.pareto import feasible, reward_best
    from results.schema import REFUSED
    from results.tables import winners_curse
    from searchspace.files import atomic_write

    frame = load_study_frame(args.run, args.study)
    objectives = (
        default_objectives(frame) if args.objectives is None else parse_objectives(args.objectives)
    )
    front = pareto_front(frame, objectives)
    if front.empty:
        raise ResultsError(
            f"study {frame.attrs['study_name']!r} has no completed"
            f"{'' if feasible(frame).all() else ', feasible'} trial with "
            f"{', '.join(objectives)} yet ({len(frame)} trials so far)"
        )
    if args.csv:
        path = Path(args.csv)
        if not path.parent.is_dir():
            raise ResultsError(f"--csv: directory {path.parent} does not exist")
        atomic_write(path, front.to_csv(index=False), ResultsError)
    if args.json:
        refused = frame["status"] == REFUSED
        payload = {
            "study": frame.attrs["study_name"],
            "mode": frame.attrs["mode"],
            "objectives": list(objectives),
            "trials": int((~refused).sum()),  # that ran; refused nets never did
            "refused": int(refused.sum()),
            "front": front_records(front),
            "infeasible": front_records(frame[~feasible(frame)]),
        }
        best = reward_best(frame)
        if best is not None:
            # The held-out accuracy chose it; the test accuracy is what no decision saw.
            payload["reward_best"] = {
                **front_records(best.to_frame().T)[0],
                "heldout_minus_test_points": winners_curse(best),
            }
        print(json.dumps(payload, indent=2))
    else:
        print(format_front(frame, objectives))
        if args.csv:
            print(f"front written to {args.csv}")
    return 0
