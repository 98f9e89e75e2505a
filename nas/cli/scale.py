"""``nas scale``: grow a base spec into S/M/L, by coefficients, by phi, or to a budget."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nas.cli.paths import SPEC, input_file, output_folder
from scaling.errors import ScalingError
from searchspace.checks import parse_amount

#: The cheapest valid command line, by argument (tests/nas/cli/test_paths.py reaches every path
#: argument from it; {config}: a search config, {torch}: a torch file, {run}, {out}: folders).
EXAMPLE = {"arch": "b0"}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "scale",
        help="grow a base spec into S/M/L or to a parameter, FLOP or step-time budget",
        description="Grow a base architecture by compound scaling (EfficientNet's rounding "
        "rules, EfficientNetV2's growth rules) and print a table of the results. Pick one of: "
        "--variants (named presets, the default: s,m,l), --width/--depth/--resolution, --phi, "
        "or one --target-*. FLOPs are fvcore's (one multiply-add = one FLOP) at the eval size.",
    )
    parser.add_argument("arch", type=SPEC, help="base: catalog name, YAML spec file or spec string")
    parser.add_argument(
        "--variants",
        type=str,
        help="comma-separated presets, e.g. s,m,l (default when nothing else)",
    )
    parser.add_argument(
        "--presets",
        type=input_file("yaml"),
        help="YAML file of presets (name -> plan fields) over the defaults",
    )
    coefficients = parser.add_argument_group("coefficients")
    coefficients.add_argument("--width", type=str, help="channel multiplier, e.g. 1.2")
    coefficients.add_argument("--depth", type=str, help="repeat multiplier, e.g. 1.4")
    coefficients.add_argument(
        "--resolution",
        type=str,
        help="eval image size in px (300), TRAIN/EVAL in px (240/300), or a factor (1.15x)",
    )
    coefficients.add_argument(
        "--phi", type=str, help="EfficientNet's compound coefficient, e.g. 1.5"
    )
    coefficients.add_argument(
        "--alpha", type=str, default="1.2", help="depth base of phi (default 1.2)"
    )
    coefficients.add_argument(
        "--beta", type=str, default="1.1", help="width base of phi (default 1.1)"
    )
    coefficients.add_argument(
        "--gamma", type=str, default="1.15", help="resolution base (default 1.15)"
    )
    budget = parser.add_argument_group("budget (along the phi path)")
    budget.add_argument("--target-params", type=str, help="parameters, e.g. 22e6 or 22M")
    budget.add_argument(
        "--target-flops", type=str, help="FLOPs at the eval size, e.g. 8.4e9 or 8.4G"
    )
    budget.add_argument(
        "--target-step-ms", type=str, help="training step time on this machine, in ms"
    )
    budget.add_argument(
        "--tolerance",
        type=str,
        default="0.05",
        help="largest relative miss of the target (default 0.05)",
    )
    timing = parser.add_argument_group("step time (--measure, --target-step-ms)")
    timing.add_argument("--measure", action="store_true", help="add each net's step time")
    timing.add_argument(
        "--batch-size", type=str, default="8", help="images per timed step (default 8)"
    )
    timing.add_argument(
        "--device", type=str, default="auto", help="auto (default), cpu, cuda, cuda:1"
    )
    timing.add_argument(
        "--precision",
        type=str,
        default="auto",
        help="auto (bf16 on a GPU, fp32 on a CPU), fp32 or bf16",
    )
    timing.add_argument(
        "--timing-steps", type=str, default="10", help="timed steps per net (default 10)"
    )
    timing.add_argument(
        "--timing-warmup", type=str, default="3", help="untimed warm-up steps (default 3)"
    )
    timing.add_argument(
        "--timing-clock",
        type=str,
        default="wall",
        help="on a CPU: wall (default) or cpu (process CPU time; for a shared machine, with one "
        "torch thread)",
    )
    parser.add_argument(
        "--out", type=output_folder(), help="directory to write one spec YAML per variant into"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


# ---------------------------------------------------------------------------------------------
# Flag parsing: numbers are read here, not by argparse, so a bad value is one line naming the
# flag (argparse would print a usage block) and suffixes like 22M are accepted.


def _number(flag: str, text: str, *, positive: bool = True) -> float:
    value = parse_amount(text)
    if value is None:
        raise ScalingError(f"{flag} must be a number (e.g. 1.2, 22e6, 22M), got {text!r}")
    if not math.isfinite(value) or (positive and value <= 0):
        raise ScalingError(f"{flag} must be greater than 0, got {text!r}")
    return value


def _whole(flag: str, text: str, minimum: int = 1) -> int:
    value = _number(flag, text, positive=False)
    if value != int(value) or value < minimum:
        raise ScalingError(f"{flag} must be a whole number of at least {minimum}, got {text!r}")
    return int(value)


def _resolution(text: str) -> dict[str, Any]:
    """--resolution: '300' (eval px), '240/300' (train/eval px) or '1.15x' (a factor)."""
    text = text.strip()
    if text.lower().endswith("x"):
        return {"resolution": _number("--resolution", text[:-1])}
    if "/" in text:
        train, _, evaluation = text.partition("/")
        return {
            "train_resolution": _whole("--resolution", train),
            "eval_resolution": _whole("--resolution", evaluation),
        }
    if not text.isdigit():
        raise ScalingError(
            f"--resolution must be an eval size in px (300), TRAIN/EVAL (240/300) or a factor "
            f"(1.15x), got {text!r}"
        )
    return {"eval_resolution": _whole("--resolution", text)}


def _short(value: float) -> str:
    """22000000 -> '22M', 8.4e9 -> '8.4G': for labels and file names."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:.3g}"


# ---------------------------------------------------------------------------------------------


def _timing(args: argparse.Namespace) -> dict[str, Any]:
    """The timing flags, read and checked (``--batch-size 8.0`` is 8; ``8.5`` is refused)."""
    if args.timing_clock not in ("wall", "cpu"):
        raise ScalingError(f"--timing-clock must be wall or cpu, got {args.timing_clock!r}")
    return {
        "batch_size": _whole("--batch-size", args.batch_size),
        "steps": _whole("--timing-steps", args.timing_steps),
        "warmup": _whole("--timing-warmup", args.timing_warmup, minimum=0),
        "device": args.device,
        "precision": args.precision,
        "clock": args.timing_clock,
    }


def _step_time_measure(timing: dict[str, Any]) -> Callable[[Any], float]:
    """spec -> median milliseconds of one training step on this machine, via ``nas.evaluate``."""
    from nas.evaluate.timing import StepSetup, time_train_step
    from searchspace.builder import build_model

    def measure(spec: Any) -> float:
        setup = StepSetup(image_size=spec.train_resolution, num_classes=spec.num_classes, **timing)
        return float(time_train_step(build_model(spec), setup).median_ms)

    return measure


def _mode(args: argparse.Namespace) -> str:
    chosen = []
    if args.variants:
        chosen.append("--variants")
    if args.width or args.depth or args.resolution:
        chosen.append("--width/--depth/--resolution")
    if args.phi:
        chosen.append("--phi")
    targets = [
        flag
        for flag, value in (
            ("--target-params", args.target_params),
            ("--target-flops", args.target_flops),
            ("--target-step-ms", args.target_step_ms),
        )
        if value
    ]
    chosen += targets
    if len(chosen) > 1:
        raise ScalingError(f"give one of --variants, coefficients, --phi or a target; got {chosen}")
    return chosen[0] if chosen else "--variants"


def _row(
    spec: Any, variant: str, measure_ms: Callable[[Any], float] | None, base: Any | None
) -> dict[str, Any]:
    from scaling import spec_flops, spec_parameters

    lineage = spec.lineage
    row: dict[str, Any] = {
        "variant": variant,
        "name": spec.label,
        "hash": spec.hash,
        "spec": spec.to_string(),
        "width": lineage.width if lineage and base is not None else 1.0,
        "depth": lineage.depth if lineage and base is not None else 1.0,
        "resolution": lineage.resolution if lineage and base is not None else 1.0,
        "phi": lineage.phi if lineage and base is not None else None,
        "late_depth": lineage.late_depth if lineage and base is not None else 1.0,
        "train_resolution": spec.train_resolution,
        "eval_resolution": spec.eval_resolution,
        "stem_channels": spec.stem_channels,
        "repeats": [stage.repeats for stage in spec.stages],
        "channels": [stage.out_channels for stage in spec.stages],
        "head_channels": spec.head_channels,
        "dropout": spec.dropout,
        "drop_path_rate": spec.drop_path_rate,
        "params": spec_parameters(spec),
        "flops": spec_flops(spec),
    }
    if measure_ms is not None:
        row["step_time_ms"] = measure_ms(spec)
    return row


def format_variants(rows: list[dict[str, Any]]) -> str:
    """The rows as an aligned text table (one line per net, the base first)."""
    timed = any("step_time_ms" in row for row in rows)
    header = ["variant", "width", "depth", "res", "train/eval", "repeats", "channels"]
    header += ["params", "FLOPs@eval"] + (["step ms"] if timed else [])
    lines = [header]
    for row in rows:
        cells = [
            row["variant"],
            f"{row['width']:.3g}",
            f"{row['depth']:.3g}",
            f"{row['resolution']:.3g}",
            f"{row['train_resolution']}/{row['eval_resolution']}",
            ",".join(str(r) for r in row["repeats"]),
            f"{row['stem_channels']}|{','.join(str(c) for c in row['channels'])}|"
            f"{row['head_channels']}",
            f"{row['params'] / 1e6:.2f}M",
            f"{row['flops'] / 1e9:.2f}G",
        ]
        if timed:
            cells.append(f"{row['step_time_ms']:.1f}" if "step_time_ms" in row else "-")
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = []
    for index, line in enumerate(lines):
        text.append("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
        if index == 0:
            text.append("  ".join("-" * w for w in widths))
    text.append("channels: stem|stages|head; res: eval size over the base's")
    return "\n".join(text)


def _plans(args: argparse.Namespace, mode: str, presets: Any, rule: Any) -> list[Any]:
    """The scaling plans --variants, the coefficients or --phi ask for (none for a budget)."""
    from scaling import ScalingPlan, resolve_variants

    if mode == "--variants":
        return resolve_variants(args.variants or "s,m,l", presets)
    if mode == "--phi":
        return [rule.plan(_number("--phi", args.phi, positive=False))]
    if mode != "--width/--depth/--resolution":
        return []
    fields: dict[str, Any] = {}
    if args.width:
        fields["width"] = _number("--width", args.width)
    if args.depth:
        fields["depth"] = _number("--depth", args.depth)
    if args.resolution:
        fields.update(_resolution(args.resolution))
    label = "-".join(
        f"{key[0]}{getattr(args, key)}".replace("/", "_")
        for key in ("width", "depth", "resolution")
        if getattr(args, key)
    )
    return [ScalingPlan(**fields, variant=label)]


def _budget(
    base: Any, mode: str, target: float, args: argparse.Namespace, rule: Any, measures: dict
) -> tuple[Any, dict[str, Any]]:
    """The spec a --target-* budget picks, and what the search for it found."""
    from scaling import scale_to_budget

    metric = {"--target-params": "params", "--target-flops": "flops"}.get(mode, "step_ms")
    result = scale_to_budget(
        base,
        target,
        measures[metric],
        metric=metric,
        label=f"{metric.removesuffix('_ms')}{_short(target)}"
        + ("ms" if metric == "step_ms" else ""),
        rule=rule,
        tolerance=_tolerance(args),
        # Step times are noisy: re-measure the finalists twice before choosing.
        confirm=2 if metric == "step_ms" else 0,
    )
    return result.spec, {
        "metric": metric,
        "target": target,
        "value": result.value,
        "relative_error": result.relative_error,
        "on_path": result.on_path,
        "evaluations": result.evaluations,
        "measurements": result.measurements,
    }


def _tolerance(args: argparse.Namespace) -> float:
    tolerance = _number("--tolerance", args.tolerance)
    if tolerance >= 1:
        raise ScalingError(f"--tolerance must be below 1, got {args.tolerance!r}")
    return tolerance


def _print(rows: list[dict[str, Any]], base: Any, timing: Any, budget: Any) -> None:
    print(f"{base.label}  ({base.to_string()})")
    print(format_variants(rows))
    if timing is not None:
        print(
            f"step ms: median of {timing['steps']} training steps at the training size, batch "
            f"{timing['batch_size']}, device {timing['device']}, precision "
            f"{timing['precision']}, {timing['clock']} clock"
        )
    if budget is not None:
        print(
            f"target {budget['metric']} {budget['target']:g}: {budget['value']:g} "
            f"({budget['relative_error']:+.1%}), "
            f"{'on the compound path' if budget['on_path'] else 'width refined off the path'}, "
            f"{budget['evaluations']} specs measured"
        )
    for row in rows[1:]:
        if "path" in row:
            print(f"wrote {row['path']}")


def run(args: argparse.Namespace) -> int:
    from scaling import CompoundRule, load_presets, scale_spec, spec_flops, spec_parameters
    from searchspace import load_arch

    # Read every flag before the (slow) base load and measurements.
    mode = _mode(args)
    _tolerance(args)
    rule = CompoundRule(
        alpha=_number("--alpha", args.alpha),
        beta=_number("--beta", args.beta),
        gamma=_number("--gamma", args.gamma),
    )
    presets = load_presets(args.presets)
    timing = _timing(args) if (args.measure or args.target_step_ms) else None
    measure_ms = _step_time_measure(timing) if timing is not None else None
    plans = _plans(args, mode, presets, rule)
    target = _number(mode, getattr(args, mode[2:].replace("-", "_"))) if not plans else 0.0
    out = Path(args.out) if args.out else None
    if out is not None and out.exists() and not out.is_dir():
        raise ScalingError(f"--out {str(out)!r} exists and is not a directory")
    base = load_arch(args.arch)

    budget: dict[str, Any] | None = None
    if plans:
        specs = [scale_spec(base, plan) for plan in plans]
    else:
        measures = {"params": spec_parameters, "flops": spec_flops, "step_ms": measure_ms}
        spec, budget = _budget(base, mode, target, args, rule, measures)
        specs = [spec]
    rows = [_row(base, "base", measure_ms, None)]
    rows += [_row(spec, spec.lineage.variant, measure_ms, base) for spec in specs]
    if budget is not None:
        rows[-1]["budget"] = budget
    if out is not None:
        for spec, row in zip(specs, rows[1:], strict=True):
            row["path"] = str(spec.save(out / f"{spec.name}.yaml"))
    if args.json:
        print(json.dumps({"base": rows[0], "variants": rows[1:], "timing": timing}, indent=2))
    else:
        _print(rows, base, timing, budget)
    return 0
