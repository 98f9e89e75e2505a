"""``nas evaluate``: time, train briefly and score one architecture on this machine."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="time, briefly train and score one architecture",
        description="Build an architecture, time its real training step on this machine's device, "
        "train it briefly on the search split of a dataset, measure top-1 accuracy on the "
        "held-out split and compute the reward A * S^w * P^v (S, P normalized by the reference "
        "net). Progress goes to stderr. Exit status: 0 scored, 1 the candidate failed (NaN loss, "
        "out of memory), 2 bad input.",
    )
    parser.add_argument("arch", help="catalog name, YAML file or spec string")
    parser.add_argument(
        "--dataset",
        default="mnist5k",
        help="NAME[:PATH]: mnist5k (default, built in), synthetic[:N], imagefolder:PATH, "
        "cifar10:PATH, cifar100:PATH, flowers102:PATH, stanfordcars:PATH",
    )
    parser.add_argument(
        "--image-size", type=int, help="training image size (default: the spec's train size)"
    )
    parser.add_argument("--epochs", type=int, default=3, help="training epochs (default 3)")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    parser.add_argument(
        "--lr", type=float, help="peak learning rate (default: 0.016 per 256 images for RMSProp)"
    )
    parser.add_argument(
        "--optimizer", default="rmsprop", help="rmsprop (default, the paper's), sgd or adamw"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument(
        "--precision", default="auto", help="auto (bf16 on a GPU, fp32 on a CPU), fp32 or bf16"
    )
    parser.add_argument(
        "--timing-steps", type=int, default=20, help="timed training steps (default 20)"
    )
    parser.add_argument(
        "--timing-warmup", type=int, default=5, help="untimed warm-up steps (default 5)"
    )
    parser.add_argument(
        "--timing-clock",
        default="wall",
        help="on a CPU: wall (default) or cpu (process CPU time; for a shared machine, with one "
        "torch thread)",
    )
    parser.add_argument(
        "--reference",
        default="efficientnetv2-b0",
        help="net that step time and parameters are normalized by (default efficientnetv2-b0)",
    )
    parser.add_argument(
        "--heldout-fraction",
        type=float,
        default=0.1,
        help="fraction of the training set held out for accuracy (default 0.1)",
    )
    parser.add_argument(
        "--max-train-images", type=int, help="use at most this many search-split images"
    )
    parser.add_argument(
        "--num-workers", type=int, help="data-loading processes (default: chosen per dataset)"
    )
    parser.add_argument(
        "--reward-w", type=float, default=-0.07, help="step-time exponent (default -0.07)"
    )
    parser.add_argument(
        "--reward-v", type=float, default=-0.05, help="parameter exponent (default -0.05)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object (the record)")
    parser.set_defaults(func=run)


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.1f} ms"


def format_result(record: dict[str, Any], dataset: str, reference: str) -> str:
    """The human-readable report of one evaluation record."""
    lines = [f"{record['name']}  ({record['spec']})", f"dataset      {dataset}"]
    lines.append(f"device       {record['device']}")
    if record["status"] == "ok":
        lines.append(
            f"accuracy     {record['accuracy']:.2%} top-1 on the held-out split "
            f"({record['epochs']} epoch{'s' if record['epochs'] != 1 else ''}, "
            f"{record['train_seconds']:.1f} s of training)"
        )
    else:
        lines.append(f"status       FAILED: {record['failure']}")
    if record["step_time_ms"] is not None:
        lines.append(
            f"step time    {_ms(record['step_time_ms'])} median, "
            f"IQR {_ms(record['step_time_spread_ms'])}"
            f", {record['images_per_second']:,.0f} images/s (batch {record['batch_size']}, "
            f"{record['image_size']} px)"
        )
    if record["reference_step_time_ms"] is not None:
        norm = record["step_time_norm"]
        lines.append(
            f"reference    {reference}: {_ms(record['reference_step_time_ms'])}"
            + (f" -> step time x{norm:.3f}" if norm is not None else "")
        )
    params_norm = record["params_norm"]
    lines.append(
        f"parameters   {record['params']:,} ({record['params'] / 1e6:.2f}M"
        + (f", x{params_norm:.3f} the reference)" if params_norm is not None else ")")
    )
    lines.append(f"FLOPs        {record['flops']:,} ({record['flops'] / 1e9:.3f}B per image)")
    memory = record["peak_memory_mb"]
    lines.append(
        "peak memory  "
        + ("n/a (not measured on a CPU)" if memory is None else f"{memory:,.0f} MiB")
    )
    lines.append(
        "reward       "
        + ("n/a (failed)" if record["reward"] is None else f"{record['reward']:.4f}")
    )
    lines.append(f"took         {record['duration_s']:.1f} s")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from nas.evaluate import EvalConfig, evaluate_candidate
    from searchspace import load_arch

    spec = load_arch(args.arch)
    config = EvalConfig(
        dataset=args.dataset,
        image_size=args.image_size,
        batch_size=args.batch_size,
        epochs=args.epochs,
        lr=args.lr,
        optimizer=args.optimizer,
        seed=args.seed,
        device=args.device,
        precision=args.precision,
        timing_steps=args.timing_steps,
        timing_warmup=args.timing_warmup,
        timing_clock=args.timing_clock,
        reference=args.reference,
        reward_w=args.reward_w,
        reward_v=args.reward_v,
        num_workers=args.num_workers,
        heldout_fraction=args.heldout_fraction,
        max_train_images=args.max_train_images,
    )
    config.check_spec(spec)
    # The reference must be a valid spec too: fail on a typo before loading any data.
    load_arch(config.reference)
    data = config.load_data(spec)
    print(f"nas evaluate: {data.describe()}", file=sys.stderr)
    print("nas evaluate: timing the training step and training ...", file=sys.stderr)

    def progress(epoch: int, metrics: dict[str, float]) -> None:
        print(
            f"nas evaluate: epoch {epoch}/{config.epochs}: loss {metrics['train_loss']:.4f}, "
            f"held-out accuracy {metrics['accuracy']:.2%}, "
            f"{metrics['images_per_second']:,.0f} images/s, {metrics['epoch_seconds']:.1f} s",
            file=sys.stderr,
        )

    result = evaluate_candidate(spec, config, data=data, on_epoch_end=progress)
    record = result.to_dict()
    if args.json:
        print(json.dumps(record, indent=2))
    else:
        print(format_result(record, data.describe(), config.reference))
    return 0 if result.ok else 1
