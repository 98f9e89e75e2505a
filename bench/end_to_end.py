"""The whole method on Fashion-MNIST, against the nets a user would pick instead (issue 22).

As a user would: ``nas search configs/fashion.yaml`` (or ``--search-run``: an existing run
directory), ``nas scale`` of its reward-best base (``best.yaml``) to the S variant, and ``nas
train`` of the base and of S; then, under the same ``nas train`` settings (the base's command
line: recipe, progressive schedule, data, image size, epochs, trainer), the nets a user would
otherwise take: torchvision's ``mobilenet_v3_small``, ``mobilenet_v3_large``, ``resnet18`` and
``efficientnet_b0`` (``weights=None``, ``num_classes=10``) and the catalog's
``efficientnetv2-b0``. S is also trained with ``--progressive off`` (one stage at its full size,
the same epochs), to see what progressive learning does here.

Scaling goes to the named variant S, not to a step-time budget: a variant is the same net from
the same base on any machine, while a step time measured on a shared CPU moves with its load
(even by the CPU clock, by several percent), and the comparison below is of whole time-to-
accuracy curves, which show where S lands whatever it costs. M and L at 28 px bases would take
days on two CPU cores.

The baselines' adaptation, one rule for every one of them: 10 classes (their own classifier,
built for 10), the 3-channel input every net gets (the gray channel copied), and the first
convolution, the stem's, at stride 1 instead of 2 (:func:`adapt`). At 28 px a stride-32 net ends
on a 1x1 map after discarding most of the image in its stem; halving the total stride, as
CIFAR versions of ImageNet nets do, gives 2x2 and costs what 56 px inputs would, without feeding
any net interpolated pixels. Every baseline sees the same images at the same size as the found
base (its ``nas train`` settings); the found nets are not adapted: they were searched (base) and
scaled (S) for these images. The baselines' spec, which the trainer reads for image sizes and
classes, is the base's (``train_progressive(build=...)``); their ``metrics.json`` names the
class actually trained as ``model``.

Measured, per net: top-1 on the official 10,000 test images (``--test-images`` fewer) after every
epoch with the weights the trainer evaluates (its EMA), against the training time so far; the
final test accuracy, the training time per epoch and the parameters; and the search's cost as a
share of each found net's training time. Time is the process CPU time of the training epochs
(``train_cpu_seconds``; torch on one thread; evaluation not counted), or on a GPU their wall time
(``train_seconds``). Times to an accuracy are read at epoch ends (upper bounds within an epoch);
a net's accuracy "at" a time is the one it had at its last epoch end by then. The headline goes
both ways: at each found net's time to its final accuracy, where each baseline stood; and each
baseline's final accuracy, how long the found net took to reach it.

Seeds: ``--seeds 0,1`` trains each net once per seed (``nas train --seed``); ``--nets`` picks
which nets a run trains, so that a second seed can be added for a few nets later. The summary
reads every net and seed in ``OUT``: each figure is the mean over a net's seeds, the table lists
each seed's final accuracy, and the pooled seed spread (over the nets with two or more seeds)
says how far apart two nets' means must be to mean anything.

Resumable: each net trains in ``OUT/<net>/`` (seed 0) or ``OUT/<net>-seed<N>/`` (``nas train``'s
run directory) and is skipped once its ``result.json`` exists; an interrupted net continues from
its checkpoint. Outputs: ``OUT/summary.md`` (also printed), ``OUT/summary.json``,
``OUT/time_to_accuracy.png``.

    python bench/end_to_end.py --out runs/bench/end-to-end            # search, scale, train all
    python bench/end_to_end.py --search-run runs/fashion --out runs/bench/end-to-end --jobs 2
    python bench/end_to_end.py --out runs/bench/end-to-end --seeds 1 --nets S,resnet18
    python bench/end_to_end.py --smoke --out /tmp/end-to-end-smoke      # minutes: everything tiny
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas.cli import build_parser
from nas.cli.args import config_kwargs
from nas.train.config import ProgressiveConfig
from nas.train.device import resolve_device
from nas.train.loop import evaluate_accuracy
from nas.train.progressive import train_progressive
from nas.train.schedule import schedule_for
from searchspace import ArchSpec, build_model, count_parameters, load_arch

REPO = Path(__file__).resolve().parents[1]
SEARCH_CONFIG = REPO / "configs" / "fashion.yaml"
DATASET = "fashionmnist"
NUM_CLASSES = 10


def _torchvision(name: str, **kwargs: Any) -> Callable[[int], nn.Module]:
    def build(num_classes: int) -> nn.Module:
        import torchvision.models

        return getattr(torchvision.models, name)(weights=None, num_classes=num_classes, **kwargs)

    return build


def _catalog(name: str) -> Callable[[int], nn.Module]:
    def build(num_classes: int) -> nn.Module:
        return build_model(load_arch(name).replace(num_classes=num_classes))

    return build


#: The nets a user would pick instead, by name: ``build(num_classes) -> model`` (not yet adapted).
BASELINES: dict[str, Callable[[int], nn.Module]] = {
    "mobilenet_v3_small": _torchvision("mobilenet_v3_small"),
    "mobilenet_v3_large": _torchvision("mobilenet_v3_large"),
    "resnet18": _torchvision("resnet18"),
    "efficientnet_b0": _torchvision("efficientnet_b0"),
    "efficientnetv2-b0": _catalog("efficientnetv2-b0"),
}
SMOKE_BASELINES = ("mobilenet_v3_small", "resnet18")
#: Baselines changed in one way, trained only where ``--nets`` names them, to find out why a
#: baseline trains as it does: ``efficientnet_b0`` without its stochastic depth (torchvision's
#: default drops its blocks' residual branches with a rate rising to 0.2).
DIAGNOSTICS: dict[str, Callable[[int], nn.Module]] = {
    "efficientnet_b0-nodrop": _torchvision("efficientnet_b0", stochastic_depth_prob=0.0),
}


def adapt(model: nn.Module) -> nn.Module:
    """The rule every baseline follows for 28 px images: its first convolution (the stem's, the
    first ``nn.Conv2d`` it registers) gets stride 1 instead of 2. Returns ``model``, changed.

    Raises:
        ValueError: the first convolution does not take 3 channels at stride 2.
    """
    stem = next(module for module in model.modules() if isinstance(module, nn.Conv2d))
    if stem.in_channels != 3 or stem.stride != (2, 2):
        raise ValueError(
            f"the first convolution of {type(model).__name__} is not a stride-2 stem on 3 "
            f"channels: {stem}"
        )
    stem.stride = (1, 1)
    return model


def baseline(name: str, num_classes: int = NUM_CLASSES) -> nn.Module:
    """Baseline (or diagnostic) ``name`` built for ``num_classes`` and adapted (:func:`adapt`)."""
    return adapt({**BASELINES, **DIAGNOSTICS}[name](num_classes))


# -- the user's steps: search, scale -------------------------------------------------------------


def nas_command(*args: str) -> list[str]:
    """The ``nas`` command line (run as ``python -m nas.cli`` with this interpreter)."""
    return [sys.executable, "-m", "nas.cli", *args]


def smoke_search_config(out: Path) -> Path:
    """configs/fashion.yaml cut down to a smoke test: 2 trials of one epoch on 256 images."""
    config = yaml.safe_load(SEARCH_CONFIG.read_text())
    config.update(study="fashion-smoke", trials=2, epochs=1)
    config["evaluation"].update(max_train_images=256, heldout_fraction=0.02, timing_steps=3)
    path = out / "smoke-fashion.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def search(args: argparse.Namespace, out: Path) -> tuple[Path, dict[str, Any]]:
    """The search's run directory (searched here unless ``--search-run`` names one) and its
    cost: the trials' seconds (each held one CPU, or one GPU) and, if it ran here, the
    driver's wall time."""
    if args.search_run is not None:
        run_dir = args.search_run
        record: dict[str, Any] = {"searched_here": False}
    else:
        config_path = smoke_search_config(out) if args.smoke else SEARCH_CONFIG
        study = yaml.safe_load(config_path.read_text())["study"]
        run_dir = out / "search" / study
        record_path = out / "search.json"
        if record_path.is_file() and (run_dir / "best.yaml").is_file():
            record = json.loads(record_path.read_text())
        else:
            resume = ["--resume"] if (run_dir / "study.db").is_file() else []
            command = nas_command("search", str(config_path), "--runs-dir", str(out / "search"))
            print("$ nas", " ".join(command[3:] + resume), file=sys.stderr, flush=True)
            start = time.perf_counter()
            subprocess.run(command + resume, check=True)
            record = {"searched_here": True, "wall_seconds": time.perf_counter() - start}
            record_path.write_text(json.dumps(record, indent=2))
    from results.study import load_study_frame

    frame = load_study_frame(run_dir)
    record.update(
        run_dir=str(run_dir),
        trials=len(frame),
        trial_seconds=float(frame["duration_s"].fillna(0).sum()),
    )
    return run_dir, record


def scale(base_path: Path, out: Path) -> Path:
    """``nas scale BASE --variants s``: the S spec's file (written once)."""
    scaled_dir = out / "scaled"
    found = sorted(scaled_dir.glob("*-s.yaml"))
    if not found:
        command = nas_command("scale", str(base_path), "--variants", "s", "--out", str(scaled_dir))
        print("$ nas", " ".join(command[3:]), file=sys.stderr, flush=True)
        subprocess.run(command, check=True)
        found = sorted(scaled_dir.glob("*-s.yaml"))
    return found[0]


# -- training --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Net:
    """One net to train with one seed: its ``nas train`` command line, and a baseline's name
    (None: a found net)."""

    name: str
    argv: tuple[str, ...]
    baseline: str | None = None
    seed: int = 0

    @property
    def run_name(self) -> str:
        """Its run directory's name in ``OUT``: the net's name, suffixed for seeds other than 0."""
        return run_name(self.name, self.seed)


def run_name(name: str, seed: int) -> str:
    """``OUT``'s directory for net ``name`` trained with ``seed``."""
    return name if seed == 0 else f"{name}-seed{seed}"


def train_argv(
    arch: Path, run_dir: Path, args: argparse.Namespace, *, progressive: bool = True, seed: int = 0
) -> tuple[str, ...]:
    """The ``nas train`` command line a user would type for ``arch``: the default progressive
    schedule in ``args.stages`` stages, or ``--progressive off``, with ``seed``."""
    argv = ["train", str(arch), "--dataset", DATASET, "--epochs", str(args.epochs)]
    argv += ["--seed", str(seed)]
    argv += ["--device", args.device, "--out", str(run_dir)]
    argv += ["--stages", str(args.stages)] if progressive else ["--progressive", "off"]
    if args.train_images is not None:
        argv += ["--max-train-images", str(args.train_images)]
    if args.heldout_fraction is not None:
        argv += ["--heldout-fraction", str(args.heldout_fraction)]
    return tuple(argv)


def config_of(argv: tuple[str, ...]) -> tuple[ArchSpec, ProgressiveConfig]:
    """The spec and config ``nas train ARGV`` trains with, built as ``nas.cli.train`` does."""
    parsed = build_parser().parse_args(list(argv))
    spec = load_arch(parsed.arch)
    schedule = schedule_for(
        spec,
        parsed.progressive,
        stages=parsed.stages,
        image_size=parsed.image_size,
        size=parsed.schedule_size,
    )
    return spec, ProgressiveConfig(schedule=schedule, **config_kwargs(parsed, ProgressiveConfig))


def train_net(net: Net, out: Path, test_images: int | None) -> dict[str, Any]:
    """Train ``net`` (or continue it from its checkpoint) in ``OUT/<name>``, measuring the test
    accuracy after every epoch; its ``result.json``, read back if it exists already."""
    run_dir = out / net.run_name
    result_path = run_dir / "result.json"
    if result_path.is_file():
        return json.loads(result_path.read_text())
    spec, config = config_of(net.argv)
    device = resolve_device(config.device)
    if device.type == "cpu":
        torch.set_num_threads(1)  # CPU time is then what an idle core's wall time would be
    test_data = config.load(spec.eval_resolution, seed=config.seed)

    def fresh(spec_with_classes: ArchSpec) -> nn.Module:
        """The net being trained, newly built (as the trainer builds it)."""
        if net.baseline is None:
            return build_model(spec_with_classes)
        return baseline(net.baseline, spec_with_classes.num_classes)

    classes = spec.replace(num_classes=test_data.num_classes)
    test_set = test_data.test
    if test_images is not None:
        test_set = torch.utils.data.Subset(test_set, range(min(test_images, len(test_set))))
    test_loader = torch.utils.data.DataLoader(test_set, batch_size=config.batch_size)
    curve_path = run_dir / "test_curve.jsonl"

    def on_epoch_end(epoch: int, metrics: dict[str, Any]) -> None:
        # The weights the trainer evaluates (its EMA), as its checkpoint of this epoch holds them.
        checkpoint = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)
        model = fresh(classes)
        if checkpoint["ema"] is not None:
            prefix = "module."
            state = {
                k[len(prefix) :]: v for k, v in checkpoint["ema"].items() if k.startswith(prefix)
            }
        else:
            state = checkpoint["model"]
        model.load_state_dict(state)
        model.to(device)
        accuracy = evaluate_accuracy(model, test_loader, device=device, precision=config.precision)
        row = {
            "epoch": epoch,
            "test_accuracy": accuracy,
            "heldout_accuracy": metrics["accuracy"],
            "train_cpu_seconds": metrics["train_cpu_seconds"],
            "train_seconds": metrics["train_seconds"],
            "epoch_cpu_seconds": metrics["epoch_cpu_seconds"],
            "epoch_seconds": metrics["epoch_seconds"],
            "image_size": metrics["image_size"],
        }
        with curve_path.open("a") as file:
            file.write(json.dumps(row) + "\n")
        print(f"{net.run_name}: epoch {epoch}, test {accuracy:.2%}", file=sys.stderr, flush=True)

    resume = (run_dir / "checkpoint.pt").is_file()
    if not resume and curve_path.exists():
        curve_path.unlink()
    outcome = train_progressive(
        spec,
        config,
        run_dir,
        resume=resume,
        on_epoch_end=on_epoch_end,
        build=None if net.baseline is None else fresh,  # effnas nets: exactly as nas train
    )
    counted = fresh(classes)
    rows = [json.loads(line) for line in curve_path.read_text().splitlines()]
    rows = list({row["epoch"]: row for row in rows}.values())  # a resumed epoch: its last row
    result = {
        "name": net.name,
        "seed": net.seed,
        "command": "nas " + " ".join(net.argv),
        "baseline": net.baseline,
        "model": type(counted).__name__,
        "parameters": count_parameters(counted),
        "device": str(device),
        "time_metric": "train_cpu_seconds" if device.type == "cpu" else "train_seconds",
        "epochs": config.epochs,
        "test_images": len(test_set),
        "final_test_accuracy": rows[-1]["test_accuracy"],
        "final_heldout_accuracy": outcome.accuracy,
        "curve": rows,
    }
    result_path.write_text(json.dumps(result, indent=2))
    return result


#: The found nets: the base, S, and S without progressive learning.
FOUND = ("base", "S", "S-fixed")


def net_names(diagnostics: bool = False) -> list[str]:
    """The nets the benchmark trains by default, in the order its tables list them; with
    ``diagnostics``, every net it knows (:data:`DIAGNOSTICS` last)."""
    return [*FOUND, *BASELINES, *(DIAGNOSTICS if diagnostics else ())]


def nets_to_train(base: Path, scaled: Path, args: argparse.Namespace, out: Path) -> list[Net]:
    """The found base and S (progressive, and S without), then the baselines under the base's
    ``nas train`` command line: those of ``args.nets`` (names of :func:`net_names`, diagnostics
    too; default all but the diagnostics, smoke: two baselines), once per seed of ``args.seeds``."""
    known = net_names(diagnostics=True)
    if args.nets:
        names = args.nets
    elif args.smoke:
        names = [*FOUND, *SMOKE_BASELINES]
    else:
        names = net_names()
    nets = []
    for seed in args.seeds:
        for name in sorted(names, key=known.index):
            found = name in FOUND
            arch = scaled if name in ("S", "S-fixed") else base
            run_dir = out / run_name(name, seed)
            argv = train_argv(arch, run_dir, args, progressive=name != "S-fixed", seed=seed)
            nets.append(Net(name, argv, baseline=None if found else name, seed=seed))
    return nets


def collect(out: Path) -> dict[str, list[dict[str, Any]]]:
    """Every finished run in ``out``: by net (in :func:`net_names` order), its results by seed."""
    found: dict[str, list[dict[str, Any]]] = {}
    for name in net_names(diagnostics=True):
        runs = [out / name, *sorted(out.glob(f"{name}-seed*"), key=_seed_of)]
        results = [json.loads((run / "result.json").read_text()) for run in runs
                   if (run / "result.json").is_file()]  # fmt: skip
        if results:
            found[name] = sorted(results, key=lambda result: result.get("seed", 0))
    return found


def _seed_of(run: Path) -> int:
    suffix = run.name.rpartition("-seed")[2]
    return int(suffix) if suffix.isdigit() else -1


def mean_over_seeds(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One net's result with its curve averaged over its seeds' runs, epoch by epoch (accuracy
    and training time); ``finals`` keeps each seed's final test accuracy.

    Raises:
        ValueError: the runs trained different numbers of epochs.
    """
    if len({len(run["curve"]) for run in runs}) != 1:
        raise ValueError(f"{runs[0]['name']}: its seeds trained different numbers of epochs")
    key = runs[0]["time_metric"]
    curve = [
        {
            "epoch": rows[0]["epoch"],
            "test_accuracy": statistics.fmean(row["test_accuracy"] for row in rows),
            key: statistics.fmean(row[key] for row in rows),
        }
        for rows in zip(*(run["curve"] for run in runs), strict=True)
    ]
    finals = [run["final_test_accuracy"] for run in runs]
    return {
        **runs[0],
        "seeds": [run.get("seed", 0) for run in runs],
        "finals": finals,
        "final_test_accuracy": statistics.fmean(finals),
        "curve": curve,
    }


def seed_spread(runs: dict[str, list[dict[str, Any]]]) -> tuple[float, int] | None:
    """The pooled standard deviation of final test accuracy between seeds of one net, over the
    nets with two or more seeds, and its degrees of freedom; None without such a net."""
    squares, freedom = 0.0, 0
    for results in runs.values():
        if len(results) > 1:
            finals = [result["final_test_accuracy"] for result in results]
            squares += statistics.variance(finals) * (len(finals) - 1)
            freedom += len(finals) - 1
    return None if freedom == 0 else (math.sqrt(squares / freedom), freedom)


# -- the comparison --------------------------------------------------------------------------------


def time_to(result: dict[str, Any], accuracy: float) -> float | None:
    """Training time until the first epoch end at ``accuracy`` or better (None: never)."""
    key = result["time_metric"]
    return next((row[key] for row in result["curve"] if row["test_accuracy"] >= accuracy), None)


def accuracy_at(result: dict[str, Any], seconds: float) -> float | None:
    """Test accuracy at the last epoch end by ``seconds`` of training (None: no epoch yet)."""
    key = result["time_metric"]
    done = [row["test_accuracy"] for row in result["curve"] if row[key] <= seconds * (1 + 1e-9)]
    return done[-1] if done else None


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _sec(value: float | None) -> str:
    if value is None:
        return "never"
    return f"{value:,.0f} s" if value >= 100 else f"{value:.3g} s"


def summary(
    results: dict[str, dict[str, Any]],
    search_cost: dict[str, Any],
    spread: tuple[float, int] | None = None,
) -> list[str]:
    """The tables of summary.md, from each net's result (:func:`mean_over_seeds` where it has
    several seeds; ``finals`` lists them) and the pooled seed spread (:func:`seed_spread`)."""
    any_result = next(iter(results.values()))
    clock = "CPU" if any_result["time_metric"] == "train_cpu_seconds" else "wall"
    epochs = any_result["epochs"]
    lines = [
        f"# Fashion-MNIST end to end ({epochs} epoch{'s' if epochs != 1 else ''}, test on "
        f"{any_result['test_images']:,} official test images, {clock} time of training)",
        "",
        "Accuracies and times are means over each net's seeds.",
        "",
        f"| net | params | test acc | each seed | {clock} s / epoch | {clock} time "
        "| time to final acc |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, result in results.items():
        curve, key = result["curve"], result["time_metric"]
        per_epoch = curve[-1][key] / len(curve)
        finals = result.get("finals", [result["final_test_accuracy"]])
        seeds = result.get("seeds", [result.get("seed", 0)])
        each = ", ".join(
            f"{_pct(final)} (seed {seed})" for seed, final in zip(seeds, finals, strict=True)
        )
        lines.append(
            f"| {name} | {result['parameters'] / 1e6:.2f}M | {_pct(result['final_test_accuracy'])} "
            f"| {each} | {per_epoch:,.1f} | {_sec(curve[-1][key])} | "
            f"{_sec(time_to(result, result['final_test_accuracy']))} |"
        )
    if spread is not None:
        sd, freedom = spread
        lines += [
            "",
            f"Seed spread: final test accuracy differs between seeds of one net by a standard "
            f"deviation of {sd:.2%} (pooled over the nets with two or more seeds, {freedom} "
            f"degree{'s' if freedom != 1 else ''} of freedom); the difference of two nets' "
            f"one-seed figures then has a standard deviation of {math.sqrt(2) * sd:.2%}.",
        ]
    search_seconds = search_cost["trial_seconds"]
    lines += ["", f"Search: {search_cost['trials']} trials, {search_seconds:,.0f} trial-seconds"]
    if "wall_seconds" in search_cost:
        lines[-1] += f" ({search_cost['wall_seconds']:,.0f} s wall, here)"
    for found in FOUND:
        if found in results:
            total = results[found]["curve"][-1][results[found]["time_metric"]]
            lines.append(f"- as a share of {found}'s training time: {search_seconds / total:.1%}")
    baselines = [name for name, result in results.items() if result["baseline"]]
    for found in FOUND:
        if found not in results:
            continue
        target = results[found]["final_test_accuracy"]
        at = time_to(results[found], target)
        lines += [
            "",
            f"## {found}: {_pct(target)} after {_sec(at)}",
            "",
            f"| baseline | its acc at {found}'s {_sec(at)} | its time to {_pct(target)} | "
            f"its final acc | {found}'s acc at that baseline's time to its final acc | "
            f"{found}'s time to it |",
            "|---|---|---|---|---|---|",
        ]
        for name in baselines:
            result = results[name]
            final = result["final_test_accuracy"]
            their_time = time_to(result, final)
            lines.append(
                f"| {name} | {_pct(accuracy_at(result, at))} | {_sec(time_to(result, target))} "
                f"| {_pct(final)} | {_pct(accuracy_at(results[found], their_time))} | "
                f"{_sec(time_to(results[found], final))} |"
            )
    return lines


def figure(results: dict[str, dict[str, Any]], path: Path) -> None:
    """Test accuracy against training time, one line per net (markers at epoch ends): the whole
    curves, and beside them the top 6 points of accuracy, where the nets' finals are."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    any_result = next(iter(results.values()))
    clock = "CPU" if any_result["time_metric"] == "train_cpu_seconds" else "wall"
    best = max(100 * result["final_test_accuracy"] for result in results.values())
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    for axis, (low, high) in zip(axes, [(None, None), (best - 6, best + 0.6)], strict=True):
        for name, result in results.items():
            key = result["time_metric"]
            seconds = [row[key] for row in result["curve"]]
            accuracy = [100 * row["test_accuracy"] for row in result["curve"]]
            seeds = len(result.get("seeds", [0]))
            label = name if seeds == 1 else f"{name} (mean of {seeds} seeds)"
            style = "--" if result["baseline"] else "-"
            axis.plot(seconds, accuracy, style, marker="o", markersize=3, label=label)
        axis.set_xscale("log")
        axis.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axis.set_xlabel(f"training time ({clock} seconds, log scale)")
        axis.grid(True, which="both", alpha=0.3)
        if low is not None:
            shown = [
                row[result["time_metric"]]
                for result in results.values()
                for row in result["curve"]
                if 100 * row["test_accuracy"] >= low
            ]
            axis.set_xlim(min(shown) / 1.15, max(shown) * 1.15)
            axis.set_ylim(low, high)
            axis.set_title(f"the top: {low:.1f}% to {high:.1f}%")
        else:
            axis.set_title("whole curves")
    axes[0].set_ylabel(f"top-1 on {any_result['test_images']:,} Fashion-MNIST test images (%)")
    axes[0].legend(fontsize=8)
    fig.suptitle("Found (solid) and torchvision/catalog (dashed) nets, the same nas train recipe")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench/end-to-end"))
    parser.add_argument("--search-run", type=Path, help="an existing search's run directory")
    parser.add_argument("--epochs", type=int, help="default 10 (smoke: 1)")
    parser.add_argument("--stages", type=int, help="progressive stages (default 4, at most epochs)")
    parser.add_argument("--train-images", type=int, help="cap on training images (default all)")
    parser.add_argument("--test-images", type=int, help="default all 10,000 (smoke: 500)")
    parser.add_argument(
        "--heldout-fraction", type=float, help="nas train's (default 0.1; smoke: 0.01)"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--nets",
        help=f"comma-separated, which nets to train (default all: {', '.join(net_names())}; "
        f"diagnostics: {', '.join(DIAGNOSTICS)})",
    )
    parser.add_argument(
        "--seeds", default="0", help="comma-separated seeds, each net trained once per seed "
        "(default 0)"
    )  # fmt: skip
    parser.add_argument("--jobs", type=int, default=1, help="nets trained at once (processes)")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny: a search of 2 trials, then 1 epoch on 256 images, 2 baselines by default",
    )
    args = parser.parse_args(argv)
    try:
        args.seeds = [int(seed) for seed in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds: not a comma-separated list of integers: {args.seeds!r}")
    if any(seed < 0 for seed in args.seeds) or len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds: distinct seeds of 0 or more, not {args.seeds}")
    if args.nets:
        args.nets = args.nets.split(",")
        known = net_names(diagnostics=True)
        unknown = [name for name in args.nets if name not in known]
        if unknown:
            parser.error(f"--nets: unknown net {unknown[0]!r}; known: {', '.join(known)}")
    if args.smoke:
        args.epochs = args.epochs or 1
        args.train_images = args.train_images or 256
        args.test_images = args.test_images or 500
        # The held-out split is evaluated twice an epoch (EMA and raw weights): 600 images.
        args.heldout_fraction = args.heldout_fraction or 0.01
    args.epochs = args.epochs or 10
    args.stages = args.stages or min(4, args.epochs)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    run_dir, search_cost = search(args, out)
    base = run_dir / "best.yaml"
    scaled = scale(base, out)
    nets = nets_to_train(base, scaled, args, out)
    if args.jobs == 1:
        for net in nets:
            train_net(net, out, args.test_images)
    else:
        context = multiprocessing.get_context("spawn")  # no torch state shared with the parent
        with ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
            for future in [pool.submit(train_net, net, out, args.test_images) for net in nets]:
                future.result()
    runs = collect(out)
    results = {name: mean_over_seeds(seeds) for name, seeds in runs.items()}
    spread = seed_spread(runs)
    lines = summary(results, search_cost, spread)
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    record = {"search": search_cost, "seed_spread": spread, "nets": runs}
    (out / "summary.json").write_text(json.dumps(record, indent=2))
    figure(results, out / "time_to_accuracy.png")
    print("\n".join(lines))
    print(f"\n{out / 'time_to_accuracy.png'}, {out / 'summary.md'}, {out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
