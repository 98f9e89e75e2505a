"""Can a proxy tell nets apart? Accuracy spread across candidates against spread across seeds.

A search ranks candidates by held-out accuracy after a brief training run. That ranking means
something only if the accuracies of different candidates differ by more than the accuracies of
one candidate trained twice. This benchmark measures both on one grid:

1. ``--candidates`` (K) random nets are sampled from the config's search space
   (``SearchSpace.sample``, seeded by ``--seed``; the same K nets for every option).
2. Every net is evaluated with every one of ``--seeds`` (S) training seeds (the config's seed
   and the following integers), exactly as a search trial evaluates it
   (``nas.evaluate.evaluate_candidate`` with ``config.eval_config()``, changed by ``--set``).
   The data is loaded once per worker with the config's seed; a training seed moves the
   initial weights, the shuffle order and dropout. Seed ``s`` gives every net the same shuffle
   order, as a search gives every candidate the config's one seed.
3. With ``a[k, s]`` the held-out accuracy of net ``k`` at seed ``s``:

   - seed spread ``sd_seed = sqrt(mean_k var_s(a[k, :]))``, the pooled within-net standard
     deviation (``ddof=1``): how far one evaluation of a net moves from seed to seed;
   - candidate spread ``sd_net = sqrt(max(0, var_k(mean_s a[k, :]) - sd_seed**2 / S))``: the
     standard deviation of the nets' seed-averaged accuracies, less the seed noise left in a
     mean of S seeds (floored at 0), i.e. the spread of the nets' true proxy accuracies;
   - ratio ``sd_net / sd_seed`` (the target: at least 3, the interval's lower end at least 2).

   Derived from the same runs at no further cost:

   - ``mean of 2 seeds``: a proxy that averages two runs. Seeds are paired (0, 1), (2, 3), ...;
     its seed spread is the pooled within-net standard deviation of the pair means, its ratio
     ``sd_net`` over that, its cost twice one run's;
   - ``shared seed``: the noise a search actually ranks with, where every candidate trains with
     the same seed (same data order): the net x seed interaction of a two-way analysis of
     variance, ``sqrt(sum(residual**2) / ((K - 1) (S - 1)))``, so that a seed that helps every
     net alike does not count as noise.

4. Intervals: percentile 95% bootstrap, 10,000 resamples: nets with replacement, and seeds with
   replacement within each drawn net (for ``shared seed``: one draw of seed columns for all
   nets, keeping the crossing the analysis needs). ``scipy.stats.bootstrap`` resamples one
   level only; this two-level resampling is a few array operations
   (``results.correlation.bootstrap_indices`` draws the net level).

Every evaluation is one line of ``--jsonl`` as it lands (option label, net, seed, accuracy,
test accuracy, CPU seconds), so a killed run resumes where it stopped and several options
share one file; ``--report`` prints the table of every option in the file without training.
Each evaluation runs in one of ``--processes`` worker processes (2 at most, one torch thread
each, as two search trials on two cores); cost is the process's CPU seconds per evaluation.

    python bench/dataset_signal.py --jsonl runs/bench/signal.jsonl               # quick proxy
    python bench/dataset_signal.py --jsonl runs/bench/signal.jsonl --set epochs=8
    python bench/dataset_signal.py --jsonl runs/bench/signal.jsonl --report --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import random
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas.evaluate import EvalConfig, evaluate_candidate
from nas.search import SearchConfig
from results.correlation import bootstrap_indices
from searchspace import ArchSpec, load_arch

#: Data loaded in this worker process, by (dataset, image size, seed): loaded once, reused.
_DATA: dict[tuple, Any] = {}

RESAMPLES = 10_000
CONFIDENCE = 0.95


def _start_worker() -> None:
    import torch

    # One thread per process: two processes on two cores, as two search trials would run.
    torch.set_num_threads(1)


def _evaluate(spec_string: str, config: EvalConfig, data_seed: int) -> dict[str, Any]:
    """One evaluation in a worker: the data split by ``data_seed``, training by ``config.seed``."""
    spec = load_arch(spec_string)
    key = (config.dataset, config.image_size_for(spec), data_seed)
    if key not in _DATA:
        _DATA.clear()
        _DATA[key] = config.replace(seed=data_seed).load_data(spec)
    data = _DATA[key]
    # CPU time of this process (one thread): what the evaluation costs, however loaded the
    # machine is; wall times on a shared machine say more about the neighbours.
    cpu_started = time.process_time()
    record = evaluate_candidate(spec, config, data=data).to_dict()
    record["cpu_seconds"] = time.process_time() - cpu_started
    record["heldout_images"] = len(data.heldout)
    return record


def _sample(config: SearchConfig, count: int, seed: int) -> list[ArchSpec]:
    """``count`` distinct random specs of the config's space."""
    rng = random.Random(seed)
    specs: list[ArchSpec] = []
    while len(specs) < count:
        spec = config.space.sample(rng)
        if spec.hash not in {s.hash for s in specs}:
            specs.append(spec)
    return specs


def _parse_sets(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs, each value read as YAML (``8``, ``0.5``, ``null``, ``cosine``)."""
    changes: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set wants KEY=VALUE, got {item!r}")
        changes[key] = yaml.safe_load(value)
    return changes


# -- statistics ---------------------------------------------------------------------------------


def _spreads(a: np.ndarray) -> dict[str, np.ndarray]:
    """Seed and candidate spreads of ``a[..., k, s]`` (leading axes: bootstrap resamples)."""
    seeds = a.shape[-1]
    pooled_var = a.var(axis=-1, ddof=1).mean(axis=-1)
    between = np.maximum(0.0, a.mean(axis=-1).var(axis=-1, ddof=1) - pooled_var / seeds)
    return {"sd_seed": np.sqrt(pooled_var), "sd_net": np.sqrt(between)}


def _pair_sd(a: np.ndarray) -> np.ndarray:
    """Pooled within-net SD of the means of seed pairs (0, 1), (2, 3), ... of ``a[..., k, s]``."""
    pairs = a.shape[-1] // 2
    means = a[..., : 2 * pairs].reshape(*a.shape[:-1], pairs, 2).mean(axis=-1)
    return np.sqrt(means.var(axis=-1, ddof=1).mean(axis=-1))


def _interaction_sd(a: np.ndarray) -> np.ndarray:
    """Net x seed interaction SD of ``a[..., k, s]`` (two-way ANOVA without replication)."""
    nets, seeds = a.shape[-2:]
    residual = (
        a
        - a.mean(axis=-1, keepdims=True)
        - a.mean(axis=-2, keepdims=True)
        + a.mean(axis=(-2, -1), keepdims=True)
    )
    return np.sqrt((residual**2).sum(axis=(-2, -1)) / ((nets - 1) * (seeds - 1)))


def _ratio(net: np.ndarray, noise: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(noise > 0, net / noise, np.inf)


def _interval(values: np.ndarray) -> list[float]:
    tail = (1 - CONFIDENCE) / 2 * 100
    # "nearest": a resample whose seed spread is 0 has an infinite ratio, and interpolating
    # between it and a finite one would give NaN.
    return [float(v) for v in np.percentile(values, [tail, 100 - tail], method="nearest")]


def signal(a: np.ndarray, *, seed: int = 0) -> dict[str, Any]:
    """The spreads and ratios of the ``K x S`` accuracy grid ``a``, with bootstrap intervals."""
    nets, seeds = a.shape
    point = _spreads(a)
    shared_sd = _interaction_sd(a)
    pair_sd = _pair_sd(a) if seeds >= 4 else math.nan
    rng = np.random.default_rng(seed + 1)
    net_draw = bootstrap_indices(nets, RESAMPLES, seed)  # (B, K)
    # Two levels: nets with replacement, then seeds with replacement within each drawn net.
    seed_draw = rng.integers(0, seeds, size=(RESAMPLES, nets, seeds))
    nested = a[net_draw[:, :, None], seed_draw]  # (B, K, S)
    # Crossed, for the interaction: one draw of seed columns shared by all nets.
    column_draw = rng.integers(0, seeds, size=(RESAMPLES, 1, seeds))
    crossed = a[net_draw[:, :, None], column_draw]
    boot = _spreads(nested)
    boot_crossed = _spreads(crossed)
    figures = {
        "nets": nets,
        "seeds": seeds,
        "mean_accuracy": float(a.mean()),
        "sd_seed": float(point["sd_seed"]),
        "sd_net": float(point["sd_net"]),
        "ratio": float(_ratio(point["sd_net"], point["sd_seed"])),
        "ratio_interval": _interval(_ratio(boot["sd_net"], boot["sd_seed"])),
        "sd_seed_shared": float(shared_sd),
        "ratio_shared": float(_ratio(point["sd_net"], shared_sd)),
        "ratio_shared_interval": _interval(
            _ratio(boot_crossed["sd_net"], _interaction_sd(crossed))
        ),
    }
    if seeds >= 4:  # two pairs at least, for a spread of pair means
        figures["sd_seed_mean2"] = float(pair_sd)
        figures["ratio_mean2"] = float(_ratio(point["sd_net"], pair_sd))
        figures["ratio_mean2_interval"] = _interval(_ratio(boot["sd_net"], _pair_sd(nested)))
    return figures


# -- the grid -----------------------------------------------------------------------------------


def _read(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _grid(rows: list[dict[str, Any]], key: str) -> np.ndarray | None:
    """The complete ``K x S`` grid of ``key`` in ``rows`` (one option), or ``None``."""
    nets = sorted({r["net"] for r in rows})
    seeds = sorted({r["seed"] for r in rows})
    values = {(r["net"], r["seed"]): r[key] for r in rows if r["status"] == "ok"}
    if len(nets) < 2 or len(seeds) < 2 or len(values) < len(nets) * len(seeds):
        return None
    return np.array([[values[n, s] for s in seeds] for n in nets], dtype=float)


def summarize(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per option label: cost and :func:`signal` of the held-out (and the test) accuracies."""
    summary: dict[str, dict[str, Any]] = {}
    for label in dict.fromkeys(r["label"] for r in rows):
        mine = [r for r in rows if r["label"] == label]
        grid = _grid(mine, "accuracy")
        entry: dict[str, Any] = {
            "settings": mine[0]["settings"],
            "evaluations": len(mine),
            "cpu_seconds": float(np.mean([r["cpu_seconds"] for r in mine])),
            "train_cpu_seconds": float(np.mean([r["train_seconds"] for r in mine])),
        }
        if grid is not None:
            entry["heldout"] = signal(grid)
            test = _grid(mine, "test_accuracy")
            if test is not None:
                entry["test"] = signal(test)
                # Held-out and test images together: what twice the held-out images would buy.
                entry["heldout_and_test"] = signal((grid + test) / 2)
        summary[label] = entry
    return summary


def _cell(figures: dict[str, Any], name: str) -> str:
    if name not in figures:
        return "-"
    low, high = figures[f"{name}_interval"]
    return f"{figures[name]:.2f} [{low:.2f}, {high:.2f}]"


#: The accuracies a table row measures the signal on.
MEASURES = {
    "heldout": "held-out",
    "heldout_and_test": "held-out+test",
}


def _table(summary: dict[str, dict[str, Any]]) -> str:
    header = (
        f"{'option':<24} {'images':<13} {'K x S':>6} {'acc':>6} {'cpu s':>6} {'sd seed':>8} "
        f"{'sd net':>7} {'ratio [95%]':>17} {'mean2 ratio [95%]':>19} {'shared ratio [95%]':>19}"
    )
    lines = [header, "-" * len(header)]
    for label, entry in summary.items():
        if "heldout" not in entry:
            lines.append(f"{label:<24} incomplete ({entry['evaluations']} evaluations)")
            continue
        for measure, name in MEASURES.items():
            s = entry[measure]
            lines.append(
                f"{label:<24} {name:<13} {s['nets']:>2} x {s['seeds']:<2} "
                f"{s['mean_accuracy']:>6.1%} {entry['cpu_seconds']:>6.0f} "
                f"{s['sd_seed'] * 100:>7.2f}p {s['sd_net'] * 100:>6.2f}p "
                f"{_cell(s, 'ratio'):>17} {_cell(s, 'ratio_mean2'):>19} "
                f"{_cell(s, 'ratio_shared'):>19}"
            )
    return "\n".join(lines)


def _run(args: argparse.Namespace, base: EvalConfig, specs: list[ArchSpec], label: str) -> None:
    done = {(r["label"], r["hash"], r["seed"]) for r in _read(args.jsonl)}
    # Seed-major: after the first seeds of every net the partial grid is already readable.
    jobs = [
        (k, spec, base.seed + s)
        for s in range(args.seeds)
        for k, spec in enumerate(specs)
        if (label, spec.hash, base.seed + s) not in done
    ]
    print(f"{label}: {len(jobs)} evaluations to run ({len(done)} lines in {args.jsonl})")
    if not jobs:
        return
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the spawned workers
    context = multiprocessing.get_context("spawn")  # no torch state shared from this process
    args.jsonl.parent.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(args.processes, context, initializer=_start_worker) as pool:
        futures = {
            pool.submit(_evaluate, spec.to_string(), base.replace(seed=seed), base.seed): (
                k,
                spec,
                seed,
            )
            for k, spec, seed in jobs
        }
        for future in as_completed(futures):
            k, spec, seed = futures[future]
            r = future.result()
            line = {
                "label": label,
                "settings": args.set,
                "net": k,
                "seed": seed,
                "hash": spec.hash,
                "spec": r["spec"],
                "status": r["status"],
                "accuracy": r["accuracy"],
                "test_accuracy": r["test_accuracy"],
                "cpu_seconds": r["cpu_seconds"],
                "train_seconds": r["train_seconds"],
                "duration_s": r["duration_s"],
                "heldout_images": r["heldout_images"],
            }
            with args.jsonl.open("a") as out:
                out.write(json.dumps(line) + "\n")
            print(
                f"  net {k} seed {seed}: accuracy {r['accuracy']:.4f}, "
                f"{r['cpu_seconds']:.0f} cpu s",
                flush=True,
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/quick.yaml", help="search config (YAML)")
    parser.add_argument("--dataset", help="measure this dataset instead of the config's")
    parser.add_argument("--candidates", type=int, default=6, help="random nets K (6)")
    parser.add_argument("--seeds", type=int, default=4, help="training seeds S per net (4)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the candidate sampling")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change an evaluation setting (EvalConfig field), e.g. epochs=8; repeatable",
    )
    parser.add_argument("--label", help="option name in the JSONL (default: the --set items)")
    parser.add_argument("--processes", type=int, default=2, choices=[1, 2])
    parser.add_argument(
        "--jsonl", type=Path, required=True, help="one line per evaluation; resumed"
    )
    parser.add_argument("--report", action="store_true", help="only summarize --jsonl")
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args()
    if args.candidates < 2 or args.seeds < 2:
        parser.error("--candidates and --seeds must be at least 2")

    if not args.report:
        config = SearchConfig.load(args.config)
        if args.dataset:
            config = config.replace(dataset=args.dataset)
        base = config.eval_config().replace(**_parse_sets(args.set))
        label = args.label or (" ".join(args.set) if args.set else "quick proxy")
        specs = _sample(config, args.candidates, args.seed)
        print(
            f"{args.config} {label}: {len(specs)} nets x {args.seeds} seeds, {base.epochs} "
            f"epochs at {base.image_size} px, batch {base.batch_size}; "
            f"{args.processes} processes x 1 thread",
            flush=True,
        )
        _run(args, base, specs, label)
    summary = summarize(_read(args.jsonl))
    print()
    print(_table(summary))
    print(
        "\n'cpu s': CPU seconds of one evaluation (one thread); 'mean2': a proxy averaging two "
        "seeds (twice the cost); 'shared': noise when every candidate trains with the same seed"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
