"""``nas train``: train one architecture fully, with progressive learning."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from nas.cli.args import add_config_flag, config_kwargs
from nas.cli.paths import DATASET, SPEC, PathArgument, output_folder
from nas.errors import ConfigError
from nas.train.config import DistributedConfig, ProgressiveConfig

#: ``--progressive``: a preset's name, or a YAML schedule file.
SCHEDULE = PathArgument("input", False, "yaml", names=("*",), suffixes=(".yaml", ".yml"))


#: The cheapest valid command line, by argument (tests/nas/cli/test_paths.py reaches every path
#: argument from it; {config}: a search config, {torch}: a torch file, {run}, {out}: folders).
EXAMPLE = {
    "arch": "b0",
    "dataset": "synthetic:64",
    "epochs": "1",
    "progressive": "off",
    "batch_size": "8",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train an architecture fully, with progressive learning",
        description="Train an architecture on a dataset with progressive learning and adaptive "
        "regularization (EfficientNetV2): M stages whose image size, RandAugment magnitude, "
        "Mixup alpha and dropout grow from a minimum to a maximum, weights carried from stage to "
        "stage, random-resized crops, weight EMA, label smoothing, warm-up; held-out accuracy at "
        "the spec's eval size and at the stage's train size after every epoch. A checkpoint is "
        "written after every epoch; --resume continues it. With --workers N, data-parallel on N "
        "Ray Train workers (DDP), on a local Ray or the cluster --address names; --batch-size is "
        "then the global batch. "
        "Exit status: 0 trained, 1 the loss became NaN (or workers kept failing), 2 bad input.",
    )
    parser.add_argument(
        "arch", type=SPEC, help="catalog name, YAML file (e.g. from nas scale) or spec string"
    )
    parser.add_argument(
        "--dataset",
        type=DATASET,
        required=True,
        help="NAME[:PATH]: mnist5k, synthetic[:N], imagefolder:PATH, cifar10:PATH, "
        "cifar100:PATH, flowers102:PATH, stanfordcars:PATH, fashionmnist[:PATH]",
    )
    parser.add_argument("--epochs", type=int, required=True, help="total epochs, all stages")
    parser.add_argument(
        "--progressive",
        type=SCHEDULE,
        default="paper",
        help="paper (default: the paper's table and formula), reference (the reference code's "
        "schedule), off (one stage at the largest size and strongest regularization) or a "
        "YAML schedule file",
    )
    parser.add_argument("--stages", type=int, help="number of stages (default: the schedule's, 4)")
    parser.add_argument(
        "--schedule-size",
        choices=["s", "m", "l"],
        help="which preset column (default: from the spec's variant or name, else s)",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        help="largest training image size for a preset (scaled from the paper's), the fixed "
        "size for off (default: the spec's train size)",
    )
    parser.add_argument(
        "--init",
        type=PathArgument("input", False, "torch", prefixes=("torchvision:", "effnas:")),
        help="initial weights for fine-tuning: torchvision:PATH (an EfficientNetV2 state dict) "
        "or effnas:PATH (an effnas weights file); the classifier is re-sized for the dataset",
    )
    parser.add_argument(
        "--out", type=output_folder(), help="run directory (default runs/train-<spec name or hash>)"
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its checkpoint"
    )

    _add_training_flags(parser)
    _add_worker_flags(parser)
    parser.add_argument(
        "--progress",
        choices=["auto", "on", "off"],
        default="auto",
        help="progress bar per epoch on stderr (auto: when stderr is a terminal)",
    )
    parser.add_argument("--json", action="store_true", help="print the final record as JSON")
    parser.set_defaults(func=run)


def _add_training_flags(parser: argparse.ArgumentParser) -> None:
    """The flags that set :class:`ProgressiveConfig`'s recipe, data and crop fields."""

    def flag(name: str, help: str, type: Any = str, shown: str | None = None) -> None:
        add_config_flag(parser, ProgressiveConfig, name, help, type=type, shown=shown)

    flag("batch_size", "batch size; with --workers, the global batch", int)
    flag("lr", "peak learning rate", float, shown="default: 0.016 per 256 images for RMSProp")
    flag("optimizer", "rmsprop (the paper's), sgd or adamw")
    flag("lr_schedule", "after warm-up: cosine or exponential (the paper's x0.97 every 2.4 epochs)")
    flag(
        "warmup_epochs",
        "linear warm-up",
        float,
        shown="default: 5 epochs, or a tenth of the training if shorter",
    )
    flag("weight_decay", "on weights, not BN/biases", float)
    flag("label_smoothing", "label smoothing", float)
    flag("ema_decay", "weight EMA decay; 0: off", float)
    flag(
        "train_crop",
        "training images: random-resized (the reference code's scale augmentation: a random "
        "crop of 5-100%% of the area, aspect 3/4-4/3, resized to the stage's size) or none "
        "(the whole image resized); evaluation never crops",
    )
    flag("seed", "seed", int)
    flag("device", "auto, cpu, cuda or cuda:N")
    flag("precision", "auto (bf16 on a GPU, fp32 on a CPU), fp32 or bf16")
    flag("heldout_fraction", "fraction of the training set held out for accuracy", float)
    flag("test_fraction", "fraction carved as the test split if the dataset has none", float)
    flag("max_train_images", "train on at most this many images", int, shown="default: all")
    flag("num_workers", "data-loading processes", int, shown="default: chosen per dataset")


def _add_worker_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of data-parallel training (:class:`DistributedConfig` and ``--address``)."""
    workers = parser.add_argument_group(
        "data-parallel training on Ray Train (DDP: gloo on CPUs, NCCL on GPUs)"
    )

    def worker_flag(name: str, help: str, type: Any = int, shown: str | None = None) -> None:
        add_config_flag(workers, DistributedConfig, name, help, type=type, shown=shown)

    worker_flag(
        "workers",
        "train on N data-parallel workers; each takes batch-size/N images of every global batch",
        shown="default: one process, no Ray",
    )
    worker_flag("cpus_per_worker", "CPUs (and torch threads) per worker")
    worker_flag("gpus_per_worker", "0, or 1: each worker drives one GPU")
    worker_flag("max_failures", "worker failures to recover from, each from the last epoch")
    worker_flag(
        "storage_path",
        "Ray Train checkpoint storage every node reaches (a shared path, s3://...)",
        type=output_folder(urls=True),
        shown="default: inside --out, removed at the end",
    )
    workers.add_argument(
        "--address",
        type=str,
        help="Ray cluster to train on: host:port or ray://host:port (default RAY_ADDRESS, "
        "else a new local Ray on 127.0.0.1)",
    )


def run(args: argparse.Namespace) -> int:
    from nas.errors import NonFiniteLossError, WorkerFailureError
    from nas.train.progressive import train_progressive
    from nas.train.schedule import schedule_for
    from searchspace import load_arch

    spec = load_arch(args.arch)
    schedule = schedule_for(
        spec,
        args.progressive,
        stages=args.stages,
        image_size=args.image_size,
        size=args.schedule_size,
    )
    config = ProgressiveConfig(schedule=schedule, **config_kwargs(args, ProgressiveConfig))
    scaling = _distributed_config(args)
    out_dir = Path(args.out) if args.out else Path("runs") / f"train-{spec.label}"
    progress = {"on": True, "off": False}.get(args.progress, sys.stderr.isatty())

    def log(line: str) -> None:
        print(f"nas train: {line}", file=sys.stderr, flush=True)

    try:
        if scaling is None:
            outcome = train_progressive(
                spec, config, out_dir, resume=args.resume, progress=progress, log=log
            )
        else:
            from nas.train.distributed import train_distributed

            outcome = train_distributed(
                spec,
                config,
                out_dir,
                scaling,
                resume=args.resume,
                address=args.address,
                progress=progress,
                log=log,
            )
    except (NonFiniteLossError, WorkerFailureError) as error:
        print(
            f"nas train: {error.reason}; the last good checkpoint is in {out_dir}",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print(
            f"nas train: interrupted; every finished epoch is saved in {out_dir}. Continue with "
            f"the same command and --resume{'' if args.out else f' --out {out_dir}'}",
            file=sys.stderr,
        )
        return 130
    record = json.loads((out_dir / "metrics.json").read_text())
    if args.json:
        print(json.dumps(record, indent=2))
        return 0
    final = record["final"]
    ema = " (EMA weights; raw " + f"{final['accuracy_raw']:.2%})" if config.ema_decay > 0 else ""
    print(
        f"trained {outcome.spec.label} on {config.dataset}: {config.epochs} epochs in "
        f"{schedule.stages} stage{'s' if schedule.stages != 1 else ''}, "
        f"{final['train_seconds']:.1f} s of training"
    )
    print(
        f"held-out accuracy {final['accuracy']:.2%}{ema} at {final['eval_image_size']} px, "
        f"{final['accuracy_at_train_size']:.2%} at the last stage's train size "
        f"{final['train_image_size']} px"
    )
    if final["test_accuracy"] is not None:
        print(f"test accuracy {final['test_accuracy']:.2%}")
    print(f"run directory {out_dir}: weights.pt, checkpoint.pt, metrics.csv, metrics.json")
    return 0


def _distributed_config(args: argparse.Namespace) -> DistributedConfig | None:
    """The workers ``--workers`` asks for, or None (one process); a worker flag without
    ``--workers`` is an error.

    Raises:
        ConfigError: a bad value, or a worker flag given alone.
    """
    given = config_kwargs(args, DistributedConfig)
    if "workers" not in given:
        alone = [f"--{name.replace('_', '-')}" for name in given]
        if args.address:
            alone.append("--address")
        if alone:
            raise ConfigError(f"{alone[0]} needs --workers N (data-parallel training on Ray)")
        return None
    return DistributedConfig(**given)
