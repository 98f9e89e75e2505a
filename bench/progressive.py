"""Does progressive learning pay? Time to the fixed-size run's accuracy, on cluttered MNIST.

The paper (Tan and Le 2021, sec. 4 and Table 7) reports that progressive learning with adaptive
regularization reaches equal or better accuracy in about half the training time of fixed-size
training. This script trains one small net on the embedded harder task (``cluttered``: 5,000
search and 4,000 held-out images of 36 px, digits among clutter) for the same number of epochs
six ways, with :func:`nas.train.progressive.train_progressive`, the code ``nas train`` runs, and
the schedules ``nas train`` makes (:func:`nas.train.schedule.schedule_for`):

- ``progressive``: ``--progressive paper``, the default: 4 stages, RandAugment 5 -> 15 and
  dropout 0.1 -> 0.3 (the S column; Mixup 0), image size up to 36 px from ``nas train``'s first
  size, 24 px (24 -> 28 -> 32 -> 36), or ``--min-size``: 15 is the paper's ratio 128/300 alone
  (15 -> 22 -> 29 -> 36), the default before this benchmark showed it to learn too little;
- ``fixed``: ``--progressive off``: every epoch at 36 px with the strongest regularization
  (RandAugment 15, dropout 0.3): the baseline the paper's claim is about;
- ``fixed-ramp``: every epoch at 36 px with the progressive run's regularization ramp, which
  separates what the image size does (time) from what the regularization schedule does;

each with random-resized crops (``--train-crop random-resized``, the default) and without
(``none``). Held-out accuracy is measured at 36 px after every epoch.

**Training time** is the process CPU time of the training epochs (``train_cpu_seconds`` in
``metrics.csv``: forward, backward, optimizer step and the in-process input pipeline; the
evaluation is not counted), with torch on one thread. On a shared, loaded machine the wall clock
charges a run for the time it waits for a core; CPU time does not. The input pipeline's part
(reading, cropping, RandAugment) is reported apart, since it does not shrink with the image size
and, beside an accelerator, runs in parallel loader workers instead. Each arm's time to reach the
fixed run's final accuracy (same seed, same crop setting) is read at epoch ends: an upper bound
to within one epoch.

Seeds run in ``--jobs`` worker processes at once (one torch thread each); each seed runs the
arms in its own order (the first seed in the order given, the next reversed, and so on), so that
drifts in the machine's load fall on every arm alike. Every finished run is appended to
``OUT/runs.jsonl``: run the same command again after an interruption and the finished runs are
reused (for the same settings only).

    python bench/progressive.py --min-size 15                    # 2 seeds, 6 arms, 10 epochs
    python bench/progressive.py --min-size 24 --arms progressive,progressive-nocrop
    python bench/progressive.py --out runs/bench/progressive > runs/bench/progressive.txt

(The second command reuses the first's fixed-size runs from ``--out``: they do not depend on
the progressive schedule.)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas.train.config import ProgressiveConfig
from nas.train.progressive import train_progressive
from nas.train.schedule import ProgressiveSchedule, Range, schedule_for
from searchspace import ArchSpec, StageSpec, build_model, count_flops, count_parameters

#: Arm -> (schedule, training crop).
ARMS = {
    "progressive": ("progressive", "random-resized"),
    "fixed": ("fixed", "random-resized"),
    "fixed-ramp": ("fixed-ramp", "random-resized"),
    "progressive-nocrop": ("progressive", "none"),
    "fixed-nocrop": ("fixed", "none"),
    "fixed-ramp-nocrop": ("fixed-ramp", "none"),
}


def digits_net(image_size: int) -> ArchSpec:
    """A small EfficientNetV2-like net for 10 digit classes (225k parameters), total stride 8."""
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
    """The three schedules, as ``nas train --progressive paper|off`` makes them for the net."""
    spec = digits_net(args.size)
    progressive = schedule_for(spec, "paper", stages=args.stages)
    if args.min_size is not None:
        progressive = progressive.replace(image_size=Range(args.min_size, args.size))
    return {
        "progressive": progressive,
        "fixed": schedule_for(spec, "off"),
        "fixed-ramp": progressive.replace(image_size=Range(args.size, args.size)),
    }


def settings_key(arm: str, args: argparse.Namespace) -> dict[str, Any]:
    """What a stored run of ``arm`` must share with this invocation to be reused: the fixed
    runs do not depend on the progressive schedule's stages and first size, so a follow-up that
    changes those (``--min-size``, ``--stages``) reuses them as its baselines."""
    keys = ["epochs", "size", "batch_size", "lr", "ema_decay"]
    kind = ARMS[arm][0]
    if kind != "fixed":
        keys.append("stages")
    if kind == "progressive":
        keys.append("min_size")
    return {key: getattr(args, key) for key in keys}


def run_arm(arm: str, seed: int, args: argparse.Namespace, *, epochs: int | None = None) -> dict:
    """Train one arm with one seed; its figures and per-epoch history."""
    kind, crop = ARMS[arm]
    schedule = schedules(args)[kind]
    config = ProgressiveConfig(
        dataset="cluttered",
        epochs=epochs or args.epochs,
        schedule=schedule if epochs is None else schedule.replace(stages=1),
        batch_size=args.batch_size,
        lr=args.lr,
        ema_decay=args.ema_decay,
        seed=seed,
        train_crop=crop,
        device="cpu",
        num_workers=0,
    )
    wall_start = time.perf_counter()

    def on_epoch_end(epoch: int, metrics: dict[str, float]) -> None:
        if epochs is not None:
            return
        print(
            f"  seed {seed} {arm:18s} epoch {epoch:2d}: {metrics['image_size']} px, "
            f"accuracy {metrics['accuracy']:.2%} ({metrics['accuracy_at_train_size']:.2%} at "
            f"{metrics['image_size']} px), {metrics['epoch_cpu_seconds']:.1f} s CPU",
            file=sys.stderr,
            flush=True,
        )

    with tempfile.TemporaryDirectory() as run_dir:
        outcome = train_progressive(
            digits_net(args.size), config, run_dir, on_epoch_end=on_epoch_end
        )
    return {
        "arm": arm,
        "seed": seed,
        "settings": settings_key(arm, args),
        "schedule": schedule.to_dict(),
        "train_crop": crop,
        "accuracy": outcome.accuracy,
        "train_cpu_seconds": outcome.train_cpu_seconds,
        "data_cpu_seconds": sum(row["epoch_data_cpu_seconds"] for row in outcome.history),
        "train_seconds": outcome.train_seconds,
        "run_wall_seconds": time.perf_counter() - wall_start,
        "history": outcome.history,
    }


def run_seed(seed: int, order: list[str], args: argparse.Namespace, out: Path) -> list[dict]:
    """One worker process: one thread, an untimed warm-up, then the seed's arms in ``order``,
    each appended to ``out`` as it finishes."""
    torch.set_num_threads(1)
    # Untimed: the first training in a process pays one-time costs (allocator, kernel selection,
    # lazy imports) that would otherwise be charged to whichever arm goes first.
    run_arm("fixed-nocrop", seed, args, epochs=1)
    results = []
    for arm in order:
        result = run_arm(arm, seed, args)
        with out.open("a") as file:
            file.write(json.dumps(result) + "\n")
        results.append(result)
    return results


def load_done(out: Path, args: argparse.Namespace) -> dict[tuple[str, int], dict]:
    """Runs finished earlier with the same settings, by (arm, seed)."""
    if not out.is_file():
        return {}
    done = {}
    for line in out.read_text().splitlines():
        result = json.loads(line)
        wanted = settings_key(result["arm"], args) if result["arm"] in ARMS else None
        if wanted is not None and all(result["settings"].get(k) == v for k, v in wanted.items()):
            done[(result["arm"], result["seed"])] = result
    return done


def cpu_to_reach(result: dict[str, Any], target: float) -> tuple[int, float] | None:
    """(epoch, cumulative training CPU seconds) when held-out accuracy first reached
    ``target``; None if it never did."""
    for row in result["history"]:
        if row["accuracy"] >= target - 1e-12:
            return int(row["epoch"]), row["train_cpu_seconds"]
    return None


def table(results: dict[tuple[str, int], dict], arms: list[str], seeds: list[int]) -> list[str]:
    """Per seed, one row per arm: training CPU time (and its ratio to the fixed run of the same
    crop setting), the input pipeline's part, final accuracy, and the time to reach the fixed
    run's final accuracy."""
    lines = []
    for seed in seeds:
        lines.append(f"seed {seed}:")
        lines.append(
            f"  {'arm':18s} {'final acc':>9s} {'train CPU s':>11s} {'x fixed':>7s} "
            f"{'of it data':>10s} {'x fixed w/o data':>16s}   time to reach fixed's final acc"
        )
        for arm in arms:
            result = results[(arm, seed)]
            fixed_arm = "fixed" if ARMS[arm][1] != "none" else "fixed-nocrop"
            fixed = results.get((fixed_arm, seed))
            lines.append("  " + _row(arm, result, fixed))
    return lines


def _row(arm: str, result: dict, fixed: dict | None) -> str:
    cpu, data = result["train_cpu_seconds"], result["data_cpu_seconds"]
    ratio = reach = without_data = "-"
    if fixed is not None:
        ratio = f"{cpu / fixed['train_cpu_seconds']:.2f}"
        fixed_compute = fixed["train_cpu_seconds"] - fixed["data_cpu_seconds"]
        without_data = f"{(cpu - data) / fixed_compute:.2f}"
        reached = cpu_to_reach(result, fixed["accuracy"])
        reach = (
            "not reached"
            if reached is None
            else f"epoch {reached[0]}, {reached[1]:.0f} s = "
            f"x{reached[1] / fixed['train_cpu_seconds']:.2f} of fixed's time"
        )
    return (
        f"{arm:18s} {result['accuracy']:9.2%} {cpu:11.0f} {ratio:>7s} {data:10.0f} "
        f"{without_data:>16s}   {reach}"
    )


def describe(args: argparse.Namespace, arms: list[str]) -> list[str]:
    """The net, its FLOPs at each stage size, the data and the schedules."""
    model = build_model(digits_net(args.size))
    plans = schedules(args)
    sizes = [s.image_size for s in plans["progressive"].all_stages()]
    flops = {size: count_flops(model, size) for size in sorted(set(sizes) | {args.size})}
    staged = ProgressiveConfig(epochs=args.epochs, schedule=plans["progressive"])
    epochs = [len(r) for r in staged.stage_epochs()]
    flop_ratio = sum(e * flops[s] for e, s in zip(epochs, sizes, strict=True)) / (
        args.epochs * flops[args.size]
    )
    lines = [
        f"bench-digits: {count_parameters(model):,} parameters; FLOPs per image "
        + ", ".join(f"{flops[s] / 1e6:.1f}M at {s} px" for s in flops),
        f"cluttered (5,000 search / 4,000 held-out images, 36 px), {args.epochs} epochs, batch "
        f"{args.batch_size}, RMSProp lr {args.lr or 'default (0.016 per 256)'}, EMA "
        f"{args.ema_decay or 'off'}, one torch thread per process, {args.jobs} processes",
        f"progressive stages: {epochs} epochs; its FLOPs are x{flop_ratio:.2f} of fixed size's",
    ]
    for name, schedule in plans.items():
        stages = schedule.all_stages()
        lines.append(
            f"  {name:11s} {schedule.stages} stage(s): "
            f"{' -> '.join(str(s.image_size) for s in stages)} px; RandAugment "
            f"{' -> '.join(str(int(s.randaug_magnitude + 0.5)) for s in stages)}; Mixup "
            f"{' -> '.join(f'{s.mixup_alpha:.3g}' for s in stages)}; dropout "
            f"{' -> '.join(f'{s.dropout:.3g}' for s in stages)}"
        )
    lines.append(f"arms: {', '.join(arms)} (-nocrop: --train-crop none)")
    return lines


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--size", type=int, default=36, help="largest train size = eval size")
    parser.add_argument("--stages", type=int, default=4, help="progressive stages")
    parser.add_argument(
        "--min-size",
        type=int,
        help="progressive's first size (default: nas train's, 24 px; 15 is the paper's ratio)",
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, help="default: 0.016 per 256 images (RMSProp)")
    parser.add_argument(
        "--ema-decay",
        type=float,
        default=0.0,
        help="weight EMA (default off: it would add an evaluation pass per epoch)",
    )
    parser.add_argument("--seeds", default="0,1", help="comma-separated training seeds")
    parser.add_argument("--arms", default=",".join(ARMS), help="comma-separated, in order")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (seeds at once)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/progressive"))
    args = parser.parse_args()
    unknown = [arm for arm in args.arms.split(",") if arm not in ARMS]
    if unknown:
        parser.error(f"--arms: unknown {unknown[0]!r} (known: {', '.join(ARMS)})")
    return args


def main() -> int:
    args = parse_args()
    arms = args.arms.split(",")
    seeds = [int(seed) for seed in args.seeds.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    runs = args.out / "runs.jsonl"
    for line in describe(args, arms):
        print(line, flush=True)
    results = load_done(runs, args)
    todo = {}
    for index, seed in enumerate(seeds):
        order = arms if index % 2 == 0 else arms[::-1]
        todo[seed] = [arm for arm in order if (arm, seed) not in results]
    context = multiprocessing.get_context("spawn")  # no torch state shared with the parent
    with ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
        futures = [
            pool.submit(run_seed, seed, order, args, runs) for seed, order in todo.items() if order
        ]
        for future in as_completed(futures):
            for result in future.result():
                results[(result["arm"], result["seed"])] = result
    print()
    for line in table(results, arms, seeds):
        print(line)
    print("accuracy per epoch (held-out, 36 px; in brackets at the stage's train size):")
    for seed in seeds:
        for arm in arms:
            history = results[(arm, seed)]["history"]
            print(
                f"  seed {seed} {arm:18s} "
                + " ".join(
                    f"{row['accuracy']:.3f}"
                    + (
                        f"[{row['accuracy_at_train_size']:.3f}]"
                        if row["image_size"] != args.size
                        else ""
                    )
                    for row in history
                )
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
