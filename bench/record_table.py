"""Record a benchmark table: every net of a small space, trained with a search's proxy, per seed.

The table (:mod:`nas.search.table`) is what ``bench/replay.py`` replays searches against. For the
config given (``configs/bench.yaml``: a space of a few hundred nets, the quick search's proxy):

1. **Every net** of the space (``SearchSpace.all_specs``: exactly the set a sampler can draw),
   with its parameters and FLOPs counted from the spec (``searchspace.profile``, the counts the
   search's constraints use; they equal fvcore's on the built net) at the final size (the
   space's ``train_resolution``) and at the proxy's (``image_size``).
2. **Step times**, all nets and the reference net together: ``--passes`` passes, each one Ray
   task with a search trial's resources and one torch thread, each pass over every net in a new
   shuffled order, timing the training step (``nas.evaluate.time_train_step``, the config's
   timing steps, warm-up and clock) at the final size and at the proxy's; the table keeps every
   pass and the median. Timed before any training starts, so no trial of this recording shares
   the machine with them.
3. **Training**: every net with every seed, as a search trial with that seed trains it: a Ray
   Tune run per seed of the project's own trainable (``nas.search.trial.run_trial`` with
   ``default_evaluate``: ``evaluate_candidate`` on the data the driver loaded with that seed),
   ``concurrent`` trials at a time, each reporting every epoch (held-out accuracy, training
   loss, the epoch's training CPU seconds) and its closing record (test accuracy), plus the
   trial's process CPU seconds at each report and at the end.

The table is rewritten (atomically, gzip JSON) after every timing pass and every finished run,
so a killed recording loses at most the runs in flight: run the same command again and it skips
what is recorded. Run it with more ``--seeds`` later to add seeds to a finished table. The file
holds its provenance: every command that added to it, with the git commit, the machine, the
library versions and the dates, and what the recording cost in CPU hours.

    python bench/record_table.py configs/bench.yaml                      # 2 seeds
    python bench/record_table.py configs/bench.yaml --seeds 3            # add a third
    python bench/record_table.py configs/bench.yaml --timing-only        # the space's figures
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml

from nas.search import SearchConfig
from nas.search.table import TABLE_FORMAT, read_table_data, write_table_data
from searchspace.errors import EffnasError

REPO = Path(__file__).resolve().parents[1]
#: What a run keeps of each epoch's report, by the report's key.
EPOCH_KEYS = {
    "accuracy": "accuracy",
    "train_loss": "train_loss",
    "epoch_cpu_seconds": "epoch_cpu_seconds",
    "cpu_at_epoch": "cpu_seconds",
}
#: What a run keeps of the closing record.
FINAL_KEYS = ("status", "failure", "test_accuracy", "train_seconds", "step_time_ms", "node")


# -- the table's skeleton --------------------------------------------------------------------


def _comparable(config: SearchConfig) -> dict[str, Any]:
    """The config as a table stores it (through YAML, so that tuples and lists compare equal)."""
    return yaml.safe_load(yaml.safe_dump(config.to_dict(), sort_keys=False))


def _records(stored: Any, config: SearchConfig) -> bool:
    """Whether a table's stored config reads as ``config``: read back with today's defaults, so
    that a setting added since the recording began, at its default, is the same config."""
    try:
        return _comparable(SearchConfig.from_dict(stored)) == _comparable(config)
    except EffnasError:  # not a config, or one with a key no longer known
        return False


def new_table(config: SearchConfig) -> dict[str, Any]:
    """An empty table for ``config``: every net with its counts, no timing, no run."""
    from searchspace.profile import spec_flops, spec_parameters

    nets = []
    for spec in config.space.all_specs():
        nets.append(
            {
                "spec": spec.to_string(),
                "hash": spec.hash,
                "params": spec_parameters(spec),
                "flops": spec_flops(spec, config.timing_size),
                "flops_proxy": spec_flops(spec, config.image_size),
                "runs": {},
            }
        )
    return {
        "format": TABLE_FORMAT,
        "config": _comparable(config),
        "seeds": [],
        "timing": {},
        "reference": {},
        "nets": nets,
        "provenance": {"sessions": []},
    }


def open_table(config: SearchConfig, path: Path) -> dict[str, Any]:
    """The table at ``path`` if it records ``config``, else a new one.

    Raises:
        EffnasError: ``path`` holds a table of another config (another space or proxy).
    """
    if not path.exists():
        return new_table(config)
    data = read_table_data(path)
    if data.get("format") != TABLE_FORMAT or not _records(data.get("config"), config):
        raise EffnasError(
            f"{path} records another config (or is no table); give another --out, or the "
            f"config it was recorded with"
        )
    return data


def provenance(argv: list[str]) -> dict[str, Any]:
    """Who recorded what, where and with what: one session of the recording."""
    import optuna
    import ray
    import torch

    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        except OSError:
            return ""
        return done.stdout.strip() if done.returncode == 0 else ""

    return {
        "command": " ".join(["python", "bench/record_table.py", *argv]),
        "commit": git("rev-parse", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "host": socket.gethostname(),
        "machine": {
            "platform": platform.platform(),
            "processor": _cpu_model(),
            "cpus": os.cpu_count(),
        },
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ray": ray.__version__,
        "optuna": optuna.__version__,
        # Which machine: a new VM (or a reboot) has a new boot id. Runs recorded on machines of
        # different speeds cost different CPU seconds; each run names its session.
        "boot_id": _boot_id(),
        "started": _now(),
    }


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# -- step times ------------------------------------------------------------------------------


def time_pass(
    specs: list[str], reference: str, sizes: dict[str, int], setup: Any, order_seed: int
) -> dict[str, Any]:
    """On one Ray worker: one timing pass over ``specs`` and the reference (last), in an order
    shuffled by ``order_seed``; per size name, each net's median step (ms), in ``specs`` order
    (the reference last), and the pass's CPU seconds."""
    import dataclasses

    import torch

    from nas.evaluate.reference import reference_timing
    from nas.evaluate.timing import time_train_step
    from searchspace import ArchSpec, build_model

    torch.set_num_threads(1)
    started = time.process_time()
    setups = {name: dataclasses.replace(setup, image_size=size) for name, size in sizes.items()}
    # The trials that follow time the reference at the final size first thing: do it now, into
    # the disk cache they read, so that no trial's CPU seconds carry it.
    reference_timing(setups["final"], reference=reference)
    torch.manual_seed(0)
    models = [build_model(ArchSpec.from_string(spec)) for spec in [*specs, reference]]
    order = list(range(len(models)))
    random.Random(order_seed).shuffle(order)
    times = {name: [math.nan] * len(models) for name in setups}
    for index in order:
        for name, step in setups.items():
            times[name][index] = time_train_step(models[index], step).median_ms
    return {"times": times, "cpu_seconds": time.process_time() - started}


def record_timing(config: SearchConfig, table: dict[str, Any], passes: int, save) -> None:
    """Run the timing passes the table lacks (``passes`` in all), saving after each."""
    from nas.evaluate.timing import StepSetup
    from nas.search.tasks import TaskFailure, run_tasks
    from searchspace import load_arch

    timing = table["timing"]
    done = len(timing.get("passes_cpu_seconds", []))
    if done >= passes:
        return
    eval_config = config.eval_config()
    reference = load_arch(eval_config.reference).replace(num_classes=config.space.num_classes)
    setup = StepSetup.for_config(eval_config, config.timing_size, config.space.num_classes, "cpu")
    sizes = {"final": config.timing_size, "proxy": config.image_size}
    specs = [net["spec"] for net in table["nets"]]
    timing.update(
        clock=setup.clock,
        steps=setup.steps,
        warmup=setup.warmup,
        batch_size=setup.batch_size,
        threads=1,
        sizes=sizes,
        reference=reference.to_string(),
    )
    for index in range(done, passes):
        print(f"timing pass {index + 1}/{passes}: {len(specs) + 1} nets ...", flush=True)
        started = time.perf_counter()
        (value,) = run_tasks(
            time_pass,
            [(specs, reference.to_string(), sizes, setup, index)],
            resources=config.resources,
            concurrent=1,
        )
        if isinstance(value, TaskFailure):
            raise SystemExit(f"record_table: timing pass {index + 1} failed: {value.reason}")
        for name in sizes:
            *nets, ref = value["times"][name]
            for net, ms in zip(table["nets"], nets, strict=True):
                net.setdefault("step_time_passes_ms", {}).setdefault(name, []).append(ms)
            table["reference"].setdefault("step_time_passes_ms", {}).setdefault(name, []).append(
                ref
            )
        timing.setdefault("passes_cpu_seconds", []).append(value["cpu_seconds"])
        _summarize_timing(table, reference)
        save()
        print(f"  took {(time.perf_counter() - started) / 60:.1f} min", flush=True)


def _summarize_timing(table: dict[str, Any], reference: Any) -> None:
    """Each net's (and the reference's) median over the passes so far."""
    from nas.evaluate.reference import reference_flops
    from searchspace.profile import spec_parameters

    for entry in [*table["nets"], table["reference"]]:
        passes = entry["step_time_passes_ms"]
        entry["step_time_ms"] = statistics.median(passes["final"])
        entry["step_time_proxy_ms"] = statistics.median(passes["proxy"])
    sizes = table["timing"]["sizes"]
    table["reference"].update(
        spec=reference.to_string(),
        params=spec_parameters(reference),
        flops=reference_flops(reference.to_string(), reference.num_classes, sizes["final"]),
        flops_proxy=reference_flops(reference.to_string(), reference.num_classes, sizes["proxy"]),
    )


def space_figures(table: dict[str, Any]) -> dict[str, float]:
    """What makes the space a useful benchmark, from the step times and the counts: the step
    time's spread (slowest over fastest), Kendall's tau of FLOPs (and of parameters) against the
    step time, the slope of log step time on log FLOPs, and how two passes agree."""
    import numpy as np
    from scipy.stats import kendalltau

    nets = [net for net in table["nets"] if "step_time_ms" in net]
    step = np.array([net["step_time_ms"] for net in nets])
    flops = np.array([net["flops"] for net in nets], dtype=float)
    params = np.array([net["params"] for net in nets], dtype=float)
    figures = {
        "nets": len(nets),
        "step_time_min_ms": float(step.min()),
        "step_time_max_ms": float(step.max()),
        "step_time_spread": float(step.max() / step.min()),
        "flops_spread": float(flops.max() / flops.min()),
        "params_spread": float(params.max() / params.min()),
        "tau_flops_step_time": float(kendalltau(flops, step).statistic),
        "tau_params_step_time": float(kendalltau(params, step).statistic),
        "log_step_time_on_log_flops_slope": float(np.polyfit(np.log(flops), np.log(step), 1)[0]),
    }
    passes = [net["step_time_passes_ms"]["final"] for net in nets]
    if len(passes[0]) > 1:
        first, second = zip(*[(p[0], p[1]) for p in passes], strict=True)
        figures["tau_pass_1_pass_2"] = float(kendalltau(first, second).statistic)
    return figures


# -- training --------------------------------------------------------------------------------


def timed_evaluate(spec: Any, settings: Any, report: Callable[[Mapping[str, Any]], None]) -> dict:
    """The search's ``default_evaluate``, with the trial's process CPU seconds added to every
    epoch's report (``cpu_seconds``: from the trial's start) and to its record."""
    from nas.search.trial import default_evaluate

    started = time.process_time()

    def timed(metrics: Mapping[str, Any]) -> None:
        report({**metrics, "cpu_seconds": time.process_time() - started})

    record = default_evaluate(spec, settings, timed)
    return {**record, "cpu_seconds": time.process_time() - started}


def _recorder(table: dict[str, Any], seed: int, save, pending: int, session: int) -> Any:
    """A Tune callback that files every trial's epochs and closing record as the run of its net
    with ``seed`` (recorded in provenance session ``session``), saves the table after each run,
    and prints a line of progress for it (of ``pending`` runs this Tune run trains)."""
    from ray import tune

    nets = {net["hash"]: net for net in table["nets"]}

    class Recorder(tune.Callback):
        def __init__(self) -> None:
            self.epochs: dict[str, list[dict[str, Any]]] = {}
            self.recorded = 0
            self.started = time.monotonic()

        def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
            if not result.get("final"):
                self.epochs.setdefault(trial.trial_id, []).append(result)
                return
            epochs = self.epochs.pop(trial.trial_id, [])
            run = {
                key: [_finite_or_none(e.get(name)) for e in epochs]
                for key, name in EPOCH_KEYS.items()
            }
            run.update({key: _finite_or_none(result.get(key)) for key in FINAL_KEYS})
            # A trial whose evaluation raised has a failed record without its CPU seconds.
            run["cpu_seconds"] = result.get("cpu_seconds", result.get("duration_s", 0.0))
            run["session"] = session
            nets[result["hash"]]["runs"][str(seed)] = run
            self.recorded += 1
            save()
            hours_left = (
                (time.monotonic() - self.started) / self.recorded * (pending - self.recorded) / 3600
            )
            print(
                f"seed {seed}: {self.recorded}/{pending} recorded, this one "
                f"{run['cpu_seconds']:.0f} CPU s; about {hours_left:.1f} h left for this seed",
                flush=True,
            )

    return Recorder()


def record_seed(
    config: SearchConfig, table: dict[str, Any], seed: int, work: Path, save, session: int = 0
) -> tuple[int, int]:
    """Train every net without a run for ``seed`` in one Tune run; (recorded, pending)."""
    from ray import tune

    from nas.search.driver import load_search_data
    from nas.search.trial import TrialSettings, run_trial

    pending = [net["spec"] for net in table["nets"] if str(seed) not in net["runs"]]
    if not pending:
        return 0, 0
    seeded = config.replace(seed=seed)
    print(f"seed {seed}: training {len(pending)} nets, {config.concurrent} at a time", flush=True)
    settings = TrialSettings(
        metric_names=["accuracy", "reward"],
        evaluate=timed_evaluate,
        eval_config=seeded.eval_config(),
        threads=max(1, int(config.resources.cpus)),
        data=load_search_data(seeded),
        per_epoch=True,  # held-out accuracy after every epoch: the learning curves
    )
    resources = {"cpu": config.resources.cpus, "gpu": config.resources.gpus}
    trainable = tune.with_resources(tune.with_parameters(run_trial, settings=settings), resources)
    recorder = _recorder(table, seed, save, len(pending), session)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    tuner = tune.Tuner(
        trainable,
        param_space={"spec": tune.grid_search(pending)},
        tune_config=tune.TuneConfig(max_concurrent_trials=config.concurrent, reuse_actors=True),
        run_config=tune.RunConfig(
            name=f"seed{seed}-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=str(work.resolve()),
            failure_config=tune.FailureConfig(max_failures=config.max_failures),
            callbacks=[recorder],
            verbose=0,
        ),
    )
    tuner.fit()
    return recorder.recorded, len(pending) - recorder.recorded


def cost(table: dict[str, Any]) -> dict[str, float]:
    """What the recording spent so far, in CPU hours: training (every run's evaluation) and the
    timing passes."""
    runs = [run for net in table["nets"] for run in net["runs"].values()]
    return {
        "runs": len(runs),
        "train_cpu_hours": sum(run["cpu_seconds"] for run in runs) / 3600,
        "timing_cpu_hours": sum(table["timing"].get("passes_cpu_seconds", [])) / 3600,
    }


# -- the command -----------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="search config YAML: the space and the proxy")
    parser.add_argument(
        "--seeds", type=int, default=2, help="training seeds: the config's seed and the next "
        "ones (default 2)"
    )  # fmt: skip
    parser.add_argument("--passes", type=int, default=3, help="timing passes (default 3)")
    parser.add_argument("--out", type=Path, default=Path("bench/data/table.json.gz"))
    parser.add_argument(
        "--work", type=Path, default=Path("runs/bench/table"), help="Tune's experiments"
    )
    parser.add_argument(
        "--timing-only", action="store_true", help="time the nets, print the space's figures"
    )
    parser.add_argument("--address", help="Ray cluster address (default: Ray on 127.0.0.1)")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.passes < 1:
        parser.error("--seeds and --passes must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    from nas.cluster import ray_session

    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    try:
        config = SearchConfig.load(args.config)
        table = open_table(config, args.out)
    except EffnasError as error:
        print(f"record_table: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    session = provenance(argv)
    table["provenance"]["sessions"].append(session)
    seeds = [] if args.timing_only else [config.seed + i for i in range(args.seeds)]
    table["seeds"] = sorted(set(table["seeds"]) | set(seeds))

    def save() -> None:
        session["updated"] = _now()
        table["provenance"]["cost"] = cost(table)
        write_table_data(args.out, table)

    print(f"command: {session['command']}", flush=True)
    print(f"{len(table['nets'])} nets, seeds {seeds}, table {args.out}", flush=True)
    save()
    pending = 0
    with ray_session(args.address):
        record_timing(config, table, args.passes, save)
        figures = space_figures(table)
        table["timing"]["space"] = figures
        save()
        print("space: " + ", ".join(f"{k} {v:.3g}" for k, v in figures.items()), flush=True)
        if not args.timing_only:
            for seed in seeds:
                _, left = record_seed(
                    config, table, seed, args.work, save, len(table["provenance"]["sessions"]) - 1
                )
                pending += left
    save()
    spent = table["provenance"]["cost"]
    print(
        f"recorded {spent['runs']} runs; training {spent['train_cpu_hours']:.2f} CPU h, timing "
        f"{spent['timing_cpu_hours']:.2f} CPU h; wrote {args.out}",
        flush=True,
    )
    if pending:
        print(f"{pending} runs failed to record (see Tune's log); run again", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
