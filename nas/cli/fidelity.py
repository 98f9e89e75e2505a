"""``nas fidelity``: does the search's brief proxy rank nets as longer training does?"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from nas.cli.paths import SEARCH_CONFIG, output_folder

#: The cheapest valid command line, by argument (tests/nas/cli/test_paths.py reaches every path
#: argument from it; {config}: a search config, {torch}: a torch file, {run}, {out}: folders).
EXAMPLE = {"config": "{config}"}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "fidelity",
        help="check that a config's brief proxy ranks nets as longer training does",
        description="Sample specs from a search config's space, evaluate each with the config's "
        "brief proxy (what every trial runs) and with a longer schedule (more epochs, the full "
        "image size) on Ray, and report Kendall's tau and Spearman's rho, with bootstrap "
        "intervals, between proxy and long-run accuracy, between the proxy's step time and the "
        "long run's real time per step, and for FLOPs and parameters as the contrast. Writes "
        "fidelity.json, fidelity.png and evaluations.jsonl (reused by a rerun) to --out.",
    )
    parser.add_argument(
        "config", type=SEARCH_CONFIG, help="search config YAML (e.g. configs/quick.yaml)"
    )
    parser.add_argument("--specs", type=int, default=12, help="specs to sample (default 12)")
    parser.add_argument(
        "--long-epochs", type=int, help="epochs of the long schedule (default: 4x the config's)"
    )
    parser.add_argument(
        "--long-image-size",
        type=int,
        help="image size of the long schedule (default: the space's train resolution)",
    )
    parser.add_argument(
        "--seed", type=int, help="seed of the spec sample and the bootstrap (default: the config's)"
    )
    parser.add_argument(
        "--resamples", type=int, default=10_000, help="bootstrap resamples (default 10000)"
    )
    parser.add_argument(
        "--concurrent", type=int, help="evaluations at once (default: the config's)"
    )
    parser.add_argument(
        "--out", type=output_folder(), help="output folder (default: <runs_dir>/<study>-fidelity)"
    )
    parser.add_argument(
        "--address",
        type=str,
        help="Ray cluster address (default: RAY_ADDRESS, else Ray on 127.0.0.1)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.set_defaults(func=run)


def _cell(value: Any, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "pct":
        return f"{value:.2%}"
    if kind == "ms":
        return f"{value:.1f}"
    if kind == "int":
        return f"{value:,}"
    return f"{value / 1e6:.1f}"


def format_fidelity(result: Any) -> str:
    """The per-spec table, the rank correlations and the verdict, as ``nas fidelity`` prints."""
    from nas.search.fidelity import PAIRS

    lines = [
        f"{'#':>3} {'proxy acc':>9} {'long acc':>9} {'proxy ms':>9} {'long ms/step':>12} "
        f"{'params':>10} {'MFLOPs':>8}  spec"
    ]
    for index, row in enumerate(result.rows, 1):
        lines.append(
            f"{index:>3} {_cell(row['proxy_accuracy'], 'pct'):>9} "
            f"{_cell(row['long_accuracy'], 'pct'):>9} {_cell(row['proxy_step_ms'], 'ms'):>9} "
            f"{_cell(row['long_ms_per_step'], 'ms'):>12} {_cell(row['params'], 'int'):>10} "
            f"{_cell(row['flops'], 'M'):>8}  {row['spec']}"
            + (f"  FAILED: {row['failure']}" if row["failure"] else "")
        )
    first = next(iter(result.correlations.values()))
    lines += [
        "",
        f"rank agreement (Kendall's tau, Spearman's rho; {first.confidence:.0%} bootstrap "
        f"intervals over {first.resamples:,} resamples):",
        f"  {'':<42} {'n':>3}  {'tau':<20} rho",
    ]
    for key, (_, _, label) in PAIRS.items():
        c = result.correlations[key]
        lines.append(f"  {label:<42} {c.n:>3}  {c.tau_text:<20} {c.rho_text}")
    lines += [f"  ({result.clock})", "", result.verdict]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from nas.errors import ConfigError
    from nas.search import SearchConfig
    from nas.search.fidelity import fidelity_figure, plan_fidelity, run_fidelity
    from searchspace.errors import EffnasError
    from searchspace.files import atomic_write

    config = SearchConfig.load(args.config)
    if args.concurrent is not None:
        try:
            config = config.replace(concurrent=args.concurrent)
        except EffnasError as error:
            raise ConfigError(f"command line: {error}") from None
    plan = plan_fidelity(
        config,
        specs=args.specs,
        long_epochs=args.long_epochs,
        long_image_size=args.long_image_size,
        seed=args.seed,
        resamples=args.resamples,
    )
    out_dir = Path(args.out) if args.out else Path(config.runs_dir) / f"{config.study}-fidelity"
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file, not a folder")

    def log(line: str) -> None:
        print(line, file=sys.stderr if args.json else sys.stdout, flush=True)

    log(
        f"nas fidelity: {len(plan.specs)} specs from {args.config}'s space; proxy "
        f"{plan.describe(plan.proxy)} (the search's), long run {plan.describe(plan.long)}; "
        f"{config.concurrent} at a time"
    )
    result = run_fidelity(plan, out_dir, address=args.address, log=log)
    data = result.to_dict()
    atomic_write(out_dir / "fidelity.json", json.dumps(data, indent=1) + "\n")
    figure = fidelity_figure(result, out_dir / "fidelity.png")
    if args.json:
        print(json.dumps(data, indent=1))
    else:
        print(format_fidelity(result))
    log(f"wrote {out_dir / 'fidelity.json'}, {figure}")
    # Nothing to rank (every evaluation failed, or all but two): the run has failed.
    return 0 if result.correlations["accuracy"].n >= 3 else 1
