"""The ``nas`` command: one entry point, one sub-command per module of this package.

Each command module defines ``register(subparsers)``, ``run(args)`` (heavy imports inside, so
``nas --help`` is instant) and ``EXAMPLE``, its cheapest valid command line; :mod:`nas.cli.args`
holds what several commands share, :mod:`nas.cli.paths` the type of every argument that names a
file or a folder. Bad input raises :class:`~searchspace.errors.EffnasError` and becomes one line
on stderr with exit status 2. The conventions: docs/development.md, "Commands, arguments and
imports". This package parses arguments and prints; it must not compute anything itself.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any, NoReturn

from searchspace.errors import EffnasError

#: Sub-command modules, in the order ``nas --help`` lists them.
COMMAND_MODULES = [
    "nas.cli.show",
    "nas.cli.evaluate",
    "nas.cli.search",
    "nas.cli.fidelity",
    "nas.cli.scale",
    "nas.cli.train",
    "nas.cli.weights",
    "nas.cli.export",
    "nas.cli.front",
    "nas.cli.report",
    "nas.cli.dashboard",
]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="nas",
        description="effnas: training-aware neural architecture search for convnets.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def _terminate_as_interrupt(signum: int, frame: Any) -> None:
    """SIGTERM (a scheduler, ``kill``, a container stopping) stops a command as Ctrl-C does:
    whatever handles SIGINT now (Ray Tune's graceful stop, or Python's KeyboardInterrupt)."""
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
    else:
        raise KeyboardInterrupt


class _Parser(argparse.ArgumentParser):
    """argparse with bad arguments as one line (``nas CMD: error: ...``), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


def leaf_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Any:
    """The sub-command's own parser that parsed ``args`` (``nas weights import``'s, say)."""
    while parser._subparsers is not None:
        chooser = next(
            a
            for a in parser._subparsers._group_actions
            if isinstance(a, argparse._SubParsersAction)
        )
        parser = chooser.choices[getattr(args, chooser.dest)]
    return parser


def _naming_the_flag(
    message: str, parser: argparse.ArgumentParser, args: argparse.Namespace
) -> str:
    """``message``, led by ``--flag:`` when it is about the path a flag gave (a reader names the
    file it could not read, not the flag the user wrote it after)."""
    from nas.cli.paths import PathArgument

    for action in parser._actions:
        value = getattr(args, action.dest, None)
        if not action.option_strings or not isinstance(action.type, PathArgument):
            continue
        path = action.type.path_of(value) if isinstance(value, str) else None
        if path and path in message and not any(f in message for f in action.option_strings):
            return f"{action.option_strings[0]}: {message}"
    return message


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit:  # --help, or a bad argument (one line, status 2): a status too
        return exit.code if isinstance(exit.code, int) else int(exit.code is not None)
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt) if on_main_thread else None
    try:
        return int(args.func(args) or 0)
    except EffnasError as error:
        message = " ".join(str(error).split())  # one line, whatever the message held
        message = _naming_the_flag(message, leaf_parser(parser, args), args)
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
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
