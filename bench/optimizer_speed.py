"""Does the optimizer change how fast a net trains on a CPU? And do denormals play a part?

A report said that ``nas evaluate efficientnetv2-b0 --dataset mnist5k --image-size 32 --epochs 2
--batch-size 64`` trains at about 410 images/s with RMSProp but about 170 with SGD or AdamW.
Suspects: subnormal ("denormal") floats in weights, gradients, optimizer state, BatchNorm
statistics or activations (slow on some CPUs), the optimizers' different learning rates changing
the activations, and the machine's load.

This trains the net once per optimizer *and* per flush-to-zero setting (``torch.set_flush_denormal``
off and on around every step), all in one process, interleaved step by step so that a change in the
machine's load hits every run alike. Every run is seeded the same way and goes through the real step
(:func:`nas.train.loop.train_step`, with :func:`nas.train.optim.build_optimizer` and
:func:`nas.train.optim.build_scheduler` as ``nas evaluate`` builds them). Each step is timed by the
process's CPU time with one torch thread (on a shared machine the wall clock also counts waiting for
a core; and ``set_flush_denormal`` reaches only the calling thread, not OpenMP's workers once they
exist), split into forward and loss / backward (with ``zero_grad``) / optimizer step by module and
optimizer hooks. After every epoch it counts the subnormal values in the weights, the gradients, the
optimizer state, the BatchNorm buffers and, over one batch, every leaf module's output and the
gradient flowing into it. At the end: held-out accuracy and last-epoch loss of every run, and the
short step timing of :mod:`nas.evaluate.timing` (fresh weights, random data) next to the training
step, per optimizer.

Figures are ratios within this run (optimizer against RMSProp, flush-to-zero on against off,
timed step against training step), never absolute speeds.

    python bench/optimizer_speed.py                         # the report's setting, 2 epochs
    python bench/optimizer_speed.py --epochs 1 --json runs/bench/optimizer_speed.json
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas.data import load_dataset
from nas.evaluate.timing import StepSetup, time_train_step
from nas.train.loop import evaluate_accuracy, train_step
from nas.train.optim import build_optimizer, build_scheduler, make_loss
from nas.train.recipe import OPTIMIZERS, Recipe
from searchspace import build_model, load_arch

TINY = torch.finfo(torch.float32).tiny  # the smallest normal float32
PHASES = ("forward", "backward", "step")


def subnormals(tensors: Iterable[torch.Tensor]) -> tuple[int, int]:
    """``(subnormal values, all values)`` over the floating-point tensors given."""
    count = total = 0
    for tensor in tensors:
        if tensor.is_floating_point():
            tensor = tensor.detach()
            count += int(((tensor != 0) & (tensor.abs() < TINY)).sum())
            total += tensor.numel()
    return count, total


@contextlib.contextmanager
def flush_denormal(enabled: bool) -> Iterator[None]:
    """Flush-to-zero (and denormals-are-zero) on this thread inside the block, if ``enabled``."""
    torch.set_flush_denormal(enabled)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


class Run:
    """One training run (an optimizer, flush-to-zero on or off), timed phase by phase."""

    def __init__(self, spec: Any, data: Any, optimizer: str, ftz: bool, args: Any) -> None:
        torch.manual_seed(args.seed)  # the same weights for every run
        self.model = build_model(spec).train()
        # Each run keeps its own RNG stream (dropout, stochastic depth), seeded as fit() seeds
        # it, so that interleaving the runs does not change what any of them computes.
        torch.manual_seed(args.seed)
        self.rng = torch.get_rng_state()
        self.loader = data.train_loader(args.batch_size, seed=args.seed)
        self.config = Recipe(
            epochs=args.epochs,
            batch_size=args.batch_size,
            optimizer=optimizer,
            warmup_epochs=0.5,  # nas evaluate's default (EvalConfig)
        )
        self.optimizer = build_optimizer(self.model, self.config)
        self.scheduler = build_scheduler(self.optimizer, self.config, len(self.loader))
        self.loss_fn = make_loss(self.config)
        self.name, self.ftz = optimizer, ftz
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self.steps, self.loss_sum = 0, 0.0
        self._marks: dict[str, float] = {}
        # The phases are marked by hooks, so that the step timed is train_step itself.
        mark = self._marks.__setitem__
        self.model.register_forward_pre_hook(lambda *_: mark("forward", time.process_time()))
        self.loss_fn.register_forward_hook(lambda *_: mark("loss", time.process_time()))
        self.optimizer.register_step_pre_hook(lambda *_: mark("step", time.process_time()))
        self.optimizer.register_step_post_hook(lambda *_: mark("done", time.process_time()))

    def start_epoch(self) -> None:
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self.steps, self.loss_sum = 0, 0.0

    def step(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        cpu = torch.device("cpu")
        torch.set_rng_state(self.rng)
        with flush_denormal(self.ftz):
            start = time.process_time()
            loss = train_step(
                self.model,
                images,
                labels,
                self.optimizer,
                self.loss_fn,
                device=cpu,
                precision="fp32",
            )
        self.rng = torch.get_rng_state()
        marks = self._marks
        self.seconds["forward"] += marks["loss"] - marks["forward"]
        self.seconds["backward"] += (marks["step"] - marks["loss"]) + (marks["forward"] - start)
        self.seconds["step"] += marks["done"] - marks["step"]
        self.scheduler.step()
        self.steps += 1
        self.loss_sum += float(loss)

    def images_per_second(self, batch_size: int) -> float:
        return self.steps * batch_size / sum(self.seconds.values())

    def census(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, tuple[int, int]]:
        """Subnormal counts now: state, and activations / their gradients over one batch.

        The activations come from a copy of the net, so the run's BatchNorm statistics and
        gradients stay as training left them.
        """
        state = (v for s in self.optimizer.state.values() for v in s.values() if v.ndim > 0)
        counts = {
            "weights": subnormals(self.model.parameters()),
            "grads": subnormals(p.grad for p in self.model.parameters() if p.grad is not None),
            "opt_state": subnormals(state),
            "bn_buffers": subnormals(self.model.buffers()),
        }
        outputs: list[torch.Tensor] = []
        grads: list[torch.Tensor] = []

        def keep(_module: nn.Module, _inputs: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor):
                outputs.append(output.detach())
                if output.requires_grad:
                    output.register_hook(lambda grad: grads.append(grad) or None)

        probe = copy.deepcopy(self.model)
        for module in probe.modules():
            if not any(module.children()):
                module.register_forward_hook(keep)
        with torch.random.fork_rng(devices=[]), flush_denormal(self.ftz):
            self.loss_fn(probe(images), labels).backward()
        counts["activations"] = subnormals(outputs)
        counts["activation_grads"] = subnormals(grads)
        return counts


def subnormal_penalty(repeats: int = 5) -> dict[str, float]:
    """What this CPU charges for subnormal arithmetic: CPU time without / with flush-to-zero.

    Two kernels the training step is made of, on operands that make subnormals: an elementwise
    product whose results are subnormal (1e-30 * 1e-10), and a matrix product of subnormal
    inputs (1e-40). The median of ``repeats`` interleaved measurements each.
    """
    elementwise = torch.full((1 << 20,), 1e-30)
    matrix, weight = torch.full((256, 256), 1e-40), torch.randn(256, 256)
    kernels = {
        "elementwise": lambda: torch.mul(elementwise, 1e-10),
        "matmul": lambda: matrix @ weight,
    }
    seconds: dict[tuple[str, bool], list[float]] = {}
    for _ in range(repeats):
        for name, kernel in kernels.items():
            for ftz in (False, True):
                with flush_denormal(ftz):
                    start = time.process_time()
                    for _ in range(20):
                        kernel()
                    seconds.setdefault((name, ftz), []).append(time.process_time() - start)
    median = {key: sorted(values)[len(values) // 2] for key, values in seconds.items()}
    return {name: median[(name, False)] / median[(name, True)] for name in kernels}


COUNTED = ("weights", "grads", "opt_state", "bn_buffers", "activations", "activation_grads")


def epoch_rows(epoch: int, runs: list[Run], batch: tuple[torch.Tensor, torch.Tensor]) -> list:
    """One epoch's figures per run: per-phase CPU ms per step, ratios, subnormal counts."""
    base = runs[0]  # the first optimizer, flush-to-zero off
    rows = []
    for run in runs:
        off = next(r for r in runs if r.name == run.name and not r.ftz)
        speed = run.images_per_second(run.loader.batch_size)
        rows.append(
            {
                "epoch": epoch,
                "optimizer": run.name,
                "ftz": run.ftz,
                **{f"{k}_ms": v * 1000 / run.steps for k, v in run.seconds.items()},
                "images_per_second": speed,
                "ratio_vs_first": speed / base.images_per_second(base.loader.batch_size),
                "ratio_ftz_vs_off": speed / off.images_per_second(off.loader.batch_size),
                "loss": run.loss_sum / run.steps,
                "subnormal": {k: list(v) for k, v in run.census(*batch).items()},
            }
        )
    return rows


def print_rows(rows: list[dict[str, Any]], first: str) -> None:
    print(
        f"\nepoch {rows[0]['epoch']}: CPU ms per step by phase, images/s by CPU time, ratios, "
        "subnormal values (count)"
    )
    print(
        f"{'optimizer':9} {'ftz':3} {'fwd':>6} {'bwd':>6} {'step':>5} {'img/s':>6} "
        f"{'/' + first:>8} {'on/off':>6} {'loss':>6}  " + " ".join(f"{c:>8.8}" for c in COUNTED)
    )
    for row in rows:
        print(
            f"{row['optimizer']:9} {'on' if row['ftz'] else 'off':3} {row['forward_ms']:6.1f} "
            f"{row['backward_ms']:6.1f} {row['step_ms']:5.1f} {row['images_per_second']:6.0f} "
            f"{row['ratio_vs_first']:8.3f} {row['ratio_ftz_vs_off']:6.3f} {row['loss']:6.3f}  "
            + " ".join(f"{row['subnormal'][c][0]:>8,}" for c in COUNTED),
            flush=True,
        )


def train_interleaved(runs: list[Run], epochs: int) -> list[dict[str, Any]]:
    """Train every run, one step each in turn (the order rotating), epoch by epoch."""
    loader = runs[0].loader  # every run's loader is seeded alike: one gives all the same batches
    rows = []
    for epoch in range(1, epochs + 1):
        for run in runs:
            run.start_epoch()
        batch = None
        for index, batch in enumerate(loader):
            for offset in range(len(runs)):
                runs[(index + offset) % len(runs)].step(*batch)
        epoch_figures = epoch_rows(epoch, runs, batch)
        print_rows(epoch_figures, runs[0].name)
        rows += epoch_figures
    return rows


def final_figures(runs: list[Run], data: Any, spec: Any, args: Any) -> list[dict[str, Any]]:
    """Accuracy and loss of every run; the short step timing next to the training step."""
    heldout = data.heldout_loader(256)
    cpu = torch.device("cpu")
    print(
        f"\nfinal: held-out accuracy, last-epoch loss; short timing ({args.timing_steps} steps, "
        "CPU ms) on fresh and on trained weights vs the last epoch's training step"
    )
    print(
        f"{'optimizer':9} {'ftz':3} {'accuracy':>9} {'loss':>9} {'train ms':>9} "
        f"{'fresh ms':>9} {'trained ms':>10} {'fresh/train':>11}"
    )
    finals = []
    for run in runs:
        with flush_denormal(run.ftz):
            accuracy = evaluate_accuracy(run.model, heldout, device=cpu, precision="fp32")
            timings = {}
            for label, source in (("fresh", None), ("trained", run.model)):
                if source is None:
                    torch.manual_seed(args.seed)
                    source = build_model(spec)
                setup = StepSetup(
                    batch_size=args.batch_size,
                    image_size=args.image_size,
                    num_classes=data.num_classes,
                    device=cpu,
                    optimizer=run.name,
                    steps=args.timing_steps,
                    warmup=3,
                    clock="cpu",
                )
                timings[label] = time_train_step(source, setup, seed=args.seed).median_ms
        train_ms = sum(run.seconds.values()) * 1000 / run.steps
        row = {
            "optimizer": run.name,
            "ftz": run.ftz,
            "accuracy": accuracy,
            "loss": run.loss_sum / run.steps,
            "train_step_ms": train_ms,
            "timed_fresh_ms": timings["fresh"],
            "timed_trained_ms": timings["trained"],
        }
        finals.append(row)
        print(
            f"{run.name:9} {'on' if run.ftz else 'off':3} {accuracy:9.4f} {row['loss']:9.6f} "
            f"{train_ms:9.1f} {timings['fresh']:9.1f} {timings['trained']:10.1f} "
            f"{timings['fresh'] / train_ms:11.3f}",
            flush=True,
        )
    for name in dict.fromkeys(r["optimizer"] for r in finals):
        off, on = (r for r in finals if r["optimizer"] == name)
        same = off["accuracy"] == on["accuracy"] and off["loss"] == on["loss"]
        print(
            f"{name}: flush-to-zero {'changes nothing' if same else 'CHANGES'} in accuracy "
            f"and loss ({off['accuracy']:.4f}/{off['loss']:.6f} off, "
            f"{on['accuracy']:.4f}/{on['loss']:.6f} on)"
        )
    return finals


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="efficientnetv2-b0")
    parser.add_argument("--dataset", default="mnist5k")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--optimizers", default=",".join(OPTIMIZERS), help="comma-separated")
    parser.add_argument("--max-train-images", type=int, help="cap the search split")
    parser.add_argument("--timing-steps", type=int, default=10, help="K of the short timing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    # One thread: process CPU time is then the step's cost whatever else runs on the machine,
    # and set_flush_denormal (per thread) covers all of the step's arithmetic.
    torch.set_num_threads(1)
    data = load_dataset(
        args.dataset, args.image_size, seed=args.seed, max_train_images=args.max_train_images
    )
    spec = load_arch(args.arch).replace(num_classes=data.num_classes)
    optimizers = args.optimizers.split(",")
    runs = [Run(spec, data, name, ftz, args) for name in optimizers for ftz in (False, True)]
    print(
        f"{spec.label} on {data.describe()}, batch {args.batch_size}, {args.epochs} epoch(s), "
        f"1 torch thread, process CPU time; {len(runs)} runs interleaved step by step",
        flush=True,
    )
    penalty = subnormal_penalty()
    print(
        "this CPU's price of subnormals (CPU time without / with flush-to-zero): "
        + ", ".join(f"{name} x{ratio:.2f}" for name, ratio in penalty.items()),
        flush=True,
    )
    rows = train_interleaved(runs, args.epochs)
    finals = final_figures(runs, data, spec, args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"subnormal_penalty": penalty, "epochs": rows, "final": finals}, indent=1)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
