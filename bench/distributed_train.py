"""What does ``nas train --workers N`` add or save against one process? Wall time, one machine.

Runs the same small training (bench/progressive.py's 225k-parameter net on the embedded MNIST
digits, ``mnist5k``, fixed size, ``--epochs`` epochs at the global batch ``--batch-size``)
through the ``nas train`` command line, each in a fresh process and run directory:

- ``1 process, T threads``: plain ``nas train``, no Ray, torch on T threads (each of
  ``--threads``, default 1 and 2);
- ``1 worker, T CPUs``: ``--workers 1 --cpus-per-worker T``: the same computation on one Ray
  Train worker (with a local Ray started for it);
- ``N workers, 1 CPU each``: ``--workers N``: data-parallel DDP over gloo, one torch thread each.

Reported per run: the command's wall time (start to exit: Ray's start and stop included), the
training time (the sum of the epochs' training wall time from metrics.json: data loading, steps,
the gradient all-reduce; evaluation excluded), its share of the command, and the held-out
accuracy. The runs go in the order given, then (``--repeats 2``) reversed; the machine's load
average is printed before and after, since a shared machine moves these figures.

    python bench/distributed_train.py               # 2 epochs, batch 64: 1 process, 1 and 2 workers
    python bench/distributed_train.py --repeats 2 --json runs/bench/distributed_train.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from progressive import digits_net  # noqa: E402  (bench/progressive.py's net)


def run(
    name: str, extra: list[str], threads: int | None, args: argparse.Namespace, root: Path
) -> dict:
    """One ``nas train`` in a fresh process (``threads``: its torch threads, for one process);
    its figures."""
    root.mkdir(exist_ok=True)
    out = root / name.replace(" ", "-")
    argv = [
        sys.executable, "-m", "nas.cli", "train", str(root.parent / "net.yaml"), "--dataset",
        args.dataset, "--epochs", str(args.epochs), "--progressive", "off", "--batch-size",
        str(args.batch_size), "--device", "cpu", "--progress", "off", "--out", str(out), *extra,
    ]  # fmt: skip
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env = {**os.environ, "PYTHONPATH": path}
    env.pop("RAY_ADDRESS", None)
    if threads is not None:  # one process; a worker's threads are its --cpus-per-worker
        env["OMP_NUM_THREADS"] = str(threads)
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=root, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{name} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    record = json.loads((out / "metrics.json").read_text())
    train = sum(row["epoch_seconds"] for row in record["history"])
    return {
        "run": name,
        "wall_s": wall,
        "train_s": train,
        "epoch_s": [row["epoch_seconds"] for row in record["history"]],
        "accuracy": record["final"]["accuracy"],
        "workers": record.get("workers", 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist5k")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64, help="the global batch")
    parser.add_argument("--workers", type=int, default=2, help="N of the data-parallel run")
    parser.add_argument(
        "--threads",
        type=lambda text: [int(part) for part in text.split(",")],
        default=[1, 2],
        help="torch threads of the one-process runs and CPUs of the one-worker runs (1,2)",
    )
    parser.add_argument("--repeats", type=int, default=1, help="2: run again in reverse order")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    configurations: list[tuple[str, list[str], int | None]] = []
    for threads in args.threads:
        plural = "s" if threads > 1 else ""
        configurations.append((f"1 process, {threads} thread{plural}", [], threads))
    for threads in args.threads:
        plural = "s" if threads > 1 else ""
        flags = ["--workers", "1", "--cpus-per-worker", str(threads)]
        configurations.append((f"1 worker, {threads} CPU{plural}", flags, None))
    flags = ["--workers", str(args.workers)]
    configurations.append((f"{args.workers} workers, 1 CPU each", flags, None))
    load_before = os.getloadavg()
    results = []
    with tempfile.TemporaryDirectory(prefix="effnas-bench-ddp-") as directory:
        root = Path(directory)
        digits_net(args.image_size).save(root / "net.yaml")
        for repeat in range(args.repeats):
            order = configurations if repeat % 2 == 0 else configurations[::-1]
            for name, extra, threads in order:
                result = run(name, extra, threads, args, root / f"r{repeat}")
                results.append(result)
                print(
                    f"{name:<24} wall {result['wall_s']:6.1f} s, training {result['train_s']:6.1f}"
                    f" s ({result['train_s'] / result['wall_s']:.0%}), epochs "
                    f"{', '.join(f'{s:.1f}' for s in result['epoch_s'])} s, held-out accuracy "
                    f"{result['accuracy']:.2%}",
                    flush=True,
                )
    load_after = os.getloadavg()
    print(
        f"{args.dataset} at {args.image_size} px, {args.epochs} epochs, global batch "
        f"{args.batch_size}; load average (1 min) before/after {load_before[0]:.2f}/"
        f"{load_after[0]:.2f} on {os.cpu_count()} CPUs"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {**vars(args), "json": str(args.json), "results": results}
        payload |= {"load_before": load_before, "load_after": load_after}
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
