"""How much the search machinery (Ray Tune, Optuna, worker start-up) costs around each candidate.

Runs ``nas search`` on ``configs/quick.yaml`` twice, with 1 and with 2 concurrent trials, and
reports from the study that each run wrote:

* per trial (median, max, and over all trials together), the share of its wall time (Optuna's
  start -> complete: from the moment the searcher asked for it until the result was stored) spent
  outside the candidate's own evaluation (``duration_s``: build, FLOPs, step timing, training,
  held-out accuracy); loading the dataset (once per worker) counts as machinery; target <= 5%;
* the time from launching ``nas search`` to the first finished trial;
* trials per hour.

Usage: python bench/search_overhead.py [--trials 6] [--config configs/quick.yaml]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

REPO = Path(__file__).resolve().parents[1]
PROGRESS = re.compile(r"^\[\d+/\d+\] ")  # the search's line per finished trial


def run(config: Path, trials: int, concurrent: int, runs_dir: Path) -> dict:
    launched = time.time()
    process = subprocess.Popen(
        [sys.executable, "-m", "nas.cli", "search", str(config), "--trials", str(trials),
         "--concurrent", str(concurrent), "--runs-dir", str(runs_dir), "--study",
         f"overhead-{concurrent}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    first_line_at = None
    output = []
    for line in process.stdout:
        output.append(line)
        if PROGRESS.match(line) and first_line_at is None:
            first_line_at = time.time()
    process.wait()
    finished = time.time()
    if process.returncode != 0:
        sys.exit("".join(output[-40:]))
    name = f"overhead-{concurrent}"
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{runs_dir}/{name}/study.db")
    shares, walls, outsides = [], [], []
    for trial in study.trials:
        wall = (trial.datetime_complete - trial.datetime_start).total_seconds()
        outside = max(0.0, wall - trial.user_attrs["duration_s"])
        shares.append(outside / wall)
        walls.append(wall)
        outsides.append(outside)
    return {
        "concurrent": concurrent,
        "trials": len(study.trials),
        "total_s": finished - launched,
        "first_trial_s": (first_line_at or finished) - launched,
        "overhead_median": statistics.median(shares),
        "overhead_max": max(shares),
        # The first trial on each worker pays for the worker's start (imports, the dataset).
        "overhead_all": sum(outsides) / sum(walls),
        "trials_per_hour": len(study.trials) / (finished - launched) * 3600,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "quick.yaml")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        results = [run(args.config, args.trials, concurrent, Path(tmp)) for concurrent in (1, 2)]
    print(f"nas search {args.config.name}, {args.trials} trials per run")
    print(
        f"{'concurrent':>10} {'overhead median':>16} {'overhead max':>13} {'overhead all':>13} "
        f"{'first trial s':>14} {'total s':>8} {'trials/hour':>12}"
    )
    for r in results:
        print(
            f"{r['concurrent']:>10} {r['overhead_median']:>15.1%} {r['overhead_max']:>13.1%} "
            f"{r['overhead_all']:>13.1%} "
            f"{r['first_trial_s']:>14.1f} {r['total_s']:>8.1f} {r['trials_per_hour']:>12.1f}"
        )
    speedup = results[1]["trials_per_hour"] / results[0]["trials_per_hour"]
    print(f"throughput, 2 concurrent / 1 concurrent: {speedup:.2f}x")


if __name__ == "__main__":
    main()
