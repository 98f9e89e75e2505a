"""Is the short step timing trustworthy? Repeatability, and ranking against real training.

1. Repeatability: one net's step is timed ``--repeats`` times over (``nas.evaluate.timing``,
   exactly as a search trial times it); the coefficient of variation of the medians says how well
   they agree.
2. Fidelity: ``--specs`` random nets from a small MBConv/Fused-MBConv space (block type, kernel,
   expansion, repeats and SE per stage, on a fixed 5-stage backbone) are each timed the short way,
   then trained for one full epoch on the search split of ``--dataset`` with the real training
   loop (``nas.train.loop.train_one_epoch``: data loading, transfers and the per-step NaN check
   included). Spearman's rho between the short timing and the real per-step time (epoch wall time
   / steps) must be at least 0.9. The same rank correlation is reported for FLOPs (fvcore) and
   parameters against the real per-step time: the gap between those and the timing's is why a
   training-aware search times steps instead of counting FLOPs.

Figures are ratios within this run (each net against the others, timed the same way), never
absolute speeds. Runs in a few minutes on two CPU cores; on a GPU it times with CUDA events in
bf16 and channels_last, as training runs there.

    python bench/timing_fidelity.py                     # 12 specs at 64 px, batch 32, 1 thread
    python bench/timing_fidelity.py --json runs/bench/timing_fidelity.json
    python bench/timing_fidelity.py --clock cpu         # on a CPU other jobs share
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

import torch
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas.data import load_dataset
from nas.evaluate.timing import StepSetup, time_train_step
from nas.train.device import device_name, resolve_device
from nas.train.loop import TrainState, train_one_epoch
from nas.train.optim import build_optimizer, build_scheduler, make_loss
from nas.train.recipe import Recipe
from searchspace import build_model, count_flops, count_parameters
from searchspace.space import SearchSpace

# A small backbone in the quick search's style: the stages' channels and strides are fixed, the
# per-stage choices are what the search samples.
SPACE = {
    "stem_channels": 16,
    "head_channels": 256,
    "num_classes": 10,
    "train_resolution": 64,
    "eval_resolution": 64,
    "dropout": 0.1,
    "drop_path_rate": 0.0,
    "blocks": ["mbconv", "fused"],
    "kernels": [3, 5],
    "expand_ratios": [1, 4, 6],
    "se_ratios": [0.0, 0.25],
    "stages": [
        {"out_channels": 16, "stride": 1, "repeats": [1, 2]},
        {"out_channels": 24, "stride": 2, "repeats": [1, 3]},
        {"out_channels": 40, "stride": 2, "repeats": [1, 3]},
        {"out_channels": 64, "stride": 2, "repeats": [1, 3]},
        {"out_channels": 96, "stride": 1, "repeats": [1, 3]},
    ],
}


def _epoch_step_ms(spec, data, args, device) -> tuple[float, int]:
    """Real per-step time over one full training epoch: epoch time / steps, on ``--clock``."""
    torch.manual_seed(args.seed)
    model = build_model(spec).to(device)
    config = Recipe(epochs=1, batch_size=args.batch_size)
    optimizer = build_optimizer(model, config)
    loader = data.train_loader(args.batch_size, seed=args.seed)
    scheduler = build_scheduler(optimizer, config, len(loader))
    cpu_start = time.process_time()
    state = TrainState(model, optimizer, scheduler, make_loss(config))
    stats = train_one_epoch(state, loader, device=device, epoch=1)
    # In-memory data loads in this process (no workers), so its CPU time counts here too.
    seconds = stats.seconds if args.clock == "wall" else time.process_time() - cpu_start
    return seconds * 1000.0 / stats.steps, stats.steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specs", type=int, default=12, help="random specs (default 12)")
    parser.add_argument("--repeats", type=int, default=5, help="repeat timings of one net")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--timing-steps", type=int, default=20, help="K timed steps")
    parser.add_argument("--timing-warmup", type=int, default=5)
    parser.add_argument("--dataset", default="mnist5k")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1, as a search trial that asked Ray for one CPU runs; "
        "with more, OpenMP's threads wait on each other whenever other work takes a core, and "
        "timings on a shared machine scatter by several times)",
    )
    parser.add_argument(
        "--clock",
        default="wall",
        choices=["wall", "cpu"],
        help="CPU clock for both the short timing and the epoch: wall (default) or cpu "
        "(process CPU time: immune to other processes on a shared machine; use --threads 1)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    space = SearchSpace.from_dict(
        {**SPACE, "train_resolution": args.image_size, "eval_resolution": args.image_size}
    )
    rng = random.Random(args.seed)
    specs, seen = [], set()
    while len(specs) < args.specs:
        spec = space.sample(rng)
        if spec.hash not in seen:
            seen.add(spec.hash)
            specs.append(spec)
    data = load_dataset(args.dataset, args.image_size, seed=args.seed)
    specs = [spec.replace(num_classes=data.num_classes) for spec in specs]
    timing_args = {
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "num_classes": data.num_classes,
        "device": device,
        "steps": args.timing_steps,
        "warmup": args.timing_warmup,
        "clock": args.clock,
    }
    threads = (
        f", {torch.get_num_threads()} torch threads, {args.clock} clock"
        if device.type == "cpu"
        else ""
    )
    print(
        f"device {device_name(device)}{threads}; {args.image_size} px, batch {args.batch_size}, "
        f"{args.timing_warmup} warm-up + {args.timing_steps} timed steps; {data.describe()}",
        flush=True,
    )
    started = time.perf_counter()

    # 1. Repeatability of one net's timing (the median-cost spec of the sample, by FLOPs).
    flops = [count_flops(build_model(spec), args.image_size) for spec in specs]
    middle = sorted(range(len(specs)), key=flops.__getitem__)[len(specs) // 2]
    medians = []
    for _ in range(args.repeats):
        timing = time_train_step(build_model(specs[middle]), StepSetup(**timing_args))
        medians.append(timing.median_ms)
    cv = statistics.stdev(medians) / statistics.mean(medians) if len(medians) > 1 else 0.0
    print(
        f"\n1. repeatability: {args.repeats} timings of one net "
        f"({specs[middle].to_string()}):\n   medians "
        + ", ".join(f"{m:.1f}" for m in medians)
        + f" ms -> coefficient of variation {cv:.1%}",
        flush=True,
    )

    # 2. Short timing vs a real epoch, for every spec.
    print(f"\n2. {len(specs)} random specs: short timing vs one real training epoch", flush=True)
    header = (
        f"{'#':>2} {'params':>8} {'MFLOPs':>7} {'short ms':>9} {'IQR':>6} {'epoch ms/step':>13}"
        f" {'epoch/short':>11}  spec"
    )
    print(header, flush=True)
    rows = []
    for index, (spec, spec_flops) in enumerate(zip(specs, flops, strict=True)):
        timing = time_train_step(build_model(spec), StepSetup(**timing_args))
        epoch_ms, steps = _epoch_step_ms(spec, data, args, device)
        row = {
            "spec": spec.to_string(),
            "params": count_parameters(build_model(spec)),
            "flops": spec_flops,
            "short_ms": timing.median_ms,
            "short_iqr_ms": timing.spread_ms,
            "epoch_ms_per_step": epoch_ms,
            "epoch_steps": steps,
        }
        rows.append(row)
        print(
            f"{index + 1:>2} {row['params']:>8,} {spec_flops / 1e6:>7.1f} {timing.median_ms:>9.1f}"
            f" {timing.spread_ms:>6.1f} {epoch_ms:>13.1f} {epoch_ms / timing.median_ms:>11.2f}"
            f"  {spec.to_string()}",
            flush=True,
        )

    real = [row["epoch_ms_per_step"] for row in rows]
    rho_timing = spearmanr([row["short_ms"] for row in rows], real).statistic
    rho_flops = spearmanr([row["flops"] for row in rows], real).statistic
    rho_params = spearmanr([row["params"] for row in rows], real).statistic
    verdict = "PASS" if rho_timing >= 0.9 else "FAIL"
    print(
        f"\nSpearman's rho against the real per-step time over an epoch ({len(rows)} specs):\n"
        f"   short step timing  {rho_timing:+.3f}   ({verdict}: must be >= 0.9)\n"
        f"   FLOPs (fvcore)     {rho_flops:+.3f}\n"
        f"   parameters         {rho_params:+.3f}\n"
        f"repeatability: coefficient of variation {cv:.1%} over {args.repeats} timings\n"
        f"took {time.perf_counter() - started:.0f} s",
        flush=True,
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "device": device_name(device),
                    "threads": torch.get_num_threads(),
                    "clock": args.clock if device.type == "cpu" else "cuda-events",
                    "image_size": args.image_size,
                    "batch_size": args.batch_size,
                    "repeat_medians_ms": medians,
                    "coefficient_of_variation": cv,
                    "spearman_timing": rho_timing,
                    "spearman_flops": rho_flops,
                    "spearman_params": rho_params,
                    "rows": rows,
                },
                indent=2,
            )
        )
    return 0 if rho_timing >= 0.9 else 1


if __name__ == "__main__":
    sys.exit(main())
