"""``nas weights import``: a torchvision EfficientNetV2 state dict -> an effnas weights file."""

from __future__ import annotations

import argparse

from nas.cli.paths import SPEC, input_file, output_file

#: The cheapest valid command line, by argument (tests/nas/cli/test_paths.py reaches every path
#: argument from it; {config}: a search config, {torch}: a torch file, {run}, {out}: folders).
EXAMPLE = {"source": "torchvision", "file": "{torch}", "arch": "b0", "out": "{out}/weights.pt"}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "weights",
        help="import pretrained weights into effnas models",
        description="Import pretrained weights into effnas models.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    importer = actions.add_parser(
        "import",
        help="convert a torchvision EfficientNetV2 state dict into an effnas weights file",
        description="Load a torchvision EfficientNetV2-S/M/L state dict (for instance "
        "torchvision's published efficientnet_v2_s-*.pth) into the matching effnas model, "
        "checking every tensor's name and shape, and write an effnas weights file that holds "
        "the spec and the weights (read it with searchspace.load_weights).",
    )
    importer.add_argument("source", choices=["torchvision"], help="where the weights come from")
    importer.add_argument(
        "file", type=input_file("torch"), help="the state-dict file (read with weights_only=True)"
    )
    importer.add_argument(
        "--arch",
        type=SPEC,
        required=True,
        help="the matching effnas architecture: catalog name (efficientnetv2-s/-m/-l), YAML "
        "file or spec string",
    )
    importer.add_argument(
        "--out", type=output_file("torch"), required=True, help="the effnas weights file to write"
    )
    importer.add_argument(
        "--num-classes",
        type=int,
        help="classifier width of the new model; if it differs from the file's, the "
        "classifier is left freshly initialized for fine-tuning",
    )
    importer.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from searchspace import (
        build_model,
        load_arch,
        load_torchvision_weights,
        save_weights,
    )

    spec = load_arch(args.arch)
    if args.num_classes is not None:
        spec = spec.replace(num_classes=args.num_classes)
    model = build_model(spec)
    # Only an explicit --num-classes lets the classifier go unloaded: without it, a file with
    # another number of classes is a mismatch worth an error, not a silent fresh classifier.
    done = load_torchvision_weights(model, args.file, strict_classifier=args.num_classes is None)
    path = save_weights(model, args.out, source=f"torchvision:{args.file}")
    print(
        f"imported {done.loaded} tensors ({done.parameters:,} parameters) from {args.file} "
        f"into {spec.label}"
    )
    if done.skipped:
        shown = ", ".join(done.skipped[:3]) + (", ..." if len(done.skipped) > 3 else "")
        print(f"left at their initialization: {len(done.skipped)} tensors ({shown})")
    print(f"wrote {path}")
    return 0
