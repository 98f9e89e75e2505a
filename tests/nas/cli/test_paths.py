"""Every path a command takes, in every shape a user gets it wrong.

The cases are derived from the commands themselves: the harness walks ``nas``'s real parser,
finds every argument whose ``type`` is a :class:`~nas.cli.paths.PathArgument` (input or output,
file or folder, a file's format), and generates for each the cases a user meets: missing, a file
where a folder belongs and the reverse, a path inside a file, an empty file, a file of the wrong
kind (random bytes, text, YAML, a torch file, a truncated copy of a valid one), an unreadable
file and an unwritable folder (as ``nobody``, in a subprocess). A new command's path arguments
are covered without touching this file; an argument that takes a value and declares no ``type``
fails :func:`test_every_argument_is_classified`.

Each case must end with one line on stderr naming the argument (an option's flag) and the path,
no traceback, exit status 2, the directory tree exactly as it was (names, sizes, modification
times, contents), and Ray never started. Commands run in-process through ``main(argv)``; only the
cases that need another user start a subprocess.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pytest
import yaml

from nas.cli import build_parser, main
from nas.cli.paths import PathArgument
from tests import REPO

#: A file's suffix by format, so that a value naming a spec or weights file looks like one.
SUFFIX = {"yaml": ".yaml", "torch": ".pt", "sqlite": ".db", "csv": ".csv", "html": ".html"}

#: The format of each valid file the harness makes (``valid`` fixture), by name.
TEXT = "root:x:0:0:root:/root:/bin/bash\nthis is plain text, not what the command reads\n"


def _leaves(
    parser: argparse.ArgumentParser, words: tuple[str, ...] = ()
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every sub-command's own parser: ("search", parser), ("weights import", parser), ..."""
    choosers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not choosers:
        yield " ".join(words), parser
        return
    for name, child in choosers[0].choices.items():
        yield from _leaves(child, (*words, name))


COMMANDS = dict(_leaves(build_parser()))


def _example(parser: argparse.ArgumentParser) -> dict[str, str]:
    """The command's cheapest valid values by argument (its module's ``EXAMPLE``)."""
    return importlib.import_module(parser.get_default("func").__module__).EXAMPLE


def _takes_a_value(action: argparse.Action) -> bool:
    return not isinstance(action, argparse._SubParsersAction) and action.nargs != 0


def _path_arguments(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if isinstance(a.type, PathArgument)]


# -- the cases -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One shape of a wrong path: ``make(root, valid)`` creates it under ``root`` and returns
    the path; ``other_user`` cases run as ``nobody``."""

    name: str
    make: Callable[[Path, dict[str, Path]], Path]
    other_user: bool = False


def _missing(suffix: str) -> Case:
    return Case("missing", lambda root, valid: root / f"missing{suffix}")


def _inside_a_file(suffix: str) -> Case:
    def make(root: Path, valid: dict[str, Path]) -> Path:
        (root / "file.txt").write_text(TEXT)
        return root / "file.txt" / f"inside{suffix}"

    return Case("inside a file", make)


def _folder(suffix: str) -> Case:
    def make(root: Path, valid: dict[str, Path]) -> Path:
        (root / f"folder{suffix}").mkdir()
        return root / f"folder{suffix}"

    return Case("a folder where a file belongs", make)


def _file(name: str, content: Callable[[dict[str, Path]], bytes], suffix: str) -> Case:
    def make(root: Path, valid: dict[str, Path]) -> Path:
        path = root / f"{name.replace(' ', '-')}{suffix}"
        path.write_bytes(content(valid))
        return path

    return Case(name, make)


def _random_bytes(valid: dict[str, Path]) -> bytes:
    return random.Random(0).randbytes(4096)


def _truncated(kind: str) -> Callable[[dict[str, Path]], bytes]:
    def content(valid: dict[str, Path]) -> bytes:
        data = valid[kind].read_bytes()
        return data[: len(data) // 2]

    return content


#: The wrong kinds of file a reader of each format must refuse.
WRONG_CONTENT: dict[str, dict[str, Callable[[dict[str, Path]], bytes]]] = {
    "yaml": {
        "a torch file": lambda valid: valid["torch"].read_bytes(),
        "a YAML list": lambda valid: b"- 1\n- 2\n",
    },
    "torch": {
        "text": lambda valid: TEXT.encode(),
        "YAML": lambda valid: valid["yaml"].read_bytes(),
        "a truncated torch file": _truncated("torch"),
    },
    "sqlite": {
        "text": lambda valid: TEXT.encode(),
        "a torch file": lambda valid: valid["torch"].read_bytes(),
        "a truncated SQLite file": _truncated("sqlite"),
    },
}


def _unreadable(suffix: str, folder: bool) -> Case:
    def make(root: Path, valid: dict[str, Path]) -> Path:
        path = root / f"unreadable{suffix}"
        if folder:
            path.mkdir()
        else:
            path.write_bytes(valid.get(suffix.lstrip("."), valid["yaml"]).read_bytes())
        path.chmod(0)
        return path

    return Case("unreadable", make, other_user=True)


def _file_at(suffix: str) -> Case:
    def make(root: Path, valid: dict[str, Path]) -> Path:
        (root / f"file{suffix}").write_text(TEXT)
        return root / f"file{suffix}"

    return Case("a file where a folder belongs", make)


def _unwritable(name: str) -> Case:
    # The harness's folders belong to root: nobody may read them, not write into them.
    return Case("in an unwritable folder", lambda root, valid: root / name, other_user=True)


def cases_for(kind: PathArgument) -> list[Case]:
    """The wrong paths a user can give an argument of this kind."""
    suffix = SUFFIX.get(kind.format, "")
    if kind.role == "output":
        if kind.folder:
            return [_file_at(""), _inside_a_file(""), _unwritable("new-folder")]
        return [_folder(suffix), _inside_a_file(suffix), _unwritable(f"new{suffix}")]
    cases = [_missing(suffix), _inside_a_file(suffix)]
    if kind.folder is False:
        cases += [_folder(suffix), _file("empty", lambda valid: b"", suffix)]
    if kind.folder is True:
        cases.append(_file_at(""))
    if kind.folder is None:
        cases.append(Case("an empty folder", lambda root, valid: _mkdir(root / "empty-folder")))
        if kind.format != "any":
            cases.append(_file("empty", lambda valid: b"", suffix))
    if kind.folder is not True:
        cases.append(_file("random bytes", _random_bytes, suffix))
        for name, content in WRONG_CONTENT.get(kind.format, {}).items():
            cases.append(_file(name, content, suffix))
    cases.append(_unreadable(suffix, folder=kind.folder is True))
    return cases


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _generate() -> list[tuple[str, str, str]]:
    return [
        (command, action.dest, case.name)
        for command, parser in COMMANDS.items()
        for action in _path_arguments(parser)
        for case in cases_for(action.type)
    ]


CASES = _generate()
#: Generated cases per command, printed in the terminal summary (tests/nas/cli/conftest.py).
CASE_COUNTS = Counter(command for command, _, _ in CASES)


# -- running one case ----------------------------------------------------------------------------


def _argv(command: str, values: dict[str, str]) -> list[str]:
    """The command line that gives ``values`` (by argument) to ``command``."""
    parser = COMMANDS[command]
    argv = command.split()
    for action in parser._actions:
        if action.dest not in values or not _takes_a_value(action):
            continue
        value = values[action.dest]
        argv += [action.option_strings[0], value] if action.option_strings else [value]
    return argv


def _fill(values: dict[str, str], places: dict[str, str]) -> dict[str, str]:
    return {key: value.format(**places) for key, value in values.items()}


def _value(kind: PathArgument, path: Path) -> str:
    return (kind.prefixes[0] if kind.prefixes else "") + str(path)


def _snapshot(root: Path) -> dict[str, tuple]:
    """Names, sizes, modification times and contents of everything under ``root``."""
    state = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        digest = None
        if path.is_file() and info.st_mode & 0o444 and os.access(path, os.R_OK):
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        state[str(path.relative_to(root))] = (info.st_size, info.st_mtime_ns, info.st_mode, digest)
    return state


@pytest.fixture(scope="module")
def valid() -> Iterator[dict[str, Path]]:
    """A valid file of each format, and a valid search config whose runs would go beside them,
    in a folder every user may read (the cases as nobody read them too)."""
    import torch

    from searchspace import load_arch

    root = Path(tempfile.mkdtemp(prefix="effnas-paths-valid-"))
    valid = {"yaml": root / "spec.yaml", "torch": root / "weights.pt", "sqlite": root / "study.db"}
    valid["yaml"].write_text(load_arch("b0").to_yaml())
    torch.save({"weight": torch.arange(64.0)}, valid["torch"])
    with sqlite3.connect(valid["sqlite"]) as database:
        database.execute("create table trials (number integer, value real)")
        database.executemany("insert into trials values (?, ?)", [(i, i / 3) for i in range(200)])
    database.close()
    config = yaml.safe_load((REPO / "configs" / "quick.yaml").read_text())
    valid["config"] = root / "config.yaml"
    valid["config"].write_text(yaml.safe_dump({**config, "runs_dir": str(root / "runs")}))
    root.chmod(0o755)
    for path in root.iterdir():
        path.chmod(0o644)
    yield valid
    shutil.rmtree(root, ignore_errors=True)


def _prepare(
    root: Path, valid: dict[str, Path], command: str, action: argparse.Action, shape: Case
) -> tuple[list[str], str]:
    """Make the case under ``root``: the command line and the value of the argument."""
    places = {"config": valid["config"], "torch": valid["torch"]}
    places.update(run=_mkdir(root / "run"), out=_mkdir(root / "out"))
    value = _value(action.type, shape.make(root, valid))
    values = {**_fill(_example(COMMANDS[command]), places), action.dest: value}
    return _argv(command, values), value


def _state(root: Path, valid: dict[str, Path]) -> tuple[dict, dict]:
    return _snapshot(root), _snapshot(valid["config"].parent)


class _RayStarted(BaseException):
    """Raised where Ray would start; a BaseException, so that no handler turns it into a line."""


@pytest.fixture(scope="module")
def ray_tripwire() -> Iterator[list[str]]:
    """Calls to ``ray.init`` during the cases (each refused): a path check came too late."""
    ray = pytest.importorskip("ray")
    worker = importlib.import_module("ray._private.worker")
    calls: list[str] = []

    def refuse(*args: object, **kwargs: object) -> None:
        calls.append(f"ray.init({args}, {kwargs})")
        raise _RayStarted

    patch = pytest.MonkeyPatch()
    patch.setattr(ray, "init", refuse)
    patch.setattr(worker, "init", refuse)
    yield calls
    patch.undo()


def _check_line(err: str, code: int, command: str, dest: str, value: str) -> None:
    assert code == 2, (code, err)
    assert "Traceback" not in err, err
    assert err.endswith("\n") and err.count("\n") == 1, f"not one line:\n{err}"
    action = next(a for a in COMMANDS[command]._actions if a.dest == dest)
    path = action.type.path_of(value)
    assert path in err, (path, err)
    if action.option_strings:
        assert any(flag in err for flag in action.option_strings), (action.option_strings, err)


@pytest.mark.parametrize(("command", "dest", "case"), CASES)
def test_a_wrong_path(
    command, dest, case, tmp_path, monkeypatch, capsys, ray_tripwire, as_nobody, valid
):
    action = next(a for a in COMMANDS[command]._actions if a.dest == dest)
    shape = next(c for c in cases_for(action.type) if c.name == case)
    if shape.other_user:
        if as_nobody is None:
            pytest.skip(
                "needs root, setpriv and a Python that the user nobody can run with these packages"
            )
        outcome = as_nobody[command, dest, case]
        assert not outcome.ray_started
        _check_line(outcome.err, outcome.code, command, dest, outcome.value)
        assert outcome.after == outcome.before, "the command created or changed files"
        return
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EFFNAS_CACHE", str(tmp_path / "cache"))
    argv, value = _prepare(tmp_path, valid, command, action, shape)
    before = _state(tmp_path, valid)
    code = main(argv)
    err = capsys.readouterr().err
    assert not ray_tripwire, ray_tripwire
    _check_line(err, code, command, dest, value)
    assert _state(tmp_path, valid) == before, "the command created or changed files"


# -- as another user -----------------------------------------------------------------------------

_AS_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
# Runs the cases it reads from stdin ([folder, argv] each) and prints [status, stderr, whether
# Ray was started] for each: one process for all the cases, not one per case.
_SCRIPT = """
import contextlib, io, json, os, sys
from nas.cli import main
results = []
for folder, argv in json.load(sys.stdin):
    os.chdir(folder)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    ray = sys.modules.get("ray")
    results.append([code, err.getvalue(), bool(ray is not None and ray.is_initialized())])
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def nobody() -> list[str] | None:
    """How to run ``nas`` as ``nobody``: the command line prefix and environment, or None with
    the reason the cases are skipped."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        return None
    paths = [str(REPO), *sys.path[1:]]
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": "/nonexistent",
        "LANG": "C.UTF-8",
        "PYTHONPATH": os.pathsep.join(paths),
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    }
    # The interpreter may live where nobody cannot reach (a venv built on root's pyenv): then a
    # system Python of the same version reads the same packages.
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [sys.executable, f"/usr/bin/{version}", f"/usr/local/bin/{version}"]
    for python in candidates:
        if not os.path.exists(python):
            continue
        prefix = [*_AS_NOBODY, "env", "-i", *(f"{k}={v}" for k, v in env.items()), python]
        probe = subprocess.run(
            [*prefix, "-c", "import nas.cli, yaml"], capture_output=True, cwd="/"
        )
        if probe.returncode == 0:
            return prefix
    return None


class _Outcome(NamedTuple):
    code: int
    err: str
    ray_started: bool
    value: str
    before: tuple[dict, dict]
    after: tuple[dict, dict]


@pytest.fixture(scope="module")
def as_nobody(nobody, valid) -> Iterator[dict[tuple[str, str, str], _Outcome] | None]:
    """The cases that need another user, all run at once as nobody, by case."""
    if nobody is None:
        yield None
        return
    base = Path(tempfile.mkdtemp(prefix="effnas-paths-"))
    base.chmod(0o755)  # nobody may look in, not write
    jobs = {}
    for number, (command, dest, case) in enumerate(CASES):
        action = next(a for a in COMMANDS[command]._actions if a.dest == dest)
        shape = next(c for c in cases_for(action.type) if c.name == case)
        if shape.other_user:
            root = _mkdir(base / str(number))
            argv, value = _prepare(root, valid, command, action, shape)
            jobs[command, dest, case] = (root, argv, value, _state(root, valid))
    try:
        done = subprocess.run(
            [*nobody, "-c", _SCRIPT],
            input=json.dumps([[str(root), argv] for root, argv, _, _ in jobs.values()]),
            capture_output=True,
            text=True,
            cwd=base,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        results = dict(zip(jobs, json.loads(done.stdout), strict=True))
        yield {
            key: _Outcome(*results[key], value, before, _state(root, valid))
            for key, (root, _, value, before) in jobs.items()
        }
    finally:
        shutil.rmtree(base, ignore_errors=True)


# -- coverage ------------------------------------------------------------------------------------


def test_every_argument_is_classified():
    """An argument that takes a value declares its ``type``: a path is a PathArgument, so the
    harness covers it; a plain ``str`` says the author decided it names no path."""
    unclassified = [
        f"nas {command} {action.option_strings[0] if action.option_strings else action.dest}"
        for command, parser in COMMANDS.items()
        for action in parser._actions
        if _takes_a_value(action) and action.type is None and action.choices is None
    ]
    assert not unclassified, (
        f"give these a type= (a PathArgument if they name a path): {unclassified}"
    )


def test_every_command_has_an_example_and_path_cases():
    for command, parser in COMMANDS.items():
        example = _example(parser)
        required = {a.dest for a in parser._actions if a.required and _takes_a_value(a)}
        assert required <= set(example), (command, required - set(example))
        assert CASE_COUNTS[command] >= 1, f"nas {command} has no path argument"


def test_the_path_declarations_agree_with_the_readers():
    """What nas.cli.paths repeats (to keep ``nas --help`` free of torch) is the readers' own."""
    from nas.cli.paths import DATASET, SPEC_OR_WEIGHTS
    from nas.data.sources import DATASETS
    from nas.export.writer import _WEIGHTS_SUFFIXES

    takes_a_path = {
        f"{name}:" for name, entry in DATASETS.items() if entry.takes in ("path", "optional path")
    }
    assert set(DATASET.prefixes) == takes_a_path
    assert set(SPEC_OR_WEIGHTS.suffixes) == {".yaml", ".yml", *_WEIGHTS_SUFFIXES}


def test_the_known_cases_are_among_them():
    assert ("search", "runs_dir", "a file where a folder belongs") in CASES
    assert ("train", "out", "a file where a folder belongs") in CASES
    assert ("weights import", "file", "text") in CASES
