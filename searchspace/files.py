"""Reading and writing the project's files: safely, with one-line errors that name the file.

Every spec, search config, scaling preset file and training schedule is read through here, so
they all refuse the same things the same way: a missing or unreadable file, invalid YAML, and a
key given twice in one mapping (PyYAML silently keeps the last of two equal keys, which hides an
edit that never takes effect). Documents are parsed with ``yaml.safe_load`` only.

Every file that a crash must never leave half-written (checkpoints, weights, metrics, specs, the
reference-timing cache) is written through :func:`atomic_write`.
"""

from __future__ import annotations

import glob
import hashlib
import os
import socket
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import yaml

from searchspace.errors import EffnasError

__all__ = [
    "atomic_write",
    "check_input_path",
    "check_output_path",
    "load_yaml_file",
    "make_output_dir",
    "parse_yaml",
    "read_text_file",
]

_MERGE_TAG = "tag:yaml.org,2002:merge"


def read_text_file(path: str | Path, what: str, error: type[EffnasError]) -> str:
    """The text of ``path``; ``error("<what> file 'PATH' does not exist")`` and the like."""
    path = Path(path)
    try:
        return path.read_text()
    except FileNotFoundError:
        raise error(f"{what} file {str(path)!r} does not exist") from None
    except UnicodeDecodeError as reason:
        raise error(f"{what} file {str(path)!r} cannot be read: {reason}") from None
    except OSError as reason:  # a directory, inside a file, no permission, an I/O error
        raise error(
            f"{what} file {str(path)!r} cannot be read: {reason.strerror or reason}"
        ) from None


def _blocking_file(path: Path) -> Path | None:
    """The first ancestor of ``path`` that exists and is not a folder (``a.txt`` of
    ``a.txt/b/c``), or None: what makes ``path`` impossible to reach."""
    for folder in reversed(path.parents):
        if folder.exists() and not folder.is_dir():
            return folder
    return None


def _nearest_existing(path: Path) -> Path:
    """``path``, or its nearest ancestor that exists (where creating it starts)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


def check_input_path(
    path: str | Path, what: str, error: type[EffnasError], *, folder: bool | None = False
) -> Path:
    """Refuse an input that cannot be read, before any work starts.

    Args:
        path: the file or folder to read.
        what: how messages name it (``"--presets file"``, ``"run directory"``).
        error: the error class.
        folder: True for a directory, False for a file, None for either.

    Raises:
        ``error``: ``path`` does not exist, lies inside a file, is a file where a folder belongs
            (or the reverse), or this user may not read it.
    """
    path = Path(path)
    shown = repr(str(path))
    blocking = _blocking_file(path)
    if blocking is not None:
        raise error(f"{what} {shown} cannot exist: {str(blocking)!r} is a file, not a directory")
    if not path.exists():
        raise error(f"{what} {shown} does not exist")
    if folder is True and not path.is_dir():
        raise error(f"{what} {shown} is a file, not a directory")
    if folder is False and path.is_dir():
        raise error(f"{what} {shown} is a directory, not a file")
    mode = os.R_OK | (os.X_OK if path.is_dir() else 0)
    if not os.access(path, mode):
        raise error(f"{what} {shown} cannot be read: permission denied")
    return path


def check_output_path(
    path: str | Path, what: str, error: type[EffnasError], *, folder: bool
) -> Path:
    """Refuse an output that cannot be written, before any work starts; nothing is created.

    Args:
        path: the file or folder to write (it may exist; its parents are created when written).
        what: how messages name it (``"--out"``, ``"--runs-dir"``).
        error: the error class.
        folder: True for a directory, False for a file.

    Raises:
        ``error``: ``path`` lies inside a file, is a file where a folder belongs (or the
            reverse), or this user may not write where it goes.
    """
    path = Path(path)
    shown = repr(str(path))
    blocking = _blocking_file(path)
    if blocking is not None:
        raise error(
            f"{what} {shown} cannot be created: {str(blocking)!r} is a file, not a directory"
        )
    if path.exists() and path.is_dir() != folder:
        kind = "a file, not a directory" if folder else "a directory, not a file"
        raise error(f"{what} {shown} is {kind}")
    start = _nearest_existing(path)
    # A new file or folder needs a writable folder to go in; an existing folder, to be writable.
    target = start if start.is_dir() else start.parent
    if not os.access(target, os.W_OK | os.X_OK):
        raise error(f"{what} {shown} cannot be written: {str(target)!r} is not writable")
    if start == path and not folder and not os.access(path, os.W_OK):
        raise error(f"{what} {shown} cannot be written: permission denied")
    return path


def make_output_dir(path: str | Path, what: str, error: type[EffnasError]) -> Path:
    """Create the output folder ``path`` (and its parents) if needed: the one place where a
    command's output folder is opened.

    Raises:
        ``error``: see :func:`check_output_path`, or the system refused to create it.
    """
    path = check_output_path(path, what, error, folder=True)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as reason:
        raise error(
            f"{what} {str(path)!r} cannot be created: {reason.strerror or reason}"
        ) from None
    return path


def _first_duplicate_key(node: yaml.Node) -> yaml.Node | None:
    """The first key node repeated within one mapping of the composed document, if any."""
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, yaml.MappingNode):
            seen: set[tuple[str, str]] = set()
            for key, value in current.value:
                # `<<: *anchor` merges may be overridden by explicit keys, by design.
                if key.tag != _MERGE_TAG and isinstance(key, yaml.ScalarNode):
                    identity = (key.tag, key.value)
                    if identity in seen:
                        return key
                    seen.add(identity)
                stack.extend((key, value))
        elif isinstance(current, yaml.SequenceNode):
            stack.extend(current.value)
    return None


def parse_yaml(text: str, source: str, error: type[EffnasError]) -> Any:
    """Parse one YAML document with ``yaml.safe_load``, refusing duplicate keys.

    The document is first composed into nodes (no Python object is built) to find duplicates,
    then loaded with ``yaml.safe_load``.
    """
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        duplicate = _first_duplicate_key(root) if root is not None else None
        if duplicate is not None:
            line = duplicate.start_mark.line + 1
            raise error(f"{source}: invalid YAML at line {line}: duplicate key {duplicate.value!r}")
        return yaml.safe_load(text)
    except yaml.YAMLError as reason:
        mark = getattr(reason, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(reason, "problem", None) or str(reason).splitlines()[0]
        raise error(f"{source}: invalid YAML{where}: {problem}") from None


def load_yaml_file(path: str | Path, what: str, error: type[EffnasError]) -> Any:
    """Read and parse a YAML file (see :func:`read_text_file` and :func:`parse_yaml`)."""
    return parse_yaml(read_text_file(path, what, error), str(path), error)


def atomic_write(
    path: str | Path,
    content: bytes | str | Callable[[IO[bytes]], None],
    error: type[EffnasError] = EffnasError,
) -> Path:
    """Write ``content`` to ``path`` so that a reader sees the old file or the new one, never half.

    The content goes to a temporary file of its own beside the target (so that two processes
    writing the same file never write into one temporary file), is flushed to disk, then renamed
    over ``path`` (``os.replace`` is atomic on POSIX and Windows). Parent folders are created.

    A writer killed mid-write (SIGKILL, a lost node) cannot remove its temporary file: it stays,
    hidden (``.NAME.<host>-<pid>-<random>.partial``), beside the intact old file until the next
    write of ``path`` on that host removes it (once no process has that pid).

    Args:
        path: the file to write.
        content: the bytes, a text (UTF-8), or a function that writes into the open binary file
            (e.g. ``lambda file: torch.save(payload, file)``).
        error: the error class for a failure to write (one line naming the file).

    Returns:
        ``path`` as a :class:`Path`.
    """
    path = Path(path)
    partial: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_abandoned(path)
        with tempfile.NamedTemporaryFile(
            "wb",
            dir=path.parent,
            prefix=f".{path.name}.{_HOST}-{os.getpid()}-",
            suffix=".partial",
            delete=False,
        ) as file:
            partial = file.name
            # NamedTemporaryFile creates the file 0600; give it the mode a plain open() would
            # (or the mode of the file it replaces), so that a shared results folder stays
            # readable by whoever could read it before.
            os.fchmod(file.fileno(), _mode_for(path))
            if callable(content):
                content(file)
            else:
                file.write(content.encode() if isinstance(content, str) else content)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
    except OSError as reason:
        if partial is not None:
            Path(partial).unlink(missing_ok=True)
        raise error(f"cannot write {str(path)!r}: {reason.strerror or reason}") from None
    except BaseException:  # a second Ctrl-C while writing: no half-written file left behind
        if partial is not None:
            Path(partial).unlink(missing_ok=True)
        raise
    return path


#: This host, in the names of temporary files: a pid means nothing on another host that writes
#: to the same shared folder.
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _process_umask() -> int:
    """The process's umask, read once (``os.umask`` can only read it by setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _process_umask()


def _mode_for(path: Path) -> int:
    """The permission bits ``path`` keeps if it exists; else those ``open()`` would give it."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return 0o666 & ~_UMASK


def _remove_abandoned(path: Path) -> None:
    """Remove the temporary files that killed writers of ``path`` on this host left."""
    prefix = f".{path.name}.{_HOST}-"
    for partial in path.parent.glob(glob.escape(prefix) + "*.partial"):
        pid = partial.name[len(prefix) :].split("-", 1)[0]
        if pid.isdigit() and not _running(int(pid)):
            partial.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True  # another thread of this process may be writing it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True
