"""``nas show``: a spec's stage table, parameters and FLOPs."""

from __future__ import annotations

import argparse
import json
from typing import Any

from nas.cli.paths import SPEC
from searchspace.errors import SpecError

#: The cheapest valid command line, by argument (tests/nas/cli/test_paths.py reaches every path
#: argument from it; {config}: a search config, {torch}: a torch file, {run}, {out}: folders).
EXAMPLE = {"arch": "b0"}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "show",
        help="print a spec's stages, parameters and FLOPs",
        description="Print an architecture's stage table, parameter count and fvcore FLOPs "
        "(one multiply-add = one FLOP).",
    )
    parser.add_argument(
        "arch", nargs="?", type=SPEC, help="catalog name (see --list), YAML file or spec string"
    )
    parser.add_argument("--list", action="store_true", help="list the catalog and exit")
    parser.add_argument("--resolution", type=int, help="image size for FLOPs (default: eval size)")
    parser.add_argument("--num-classes", type=int, help="override the classifier width")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def describe(spec: Any, resolution: int | None = None) -> dict[str, Any]:
    """Everything ``nas show`` reports about a spec, as plain data."""
    from searchspace.builder import block_layout
    from searchspace.profile import spec_flops, spec_parameters

    resolution = spec.eval_resolution if resolution is None else resolution
    if resolution < spec.total_stride:
        raise SpecError(
            f"--resolution must be at least the net's total stride {spec.total_stride}, "
            f"got {resolution}"
        )
    # Each stage's input width is its first block's, as the builder threads it.
    first = {layout.stage: layout for layout in reversed(block_layout(spec))}
    stages = [
        {"stage": index + 1, "in_channels": first[index].in_channels, **stage.to_dict()}
        for index, stage in enumerate(spec.stages)
    ]
    return {
        "name": spec.label,
        "spec": spec.to_string(),
        "hash": spec.hash,
        "params": spec_parameters(spec),
        "flops": spec_flops(spec, resolution),
        "resolution": resolution,
        "train_resolution": spec.train_resolution,
        "eval_resolution": spec.eval_resolution,
        "num_classes": spec.num_classes,
        "stem_channels": spec.stem_channels,
        "head_channels": spec.head_channels,
        "stages": stages,
    }


def format_stages(info: dict[str, Any]) -> str:
    header = ("stage", "block", "kernel", "stride", "expand", "SE", "channels", "repeats")
    rows = [header]
    rows.append(("stem", "conv", "3", "2", "-", "-", f"3 -> {info['stem_channels']}", "1"))
    for stage in info["stages"]:
        rows.append(
            (
                str(stage["stage"]),
                "Fused-MBConv" if stage["block"] == "fused" else "MBConv",
                str(stage["kernel"]),
                str(stage["stride"]),
                f"{stage['expand_ratio']:g}",
                f"{stage['se_ratio']:g}" if stage["se_ratio"] else "-",
                f"{stage['in_channels']} -> {stage['out_channels']}",
                str(stage["repeats"]),
            )
        )
    last = info["stages"][-1]["out_channels"]
    rows.append(("head", "conv", "1", "1", "-", "-", f"{last} -> {info['head_channels']}", "1"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [f"{info['name']}  ({info['spec']})"]
    for index, row in enumerate(rows):
        lines.append(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    lines.append(f"classes     {info['num_classes']}")
    lines.append(f"parameters  {info['params']:,} ({info['params'] / 1e6:.2f}M)")
    lines.append(
        f"FLOPs       {info['flops']:,} ({info['flops'] / 1e9:.2f}B) at {info['resolution']} px"
    )
    lines.append(f"train/eval  {info['train_resolution']}/{info['eval_resolution']} px")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from searchspace import list_catalog, load_arch

    if args.list:
        for name in list_catalog():
            spec = load_arch(name)
            print(f"{name:<20} {spec.to_string()}")
        return 0
    if not args.arch:
        raise SpecError("give an architecture (catalog name, YAML file or spec string) or --list")
    spec = load_arch(args.arch)
    if args.num_classes is not None:
        spec = spec.replace(num_classes=args.num_classes)
    info = describe(spec, args.resolution)
    print(json.dumps(info, indent=2) if args.json else format_stages(info))
    return 0
