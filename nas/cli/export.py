"""``nas export``: a spec or an effnas weights file -> plain PyTorch, torch.export, ONNX or
TorchScript (legacy)."""

from __future__ import annotations

import argparse
import json
import sys

from nas.cli.paths import SPEC_OR_WEIGHTS, output_file

#: The cheapest valid command line, by argument (tests/nas/cli/test_paths.py reaches every path
#: argument from it; {config}: a search config, {torch}: a torch file, {run}, {out}: folders).
EXAMPLE = {"source": "b0", "format": "pytorch", "out": "{out}/net.py"}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write a net as plain PyTorch, torch.export, ONNX or TorchScript, for use without "
        "effnas",
        description="Write a net for use outside effnas. pytorch: one Python file that defines "
        "the network with torch and torchvision only (the stage table as data at the top) and a "
        "state dict beside it (.pth) with effnas's own keys; export: a torch.export program "
        "(.pt2, dynamic batch size) for torch.export.load; onnx: an ONNX graph (torch's dynamo "
        "exporter, dynamic batch size), checked with the ONNX checker (needs pip install "
        "'effnas[export]'); torchscript: a scripted module for torch.jit.load (legacy: torch "
        "deprecates TorchScript). Every export is loaded back and compared with effnas's model "
        "before it is put in place. Exit status: 0 written, 2 bad input.",
    )
    parser.add_argument(
        "source",
        type=SPEC_OR_WEIGHTS,
        metavar="ARCH|WEIGHTS",
        help="an effnas weights file (from nas train or nas weights import), or a catalog name, "
        "YAML file or spec string (exported with fresh weights, seeded)",
    )
    parser.add_argument(
        "--format",
        type=str,
        required=True,
        metavar="FORMAT",
        help="pytorch, export (torch.export, .pt2), onnx, or torchscript (legacy)",
    )
    parser.add_argument(
        "--out",
        type=output_file("any"),
        required=True,
        metavar="FILE",
        help="the file to write, in an existing directory (pytorch: NAME.py, and NAME.pth beside "
        "it; export: NAME.pt2)",
    )
    parser.add_argument(
        "--num-classes",
        type=int,
        metavar="N",
        help="classifier outputs (default: the spec's or the file's; another number than the "
        "file's gives a freshly initialized classifier)",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        metavar="N",
        help="square input size (default: the spec's eval size); fixes an ONNX graph's or an "
        "export program's H and W",
    )
    parser.add_argument(
        "--eval",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="export in eval mode: BatchNorm inference, dropout and stochastic depth off "
        "(default: on for torchscript, onnx and export, off for pytorch, whose load() chooses)",
    )
    parser.add_argument(
        "--dynamic-size",
        action="store_true",
        help="onnx and export: dynamic height and width as well",
    )
    parser.add_argument("--opset", type=int, metavar="N", help="onnx: the opset (default 18)")
    parser.add_argument(
        "--seed", type=int, default=0, metavar="N", help="seed for fresh weights (default 0)"
    )
    parser.add_argument("--json", action="store_true", help="print what was written as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nas.export.writer import export_model

    result = export_model(
        args.source,
        args.format,
        args.out,
        num_classes=args.num_classes,
        image_size=args.image_size,
        eval_mode=args.eval,
        dynamic_size=args.dynamic_size,
        opset=args.opset,
        seed=args.seed,
    )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print("\n".join(result.lines()))
    if result.warning:
        print(f"nas export: warning: {result.warning}", file=sys.stderr)
    return 0
