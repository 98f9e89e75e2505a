"""Is effnas' EfficientNetV2-S as fast to train as torchvision's? A training-step comparison.

Both nets are the same network from the same ``torchvision.ops`` pieces, so effnas' S should
train no slower than torchvision's. Each step is the step training runs
(``nas.train.loop.train_step``: zero grads, forward, label-smoothed cross-entropy, backward, the
paper's RMSProp step): by default in fp32 on the CPU, at batch 8 and 128 px; with ``--device
cuda`` on the GPU in bf16 autocast (``--precision``; what training uses there), each step timed
with CUDA events. Both the default (contiguous) memory format and channels_last are measured.
effnas' S gets torchvision's weights (``nas weights import``'s code path), so both compute the
same numbers: a difference in speed cannot come from different values (denormals, say).

The four configurations are measured in the same run, interleaved: after a warm-up, every round
times one step of each, in an order that rotates from round to round, so that a change in the
machine's load hits all of them alike. Reported: the median step of each (and its interquartile
range), the ratio of medians ours/torchvision, the median of the per-round ratios (each from
two steps taken moments apart: the figure least disturbed by a load that drifts) and the ratio of
the fastest steps (the cost of the step itself when other processes compete for the CPUs in
bursts, which on a shared machine can stretch single steps tenfold).

    python bench/model_speed.py                      # batch 8, 128 px, 2 threads, 30 rounds
    python bench/model_speed.py --rounds 30 --json runs/bench/model_speed.json
    python bench/model_speed.py --device cuda --batch-size 64 --image-size 224   # bf16 on a GPU
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas.train.device import device_name, resolve_device, resolve_precision
from nas.train.loop import train_step
from nas.train.optim import build_optimizer, make_loss
from nas.train.recipe import Recipe
from searchspace import build_model, count_parameters, load_arch, load_torchvision_weights

FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
IMPLEMENTATIONS = ("effnas", "torchvision")


def _quartiles(samples: list[float]) -> tuple[float, float, float]:
    q1, q2, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return q1, q2, q3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument(
        "--precision", default="auto", help="auto (bf16 on a GPU, fp32 on a CPU), fp32 or bf16"
    )
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds first")
    parser.add_argument("--rounds", type=int, default=30, help="timed rounds (one step each)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    reference = torchvision.models.efficientnet_v2_s()  # random weights, nothing downloaded
    ours = build_model(load_arch("efficientnetv2-s"))
    load_torchvision_weights(ours, reference.state_dict())
    assert count_parameters(ours) == count_parameters(reference)
    with torch.no_grad():
        probe = torch.randn(2, 3, 64, 64)
        same = (ours.eval()(probe) - reference.eval()(probe)).abs().max().item()

    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    config = Recipe(precision=precision)
    loss_fn = make_loss(config)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as training does: fixed shapes
    generator = torch.Generator().manual_seed(args.seed)
    images = torch.randn(args.batch_size, 3, args.image_size, args.image_size, generator=generator)
    labels = torch.randint(0, 1000, (args.batch_size,), generator=generator).to(device)

    runs = {}
    for format_name, memory_format in FORMATS.items():
        for name, base in (("effnas", ours), ("torchvision", reference)):
            model = copy.deepcopy(base).to(device, memory_format=memory_format).train()
            runs[(name, format_name)] = {
                "model": model,
                "optimizer": build_optimizer(model, config),
                "images": images.to(device).contiguous(memory_format=memory_format),
                "samples": [],
            }

    def step(run: dict) -> float:
        arguments = (run["model"], run["images"], labels, run["optimizer"], loss_fn)
        if device.type == "cuda":
            # The GPU runs the step asynchronously: CUDA events around it, as step timing does.
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            train_step(*arguments, device=device, precision=precision)
            end.record()
            end.synchronize()
            return start.elapsed_time(end)
        start_time = time.perf_counter()
        train_step(*arguments, device=device, precision=precision)
        # CPU ops are synchronous: the step has finished when train_step returns.
        return (time.perf_counter() - start_time) * 1000.0

    keys = list(runs)
    load_before = os.getloadavg()
    for _ in range(args.warmup):
        for key in keys:
            step(runs[key])
    for round_index in range(args.rounds):
        shift = round_index % len(keys)
        for key in keys[shift:] + keys[:shift]:
            runs[key]["samples"].append(step(runs[key]))
    load_after = os.getloadavg()

    where = "the CPU" if device.type == "cpu" else device_name(device)
    threads = f", {args.threads} threads" if device.type == "cpu" else ""
    print(
        f"EfficientNetV2-S training step ({precision}, RMSProp) on {where}: batch "
        f"{args.batch_size}, {args.image_size} px{threads}, {args.warmup} warm-up + {args.rounds} "
        f"timed rounds; torch {torch.__version__}, torchvision {torchvision.__version__}"
    )
    print(f"parameters: {count_parameters(ours):,} each; eval outputs max |diff| {same:.1e}")
    print(
        f"load average (1 min) before/after: {load_before[0]:.2f}/{load_after[0]:.2f} "
        f"on {os.cpu_count()} CPUs"
    )
    header = (
        f"{'memory format':<15}{'effnas ms (IQR)':>20}{'torchvision ms (IQR)':>24}"
        f"{'ratio of medians':>18}{'median paired ratio':>21}{'ratio of minima':>17}"
    )
    print(header)
    print("-" * len(header))
    figures = {}
    for format_name in FORMATS:
        mine = runs[("effnas", format_name)]["samples"]
        theirs = runs[("torchvision", format_name)]["samples"]
        q1, median, q3 = _quartiles(mine)
        t1, t_median, t3 = _quartiles(theirs)
        paired = statistics.median(a / b for a, b in zip(mine, theirs, strict=True))
        figures[format_name] = {
            "effnas_ms": median,
            "effnas_iqr_ms": q3 - q1,
            "torchvision_ms": t_median,
            "torchvision_iqr_ms": t3 - t1,
            "ratio_of_medians": median / t_median,
            "median_paired_ratio": paired,
            "effnas_min_ms": min(mine),
            "torchvision_min_ms": min(theirs),
            "ratio_of_minima": min(mine) / min(theirs),
            "effnas_samples_ms": mine,
            "torchvision_samples_ms": theirs,
        }
        print(
            f"{format_name:<15}{f'{median:.1f} ({q3 - q1:.1f})':>20}"
            f"{f'{t_median:.1f} ({t3 - t1:.1f})':>24}{median / t_median:>18.3f}{paired:>21.3f}"
            f"{min(mine) / min(theirs):>17.3f}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "device": device_name(device),
            "precision": precision,
            "batch_size": args.batch_size,
            "image_size": args.image_size,
            "threads": args.threads,
            "rounds": args.rounds,
            "load_before": load_before,
            "load_after": load_after,
            "formats": figures,
        }
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
