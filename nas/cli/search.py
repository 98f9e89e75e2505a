"""``nas search``: run or resume a training-aware search."""

from __future__ import annotations

import argparse
import sys

from nas.cli.paths import SEARCH_CONFIG, output_folder

#: The cheapest valid command line, by argument (tests/nas/cli/test_paths.py reaches every path
#: argument from it; {config}: a search config, {torch}: a torch file, {run}, {out}: folders).
EXAMPLE = {"config": "{config}"}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "search",
        help="run a training-aware architecture search (Ray Tune + Optuna)",
        description="Sample candidates, time their real training step, train them briefly and "
        "score them; every trial lands in an Optuna study under runs/<study>/.",
    )
    parser.add_argument(
        "config", type=SEARCH_CONFIG, help="search config YAML (e.g. configs/quick.yaml)"
    )
    parser.add_argument("--resume", action="store_true", help="continue an interrupted search")
    parser.add_argument(
        "--join",
        action="store_true",
        help="start the study, or join it if another driver did: several drivers search one "
        "PostgreSQL study at once, each with its own --runs-dir and --trials",
    )
    parser.add_argument("--trials", type=int, help="override the number of trials")
    parser.add_argument("--concurrent", type=int, help="override how many trials run at once")
    parser.add_argument(
        "--storage",
        type=str,
        help="Optuna storage URL (default: SQLite in the run dir); a password in it is used, "
        "never printed or saved (else PGPASSWORD or a password file)",
    )
    parser.add_argument("--study", type=str, help="study name (default: the config's)")
    parser.add_argument(
        "--runs-dir", type=output_folder(), help="where run directories go (default: runs)"
    )
    parser.add_argument(
        "--address",
        type=str,
        help="Ray cluster address (default: RAY_ADDRESS, else Ray on 127.0.0.1)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nas.errors import ConfigError
    from nas.search import SearchConfig, run_search
    from searchspace.errors import EffnasError

    config = SearchConfig.load(args.config)
    overrides = {
        "trials": args.trials,
        "concurrent": args.concurrent,
        "storage": args.storage,
        "study": args.study,
        "runs_dir": args.runs_dir,
    }
    changes = {key: value for key, value in overrides.items() if value is not None}
    if changes:
        try:
            config = config.replace(**changes)
        except EffnasError as error:
            raise ConfigError(f"command line: {error}") from None
    outcome = run_search(config, resume=args.resume, join=args.join, address=args.address)
    if outcome.interrupted:
        print(f"nas search: interrupted; {_how_to_continue(args.config, changes)}", file=sys.stderr)
        return 130
    # A search in which no candidate could be evaluated has failed, whatever the cause.
    return 0 if outcome.finished > 0 else 1


def _how_to_continue(config: str, changes: dict) -> str:
    """The command that resumes the search, without the storage URL's password."""
    from results.storage import split_password

    password = None
    if "storage" in changes:
        bare, password = split_password(changes["storage"])
        changes = {**changes, "storage": bare}
    again = " ".join(
        ["nas search", config, "--resume"]
        + [f"--{key.replace('_', '-')} {value}" for key, value in changes.items()]
    )
    where = (
        " (with the database password in PGPASSWORD, a password file, or the --storage URL)"
        if password is not None
        else ""
    )
    return f"the finished trials are saved in the study. Continue with: {again}{where}"
