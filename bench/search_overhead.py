"""How much the search machinery (Ray Tune, Optuna, worker start-up) costs around each candidate.

Runs ``nas search`` on a config (default ``configs/quick.yaml``) twice, with 1 and with 2
concurrent trials. Both runs compare like with like: the random sampler with the config's seed
(so both evaluate the same specs in the same order) and each its own empty ``EFFNAS_CACHE`` (so
both time the reference net once per worker, as a first search on a machine does). From the
study each run wrote, and from the CPU time of every process of the run, it reports:

* per trial (median, max, and over all trials together), the share of its wall time (Optuna's
  start -> complete: from the moment the searcher asked for it until the result was stored) spent
  outside the candidate's own evaluation (``duration_s``: build, FLOPs, step timing, training,
  held-out accuracy); loading the dataset and the reference timing count as machinery;
* the time from launching ``nas search`` to the first finished trial;
* trials per hour, and the throughput of 2 concurrent trials over 1;
* where the CPU went: the CPU seconds of the driver (Tune's controller, Optuna's sampler, the
  study's writes), of the trial workers (the evaluations and what the workers do around them)
  and of Ray's own processes (raylet, GCS, agents), against the CPU the run had (cores x wall
  time), sampled from ``/proc`` every 0.2 s for every process in the search's session;
* the machine's 1-minute load average when each run started and ended (other users' work on a
  shared machine slows both runs; compare figures taken at similar loads).

Usage: python bench/search_overhead.py [--trials 12] [--config configs/quick.yaml]
Run it with PYTHONPATH pointing at the effnas tree to measure (e.g. an older checkout).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import optuna
import yaml

REPO = Path(__file__).resolve().parents[1]
PROGRESS = re.compile(r"^\[\d+/\d+\] ")  # the search's line per finished trial
TICK = os.sysconf("SC_CLK_TCK")
#: Process titles of Ray worker processes (trials run in them); other Ray processes are Ray's own.
WORKER_TITLES = ("ray::IDLE", "ray::ImplicitFunc", "ray::_Inner", "default_worker.py")


class CpuSampler(threading.Thread):
    """Samples the CPU time of every process in one process session until stopped."""

    def __init__(self, session: int, driver: int) -> None:
        super().__init__(daemon=True)
        self.session, self.driver = session, driver
        self.cpu: dict[int, float] = {}  # pid -> CPU seconds last seen
        self.kind: dict[int, str] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.sample()
            self.done.wait(0.2)
        self.sample()

    def sample(self) -> None:
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                stat = Path(entry.path, "stat").read_text()
                cmdline = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[3]) != self.session:  # fields[3] is the session id
                continue
            pid = int(entry.name)
            self.cpu[pid] = (int(fields[11]) + int(fields[12])) / TICK  # utime + stime
            if pid == self.driver:
                self.kind[pid] = "driver"
            elif any(title in cmdline for title in WORKER_TITLES):
                self.kind[pid] = "workers"
            else:
                self.kind.setdefault(pid, "ray")

    def totals(self) -> dict[str, float]:
        totals = {"driver": 0.0, "workers": 0.0, "ray": 0.0}
        for pid, seconds in self.cpu.items():
            totals[self.kind.get(pid, "ray")] += seconds
        return totals


def run(config: Path, trials: int, concurrent: int, workdir: Path) -> dict:
    data = yaml.safe_load(config.read_text())
    data["sampler"] = "random"  # the same specs in both runs
    name = f"overhead-{concurrent}"
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    env = {**os.environ, "EFFNAS_CACHE": str(workdir / f"cache-{concurrent}")}
    load_start = os.getloadavg()[0]
    launched = time.time()
    process = subprocess.Popen(
        [sys.executable, "-m", "nas.cli", "search", str(path), "--trials", str(trials),
         "--concurrent", str(concurrent), "--runs-dir", str(workdir), "--study", name],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        start_new_session=True,
    )  # fmt: skip
    sampler = CpuSampler(process.pid, process.pid)
    sampler.start()
    first_line_at = None
    output = []
    for line in process.stdout:
        output.append(line)
        if PROGRESS.match(line) and first_line_at is None:
            first_line_at = time.time()
    process.wait()
    finished = time.time()
    sampler.done.set()
    sampler.join()
    if process.returncode != 0:
        sys.exit("".join(output[-40:]))
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{workdir}/{name}/study.db")
    shares, walls, outsides, evaluations = [], [], [], []
    for trial in study.trials:
        wall = (trial.datetime_complete - trial.datetime_start).total_seconds()
        outside = max(0.0, wall - trial.user_attrs["duration_s"])
        shares.append(outside / wall)
        walls.append(wall)
        outsides.append(outside)
        evaluations.append(trial.user_attrs["duration_s"])
    total = finished - launched
    return {
        "concurrent": concurrent,
        "trials": len(study.trials),
        "total_s": total,
        "first_trial_s": (first_line_at or finished) - launched,
        "overhead_median": statistics.median(shares),
        "overhead_max": max(shares),
        # The first trial on each worker pays for the worker's start (imports, the dataset).
        "overhead_all": sum(outsides) / sum(walls),
        "trials_per_hour": len(study.trials) / total * 3600,
        "evaluation_s": sum(evaluations),
        "cpu": sampler.totals(),
        "load": (load_start, os.getloadavg()[0]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "quick.yaml")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        results = [run(args.config, args.trials, concurrent, Path(tmp)) for concurrent in (1, 2)]
    cores = len(os.sched_getaffinity(0))
    print(f"nas search {args.config.name}, random sampler, {args.trials} trials per run")
    print(
        f"{'concurrent':>10} {'overhead median':>16} {'overhead max':>13} {'overhead all':>13} "
        f"{'first trial s':>14} {'total s':>8} {'trials/hour':>12} {'load':>11}"
    )
    for r in results:
        print(
            f"{r['concurrent']:>10} {r['overhead_median']:>15.1%} {r['overhead_max']:>13.1%} "
            f"{r['overhead_all']:>13.1%} {r['first_trial_s']:>14.1f} {r['total_s']:>8.1f} "
            f"{r['trials_per_hour']:>12.1f} {r['load'][0]:>5.1f}->{r['load'][1]:<5.1f}"
        )
    speedup = results[1]["trials_per_hour"] / results[0]["trials_per_hour"]
    print(f"throughput, 2 concurrent / 1 concurrent: {speedup:.2f}x")
    print(f"CPU seconds ({cores} cores here):")
    print(
        f"{'concurrent':>10} {'had':>8} {'driver':>8} {'workers':>8} {'ray':>8} "
        f"{'evaluations (wall)':>19}"
    )
    for r in results:
        cpu = r["cpu"]
        print(
            f"{r['concurrent']:>10} {cores * r['total_s']:>8.0f} {cpu['driver']:>8.1f} "
            f"{cpu['workers']:>8.1f} {cpu['ray']:>8.1f} {r['evaluation_s']:>19.1f}"
        )


if __name__ == "__main__":
    main()
