"""``nas evaluate``: time, train briefly and score one architecture on this machine."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from nas.cli.args import add_config_flag, config_kwargs
from nas.cli.paths import DATASET, SPEC
from nas.evaluate.config import EvalConfig

#: The cheapest valid command line, by argument (tests/nas/cli/test_paths.py reaches every path
#: argument from it; {config}: a search config, {torch}: a torch file, {run}, {out}: folders).
EXAMPLE = {"arch": "b0", "dataset": "synthetic:64", "epochs": "1"}


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
    parser.add_argument("arch", type=SPEC, help="catalog name, YAML file or spec string")

    def flag(name: str, help: str, type: Any = str, shown: str | None = None) -> None:
        add_config_flag(parser, EvalConfig, name, help, type=type, shown=shown)

    flag(
        "dataset",
        "NAME[:PATH]: mnist5k (built in), synthetic[:N], imagefolder:PATH, "
        "cifar10:PATH, cifar100:PATH, flowers102:PATH, stanfordcars:PATH, fashionmnist[:PATH]",
        DATASET,
    )
    flag("image_size", "training image size", int, shown="default: the spec's train size")
    flag(
        "timing_image_size",
        "image size the training step is timed and FLOPs counted at",
        int,
        shown="default: the training image size",
    )
    flag("epochs", "training epochs", int)
    flag("batch_size", "batch size", int)
    flag("lr", "peak learning rate", float, shown="default: 0.016 per 256 images for RMSProp")
    flag("optimizer", "rmsprop (the paper's), sgd or adamw")
    flag("seed", "seed of the split, the weights and the shuffle", int)
    flag("device", "auto, cpu, cuda or cuda:N")
    flag("precision", "auto (bf16 on a GPU, fp32 on a CPU), fp32 or bf16")
    flag("timing_steps", "timed training steps", int)
    flag("timing_warmup", "untimed warm-up steps", int)
    flag(
        "timing_clock",
        "on a CPU: wall or cpu (process CPU time; for a shared machine, with one torch thread)",
    )
    flag("reference", "net that step time and parameters are normalized by", SPEC)
    flag("heldout_fraction", "fraction of the training set held out for accuracy", float)
    flag("test_fraction", "fraction carved as the test split if the dataset has none", float)
    flag("max_train_images", "use at most this many search-split images", int, shown="default: all")
    flag("num_workers", "data-loading processes", int, shown="default: chosen per dataset")
    flag("reward_w", "step-time exponent of the reward", float)
    flag("reward_v", "parameter exponent of the reward", float)
    flag("reward_cost", "the reward's cost term S: step_time (the paper's) or flops")
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
        if record["test_accuracy"] is not None:
            lines.append(f"test         {record['test_accuracy']:.2%} top-1 on the test split")
    else:
        lines.append(f"status       FAILED: {record['failure']}")
    if record["step_time_ms"] is not None:
        lines.append(
            f"step time    {_ms(record['step_time_ms'])} median, "
            f"IQR {_ms(record['step_time_spread_ms'])}"
            f", {record['images_per_second']:,.0f} images/s (batch {record['batch_size']}, "
            f"{record['timing_image_size']} px)"
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
    flops_norm = record["flops_norm"]
    lines.append(
        f"FLOPs        {record['flops']:,} ({record['flops'] / 1e9:.3f}B per "
        f"{record['timing_image_size']} px image"
        + (f", x{flops_norm:.3f} the reference)" if flops_norm is not None else ")")
    )
    memory = record["peak_memory_mb"]
    lines.append(
        "peak memory  "
        + ("n/a (not measured on a CPU)" if memory is None else f"{memory:,.0f} MiB")
    )
    cost = (
        ""
        if record["reward_cost"] in (None, "step_time")
        else f" (cost term: {record['reward_cost']})"
    )
    lines.append(
        "reward       "
        + ("n/a (failed)" if record["reward"] is None else f"{record['reward']:.4f}{cost}")
    )
    lines.append(f"took         {record['duration_s']:.1f} s")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from nas.evaluate import evaluate_candidate
    from searchspace import load_arch

    spec = load_arch(args.arch)
    config = EvalConfig(**config_kwargs(args, EvalConfig))
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
