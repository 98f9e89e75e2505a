"""The ``nas`` command: one entry point, one sub-command per module of this package.

Each command module defines ``register(subparsers)`` and ``run(args)``; heavy imports (torch,
ray) happen inside ``run``, so ``nas --help`` is instant. :mod:`nas.cli.args` holds what several
commands share (flag defaults read from the config dataclasses, the run argument). Bad input
raises :class:`~searchspace.errors.EffnasError` and becomes one line on stderr with exit status
2, never a traceback.

This package parses arguments and prints; it must not compute anything itself.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from searchspace.errors import EffnasError

#: Sub-command modules, in the order ``nas --help`` lists them.
COMMAND_MODULES = [
    "nas.cli.show",
    "nas.cli.evaluate",
    "nas.cli.search",
    "nas.cli.scale",
    "nas.cli.train",
    "nas.cli.weights",
    "nas.cli.export",
    "nas.cli.front",
    "nas.cli.report",
    "nas.cli.dashboard",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nas",
        description="effnas: training-aware neural architecture search for convnets.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except EffnasError as error:
        message = " ".join(str(error).split())  # one line, whatever the message held
        print(f"nas {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"nas {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `nas front ... | head` closed the pipe: not an error. Point stdout at devnull so that
        # the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
