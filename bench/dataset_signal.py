"""Can a dataset tell nets apart? Accuracy spread across candidates against spread across seeds.

A search ranks candidates by held-out accuracy after a brief training run. That ranking means
something only if the accuracies of different candidates differ by more than the accuracies of
one candidate trained twice. This benchmark measures both, with the quick search's own settings:

1. ``--candidates`` random nets are sampled from the config's search space
   (``SearchSpace.sample``, seeded by ``--seed``) and each is evaluated exactly as a search
   trial evaluates it (``nas.evaluate.evaluate_candidate`` with ``config.eval_config()``).
2. The candidate with the median accuracy is trained again with ``--seeds`` training seeds in
   all (its first run is seed ``config.seed``; the others are the following integers). The data
   is identical in every run: it is loaded once, with the config's seed, and handed to
   ``evaluate_candidate``; only the seed of the weights, the shuffle order and dropout changes.
   ``--retrain K`` retrains K candidates instead, at evenly spaced ranks (3: the quartiles and
   the median), and pools their seed variances: how much a rerun moves differs from net to net.
3. Reported per dataset: the standard deviation of accuracy across candidates, across seeds
   (pooled over the retrained candidates), their ratio (the target is at least 3), and the
   binomial sampling error
   ``sqrt(p (1 - p) / n)`` of one accuracy on the ``n`` held-out images at the candidates' mean
   accuracy ``p``. The contrast datasets (``--contrast``, ``mnist5k`` by default) are measured in
   the same run, with the same candidates and settings.

Each evaluation runs in one of ``--processes`` worker processes (2 at most, one torch thread
each, as two concurrent search trials on two cores). With 3 seeds the seed spread is itself a
rough estimate (a standard deviation from 3 values is uncertain by about half of itself).

    python bench/dataset_signal.py                            # configs/quick.yaml, vs mnist5k
    python bench/dataset_signal.py --json runs/bench/dataset_signal.json
    python bench/dataset_signal.py --contrast none            # the config's dataset only
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import random
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas.evaluate import EvalConfig, evaluate_candidate
from nas.search import SearchConfig
from searchspace import ArchSpec, load_arch

#: Data loaded in this worker process, by (dataset, image size, seed): loaded once, reused.
_DATA: dict[tuple, Any] = {}


def _start_worker() -> None:
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


def _summary(
    candidates: list[dict[str, Any]], retrained: list[list[dict[str, Any]]]
) -> dict[str, Any]:
    accuracies = [r["accuracy"] for r in candidates if r["status"] == "ok"]
    reruns = [[r["accuracy"] for r in runs if r["status"] == "ok"] for runs in retrained]
    if len(accuracies) < 2 or any(len(runs) < 2 for runs in reruns):
        raise SystemExit("too few successful evaluations to measure a spread")
    across = statistics.stdev(accuracies)
    # Pooled: the root of the mean of the retrained candidates' variances (equal seed counts).
    within = math.sqrt(statistics.mean(statistics.variance(runs) for runs in reruns))
    mean = statistics.mean(accuracies)
    heldout = candidates[0]["heldout_images"]
    return {
        "heldout_images": heldout,
        "mean_accuracy": mean,
        "min_accuracy": min(accuracies),
        "max_accuracy": max(accuracies),
        "std_across_candidates": across,
        "std_across_seeds": within,
        "ratio": across / within if within > 0 else math.inf,
        "binomial_error": math.sqrt(mean * (1 - mean) / heldout),
        "retrained": [
            {"spec": runs[0]["spec"], "accuracies": accs, "std": statistics.stdev(accs)}
            for runs, accs in zip(retrained, reruns, strict=True)
        ],
        "candidate_accuracies": [r["accuracy"] for r in candidates],
        "candidate_seconds": [r["duration_s"] for r in candidates],
        "candidate_cpu_seconds": [r["cpu_seconds"] for r in candidates],
    }


def _measure(
    pool: ProcessPoolExecutor, base: EvalConfig, specs: list[ArchSpec], args: argparse.Namespace
) -> dict[str, Any]:
    """Evaluate every spec, then retrain the median one with further seeds, on ``base.dataset``."""
    strings = [spec.to_string() for spec in specs]
    futures = {pool.submit(_evaluate, s, base, base.seed): i for i, s in enumerate(strings)}
    for future in as_completed(futures):
        record = future.result()
        print(
            f"  {base.dataset} candidate {futures[future] + 1:>2}: accuracy "
            f"{record['accuracy']:.4f}, {record['params']:>8,} params, "
            f"{record['duration_s']:.0f} s  {record['spec']}",
            flush=True,
        )
    candidates = [future.result() for future in futures]
    ranked = sorted(range(len(specs)), key=lambda i: candidates[i]["accuracy"] or 0.0)
    # Evenly spaced ranks: 1 -> the median, 3 -> the quartiles and the median.
    picks = [
        ranked[min(len(ranked) - 1, round((j + 1) * len(ranked) / (args.retrain + 1)))]
        for j in range(args.retrain)
    ]
    # Seed base.seed is the candidate run itself (the same seed gives the same result on a CPU).
    reruns = {
        pick: [
            pool.submit(_evaluate, strings[pick], base.replace(seed=base.seed + k), base.seed)
            for k in range(1, args.seeds)
        ]
        for pick in picks
    }
    retrained = []
    for pick, futures_of_pick in reruns.items():
        runs = [candidates[pick]] + [future.result() for future in futures_of_pick]
        retrained.append(runs)
        print(
            f"  {base.dataset} candidate {pick + 1} over {args.seeds} seeds: "
            + ", ".join(f"{r['accuracy']:.4f}" for r in runs),
            flush=True,
        )
    return _summary(candidates, retrained)


def _table(results: dict[str, dict[str, Any]]) -> str:
    header = (
        f"{'dataset':<12} {'held-out':>8} {'mean acc':>8} {'min':>6} {'max':>6} "
        f"{'std cand':>8} {'std seeds':>9} {'ratio':>6} {'binomial':>8} {'cpu s':>6}"
    )
    lines = [header, "-" * len(header)]
    for name, r in results.items():
        lines.append(
            f"{name:<12} {r['heldout_images']:>8,} {r['mean_accuracy']:>8.2%} "
            f"{r['min_accuracy']:>6.1%} {r['max_accuracy']:>6.1%} "
            f"{r['std_across_candidates'] * 100:>7.2f}p {r['std_across_seeds'] * 100:>8.2f}p "
            f"{r['ratio']:>6.2f} {r['binomial_error'] * 100:>7.2f}p "
            f"{sum(r['candidate_cpu_seconds']):>6.0f}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/quick.yaml", help="search config (YAML)")
    parser.add_argument("--dataset", help="measure this dataset instead of the config's")
    parser.add_argument(
        "--contrast", default="mnist5k", help="further datasets, comma-separated, or 'none'"
    )
    parser.add_argument("--candidates", type=int, default=12, help="random candidates (12)")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds of the median one")
    parser.add_argument(
        "--retrain", type=int, default=1, help="candidates retrained with --seeds (1: the median)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the candidate sampling")
    parser.add_argument("--processes", type=int, default=2, choices=[1, 2])
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.candidates < 2 or args.seeds < 2:
        parser.error("--candidates and --seeds must be at least 2")
    if not 1 <= args.retrain <= args.candidates:
        parser.error("--retrain must be between 1 and --candidates")

    config = SearchConfig.load(args.config)
    if args.dataset:
        config = config.replace(dataset=args.dataset)
    base = config.eval_config()
    datasets = [base.dataset] + [
        name for name in args.contrast.split(",") if name and name != "none"
    ]
    specs = _sample(config, args.candidates, args.seed)
    print(
        f"{args.config}: {len(specs)} candidates, {args.seeds} seeds of {args.retrain}, "
        f"{base.epochs} epochs at "
        f"{base.image_size} px, batch {base.batch_size}; {args.processes} processes x 1 thread",
        flush=True,
    )
    started = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    context = multiprocessing.get_context("spawn")  # no torch state shared from this process
    with ProcessPoolExecutor(args.processes, context, initializer=_start_worker) as pool:
        for name in datasets:
            results[name] = _measure(pool, base.replace(dataset=name), specs, args)
    seconds = time.perf_counter() - started
    print()
    print(_table(results))
    print(
        f"\n{seconds:.0f} s in all; target: ratio >= 3 on {base.dataset}. 'cpu s': CPU seconds "
        f"of the {args.candidates} candidate evaluations (one thread each); half of it estimates "
        "their wall time two at a time on two idle cores"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "config": args.config,
            "epochs": base.epochs,
            "image_size": base.image_size,
            "batch_size": base.batch_size,
            "candidates": args.candidates,
            "seeds": args.seeds,
            "retrained": args.retrain,
            "sampling_seed": args.seed,
            "seconds": seconds,
            "datasets": results,
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
