"""Does progressive learning train faster at equal accuracy? Real MNIST digits, one run, on the CPU.

The paper (Tan and Le 2021, sec. 4 and Table 7) reports that progressive learning with adaptive
regularization reaches equal or better accuracy in about half the training time of fixed-size
training. This script trains the same small net on the embedded real dataset (``mnist5k``: 5,000
MNIST digits, 28 px, upsampled) for the same number of epochs three ways, with
:func:`nas.train.progressive.train_progressive`, the code ``nas train`` runs:

- ``progressive``: M stages, image size from ``--min-size`` to ``--max-size``, RandAugment,
  Mixup and dropout growing with it (the paper's formula);
- ``fixed``: every epoch at ``--max-size`` with the strongest regularization (what
  ``nas train --progressive off`` does): the baseline the question is about;
- ``fixed-ramp``: every epoch at ``--max-size`` with the progressive run's regularization ramp,
  which separates what the image size does (time) from what the regularization schedule does
  (accuracy).

All three share the seed: the same initial weights, the same split and the same shuffles. The
held-out split is evaluated at ``--max-size`` after every epoch with the EMA weights. Reported per
run: wall time of the training epochs (evaluation excluded), process CPU time of the whole run (a
cross-check that is less disturbed by other processes on a shared machine), final held-out
accuracy, and the training time each needed to reach the fixed run's final accuracy (measured at
epoch ends, so it is an upper bound to within one epoch). The runs go one after the other in the
order given by ``--order``; with ``--repeats 2`` the order is reversed for the second round.

    python bench/progressive.py                          # 24 -> 48 px vs 48 px, 12 epochs, 4 stages
    python bench/progressive.py --json runs/bench/progressive.json > runs/bench/progressive.txt
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas.train.config import ProgressiveConfig
from nas.train.progressive import train_progressive
from nas.train.schedule import ProgressiveSchedule, Range
from searchspace import ArchSpec, StageSpec, build_model, count_flops, count_parameters

RUNS = ("progressive", "fixed", "fixed-ramp")


def digits_net(image_size: int) -> ArchSpec:
    """A small EfficientNetV2-like net for 10 digit classes, total stride 8."""
    return ArchSpec(
        name="bench-digits",
        stem_channels=16,
        stages=(
            StageSpec("fused", repeats=1, kernel=3, stride=1, expand_ratio=1, out_channels=16),
            StageSpec("fused", repeats=2, kernel=3, stride=2, expand_ratio=4, out_channels=32),
            StageSpec("mbconv", 2, 3, 2, 4, 48, se_ratio=0.25),
            StageSpec("mbconv", 2, 3, 1, 6, 64, se_ratio=0.25),
        ),
        head_channels=256,
        num_classes=10,
        train_resolution=image_size,
        eval_resolution=image_size,
    )


def schedules(args: argparse.Namespace) -> dict[str, ProgressiveSchedule]:
    regularization = {
        "randaug_magnitude": Range(args.randaug[0], args.randaug[1]),
        "mixup_alpha": Range(args.mixup[0], args.mixup[1]),
        "dropout": Range(args.dropout[0], args.dropout[1]),
    }
    progressive = ProgressiveSchedule(
        image_size=Range(args.min_size, args.max_size), stages=args.stages, **regularization
    )
    fixed_size = Range(args.max_size, args.max_size)
    return {
        "progressive": progressive,
        # One stage of the paper's formula is the maximum of every range.
        "fixed": progressive.replace(stages=1, image_size=fixed_size),
        "fixed-ramp": progressive.replace(image_size=fixed_size),
    }


def run_once(
    name: str, schedule: ProgressiveSchedule, args: argparse.Namespace, *, quiet: bool = False
) -> dict[str, Any]:
    config = ProgressiveConfig(
        dataset="mnist5k",
        epochs=args.epochs,
        schedule=schedule,
        batch_size=args.batch_size,
        lr=args.lr,
        optimizer="rmsprop",
        warmup_epochs=1.0,
        ema_decay=0.999,
        seed=args.seed,
        heldout_fraction=0.2,
        max_train_images=640 if quiet else None,
        device="cpu",
        num_workers=0,
    )
    clock: list[dict[str, float]] = []
    wall_start, cpu_start = time.perf_counter(), time.process_time()

    def on_epoch_end(epoch: int, metrics: dict[str, float]) -> None:
        clock.append(
            {
                "wall": time.perf_counter() - wall_start,
                "cpu": time.process_time() - cpu_start,
            }
        )
        if quiet:
            return
        print(
            f"  {name:11s} epoch {epoch:2d}: {metrics['image_size']} px, "
            f"accuracy {metrics['accuracy']:.2%}, {metrics['epoch_seconds']:.1f} s",
            file=sys.stderr,
            flush=True,
        )

    with tempfile.TemporaryDirectory() as run_dir:
        outcome = train_progressive(
            digits_net(args.max_size), config, run_dir, on_epoch_end=on_epoch_end
        )
    history = [
        {**row, "run_wall_seconds": c["wall"], "run_cpu_seconds": c["cpu"]}
        for row, c in zip(outcome.history, clock, strict=True)
    ]
    return {
        "name": name,
        "schedule": schedule.to_dict(),
        "accuracy": outcome.accuracy,
        "train_seconds": outcome.train_seconds,
        "run_wall_seconds": clock[-1]["wall"],
        "run_cpu_seconds": clock[-1]["cpu"],
        "history": history,
    }


def time_to_reach(result: dict[str, Any], target: float) -> tuple[int, float, float] | None:
    """(epoch, training seconds, run CPU seconds) when accuracy first reached ``target``."""
    for row in result["history"]:
        if row["accuracy"] >= target:
            return int(row["epoch"]), row["train_seconds"], row["run_cpu_seconds"]
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--stages", type=int, default=4)
    parser.add_argument("--min-size", type=int, default=24)
    parser.add_argument("--max-size", type=int, default=48)
    pair = {"type": float, "nargs": 2, "metavar": ("MIN", "MAX")}
    parser.add_argument("--randaug", default=(0, 6), help="RandAugment magnitude", **pair)
    parser.add_argument("--mixup", default=(0, 0.2), help="Mixup alpha", **pair)
    parser.add_argument("--dropout", default=(0.1, 0.3), help="classifier dropout", **pair)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.004)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of all runs")
    parser.add_argument("--order", default=",".join(RUNS), help="run order of the first round")
    parser.add_argument("--json", type=Path, help="also write every figure and history here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    order = args.order.split(",")
    if sorted(order) != sorted(RUNS):
        parser.error(f"--order must name each of {', '.join(RUNS)} once")

    model = build_model(digits_net(args.max_size))
    plans = schedules(args)
    print(
        f"bench-digits: {count_parameters(model):,} parameters; FLOPs per image "
        f"{count_flops(model, args.min_size) / 1e6:.1f}M at {args.min_size} px, "
        f"{count_flops(model, args.max_size) / 1e6:.1f}M at {args.max_size} px"
    )
    print(
        f"mnist5k (4,000 training / 1,000 held-out digits), {args.epochs} epochs, batch "
        f"{args.batch_size}, RMSProp lr {args.lr}, EMA 0.999, {args.threads} torch thread(s)"
    )
    for name, schedule in plans.items():
        stages = schedule.all_stages()
        sizes = " -> ".join(str(s.image_size) for s in stages)
        print(
            f"  {name:11s} {schedule.stages} stage(s): {sizes} px; RandAugment "
            f"{' -> '.join(str(int(s.randaug_magnitude + 0.5)) for s in stages)}; Mixup "
            f"{' -> '.join(f'{s.mixup_alpha:.3g}' for s in stages)}; dropout "
            f"{' -> '.join(f'{s.dropout:.3g}' for s in stages)}"
        )
    # Untimed: the first training in a process pays one-time costs (allocator, kernel selection,
    # lazy imports) that would otherwise be charged to whichever run goes first.
    print("warm-up (untimed)", file=sys.stderr, flush=True)
    warmup = plans["progressive"].replace(stages=1)
    run_once("warm-up", warmup, argparse.Namespace(**(vars(args) | {"epochs": 1})), quiet=True)
    rounds: list[dict[str, dict[str, Any]]] = []
    for repeat in range(args.repeats):
        this_order = order if repeat % 2 == 0 else order[::-1]
        print(f"round {repeat + 1}: {', '.join(this_order)}", file=sys.stderr, flush=True)
        rounds.append({name: run_once(name, plans[name], args) for name in this_order})

    print()
    for index, results in enumerate(rounds, start=1):
        target = results["fixed"]["accuracy"]
        base_train = results["fixed"]["train_seconds"]
        base_cpu = results["fixed"]["run_cpu_seconds"]
        print(f"round {index}: target = fixed run's final held-out accuracy {target:.2%}")
        print(
            f"  {'run':11s} {'final acc':>9s} {'train s':>8s} {'x fixed':>7s} {'CPU s':>7s} "
            f"{'x fixed':>7s}   time to reach {target:.2%}"
        )
        for name in RUNS:
            result = results[name]
            reached = time_to_reach(result, target)
            if reached is None:
                reach = "not reached"
            else:
                epoch, seconds, cpu = reached
                reach = (
                    f"epoch {epoch}: {seconds:.1f} s train (x{seconds / base_train:.2f}), "
                    f"{cpu:.1f} s CPU (x{cpu / base_cpu:.2f})"
                )
            print(
                f"  {name:11s} {result['accuracy']:9.2%} {result['train_seconds']:8.1f} "
                f"{result['train_seconds'] / base_train:7.2f} {result['run_cpu_seconds']:7.1f} "
                f"{result['run_cpu_seconds'] / base_cpu:7.2f}   {reach}"
            )
        print("  accuracy per epoch:")
        for name in RUNS:
            accuracies = " ".join(f"{row['accuracy']:.3f}" for row in results[name]["history"])
            print(f"    {name:11s} {accuracies}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)},
                                         "rounds": rounds}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
