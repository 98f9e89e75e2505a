"""How much the search machinery (Ray Tune, Optuna, worker start-up) costs around each candidate.

Runs ``nas search`` on a config (default ``configs/quick.yaml``) twice, with 1 and with 2
concurrent trials. Both runs compare like with like: the random sampler with the config's seed
(so both evaluate the same specs in the same order), no early stopping, and each its own empty
``EFFNAS_CACHE`` (so both time the reference net once per worker, as a first search on a
machine does). From the
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
  shared machine slows both runs; compare figures taken at similar loads);
* the machine's own ceiling for 2 at a time, without effnas around it: one, then two processes
  that only run training steps of one net of the space (torch, one thread each, the config's
  batch and image size); two at a time cannot scale better than the hardware lets these
  (shared caches and memory bandwidth, or virtual cores that share a physical one).

Usage: python bench/search_overhead.py [--trials 12] [--config configs/quick.yaml]
Run it with PYTHONPATH pointing at the effnas tree to measure (e.g. an older checkout).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
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
    data["early_stopping"] = False  # every trial does the same work in both runs
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
        start_new_session=True, cwd=workdir,  # -m finds nas on PYTHONPATH, never in the cwd
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


def probe_worker(config: Path, steps: int) -> None:
    """In a process of its own: time ``steps`` training steps of the space's first sampled net,
    one torch thread, by the wall clock; print the median step in ms as JSON."""
    import random

    import torch

    from nas.evaluate.timing import StepSetup, time_train_step
    from nas.search.config import SearchConfig
    from searchspace import build_model

    torch.set_num_threads(1)
    search = SearchConfig.load(config)
    eval_config = search.eval_config()
    setup = StepSetup.for_config(eval_config, search.timing_size, search.space.num_classes)
    setup = dataclasses.replace(setup, steps=steps, warmup=5, clock="wall")
    torch.manual_seed(0)
    model = build_model(search.space.sample(random.Random(search.seed)))
    print(json.dumps({"median_ms": time_train_step(model, setup).median_ms}), flush=True)


def probe(config: Path, steps: int) -> dict[str, float]:
    """The hardware's scaling of 2 at a time: the step time of one probe process alone, and of
    two started together (see the module); ``ceiling`` is their throughput over one's."""
    medians = {}
    for count in (1, 2):
        command = [sys.executable, __file__, "--config", str(config), "--probe-worker",
                   str(steps)]  # fmt: skip
        processes = [
            subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(count)
        ]
        outputs = [process.communicate()[0] for process in processes]
        if any(process.returncode for process in processes):
            sys.exit(f"the probe failed: {outputs}")
        medians[count] = [json.loads(out.splitlines()[-1])["median_ms"] for out in outputs]
    alone = medians[1][0]
    together = statistics.fmean(medians[2])
    return {"alone_ms": alone, "together_ms": together, "ceiling": 2 * alone / together}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "quick.yaml")
    parser.add_argument("--probe-steps", type=int, default=300, help="steps per probe process")
    parser.add_argument("--probe-worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe_worker:
        probe_worker(args.config, args.probe_worker)
        return
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = importlib.util.find_spec("nas")
    print(f"measuring effnas at {Path(spec.origin).parent.parent}", flush=True)
    ceiling = probe(args.config, args.probe_steps)
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
    print(
        f"the machine's ceiling (training steps alone, one thread each): one process "
        f"{ceiling['alone_ms']:.1f} ms a step, two together {ceiling['together_ms']:.1f} ms: "
        f"{ceiling['ceiling']:.2f}x"
    )
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
