"""Budget scaling to a step-time target on this machine: does the chosen net hit it within 10%?

1. Time the base's training step (``nas.evaluate.timing.time_train_step``, the step training runs).
2. Ask :func:`scaling.scale_to_budget` for the point on the compound path whose step time is
   ``--factor`` times the base's (the search measures each candidate with ``--steps`` steps).
3. Measure the chosen spec again, independently: a freshly built net, another seed, more steps
   (``--check-steps``), after the search has finished. Report it against the target.

The base's step time is re-measured in the same independent pass, so the ratio chosen/base is
from one run, as bench/ figures are. On a CPU that other jobs share, the default is one torch
thread and the process's CPU time (``--clock cpu``): the wall clock would also count the time the
process waits for a core, and the target would move with the neighbours' load.

    python bench/scale_step_time.py                      # B0 at 64/80 px, target 3x its step
    python bench/scale_step_time.py --device cuda --train-size 192 --batch-size 64 --factor 4
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas.evaluate.timing import StepSetup, time_train_step
from scaling import scale_to_budget, spec_parameters
from searchspace import ArchSpec, build_model, load_arch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="efficientnetv2-b0", help="base spec (name or file)")
    parser.add_argument("--train-size", type=int, default=64, help="base's training image size")
    parser.add_argument("--factor", type=float, default=3.0, help="target = factor x base step")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per search candidate")
    parser.add_argument("--check-steps", type=int, default=30, help="timed steps of the check")
    parser.add_argument("--tolerance", type=float, default=0.05, help="the search's tolerance")
    parser.add_argument(
        "--confirm", type=int, default=2, help="re-measurements of the finalists (default 2)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument(
        "--clock", choices=["wall", "cpu"], default="cpu", help="CPU clock (default: cpu time)"
    )
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    base = load_arch(args.base)
    # A base searched at a reduced size (as the search trains candidates), eval 5/4 of it.
    base = base.replace(
        train_resolution=args.train_size,
        eval_resolution=args.train_size * 5 // 4,
        num_classes=args.num_classes,
    )

    def step_ms(spec: ArchSpec, steps: int, seed: int) -> float:
        torch.manual_seed(seed)
        timing = time_train_step(
            build_model(spec),
            StepSetup(
                batch_size=args.batch_size,
                image_size=spec.train_resolution,
                num_classes=spec.num_classes,
                device=args.device,
                steps=steps,
                warmup=3,
                clock=args.clock,
            ),
            seed=seed,
        )
        print(
            f"  timed {spec.to_string()[:60]}... {spec.train_resolution}px: "
            f"{timing.median_ms:.1f} ms (IQR {timing.spread_ms:.1f})",
            file=sys.stderr,
            flush=True,
        )
        return timing.median_ms

    base_ms = step_ms(base, args.steps, seed=0)
    target = args.factor * base_ms
    started = time.perf_counter()
    result = scale_to_budget(
        base,
        target,
        lambda spec: step_ms(spec, args.steps, seed=0),
        metric="step_ms",
        tolerance=args.tolerance,
        confirm=args.confirm,
    )
    search_s = time.perf_counter() - started

    # The independent check: fresh nets, another seed, more steps, base and result back to back.
    check_base_ms = step_ms(base, args.check_steps, seed=1)
    check_ms = step_ms(result.spec, args.check_steps, seed=1)
    miss = (check_ms - target) / target
    lineage = result.spec.lineage
    print(
        f"device            {args.device} (torch threads {torch.get_num_threads()}, "
        f"{args.clock} clock on a CPU)"
    )
    print(f"base              {base.label} {base.train_resolution}px, batch {args.batch_size}")
    print(f"base step         {base_ms:.1f} ms (search pass), {check_base_ms:.1f} ms (check pass)")
    print(f"target            {target:.1f} ms = {args.factor:g} x base")
    print(
        f"chosen            width {lineage.width:.3f}, depth {lineage.depth:.3f}, "
        f"{result.spec.train_resolution}/{result.spec.eval_resolution}px, "
        f"phi {lineage.phi if lineage.phi is None else round(lineage.phi, 4)}, "
        f"{spec_parameters(result.spec) / 1e6:.2f}M params"
    )
    print(
        f"search            {result.value:.1f} ms ({result.relative_error:+.1%}), "
        f"{result.evaluations} specs timed ({result.measurements} timings) in {search_s:.0f} s"
    )
    print(f"independent check {check_ms:.1f} ms: {miss:+.1%} from the target")
    print(f"chosen / base     {check_ms / check_base_ms:.2f}x (asked {args.factor:g}x)")
    ok = abs(miss) <= 0.10
    print("within 10%        " + ("yes" if ok else "NO"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
