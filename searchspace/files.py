"""Reading and writing the project's files: safely, with one-line errors that name the file.

Every spec, search config, scaling preset file and training schedule is read through here, so
they all refuse the same things the same way: a missing or unreadable file, invalid YAML, and a
key given twice in one mapping (PyYAML silently keeps the last of two equal keys, which hides an
edit that never takes effect). Documents are parsed with ``yaml.safe_load`` only.

Every file that a crash must never leave half-written (checkpoints, weights, metrics, specs, the
reference-timing cache) is written through :func:`atomic_write`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import yaml

from searchspace.errors import EffnasError

__all__ = ["atomic_write", "load_yaml_file", "parse_yaml", "read_text_file"]

_MERGE_TAG = "tag:yaml.org,2002:merge"


def read_text_file(path: str | Path, what: str, error: type[EffnasError]) -> str:
    """The text of ``path``; ``error("<what> file 'PATH' does not exist")`` and the like."""
    path = Path(path)
    try:
        return path.read_text()
    except FileNotFoundError:
        raise error(f"{what} file {str(path)!r} does not exist") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as reason:
        raise error(f"{what} file {str(path)!r} cannot be read: {reason}") from None


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
        with tempfile.NamedTemporaryFile(
            "wb", dir=path.parent, prefix=f".{path.name}.", suffix=".partial", delete=False
        ) as file:
            partial = file.name
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
