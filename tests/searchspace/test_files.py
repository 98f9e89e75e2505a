"""Writing files so that a killed command leaves the old file or the new one, never a torn one."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from searchspace.files import atomic_write
from tests import REPO

# A writer that stops half-way through writing the new content, at a barrier the test holds:
# it says so on stdout, then waits for a line on stdin that never comes.
_WRITER = """
import sys
from searchspace.files import atomic_write

def content(file):
    file.write(b"new content, first half;")
    file.flush()
    print("half written", flush=True)
    sys.stdin.readline()
    file.write(b" second half")

atomic_write(sys.argv[1], content)
"""


def _partials(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".partial"))


def test_a_writer_killed_mid_write_leaves_the_old_file(tmp_path):
    target = tmp_path / "weights.pt"
    target.write_bytes(b"old content")
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(target)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=REPO,
    )
    try:
        assert writer.stdout.readline() == b"half written\n"  # the barrier: mid-write
        writer.send_signal(signal.SIGKILL)
    finally:
        writer.wait()
    assert writer.returncode == -signal.SIGKILL
    assert target.read_bytes() == b"old content"
    # Its temporary file could not be removed by the killed writer; it is hidden and named for
    # it, and the next write of the same file removes it.
    [left] = _partials(tmp_path)
    assert re.fullmatch(rf"\.weights\.pt\.[0-9a-f]{{8}}-{writer.pid}-\w+\.partial", left)
    atomic_write(target, b"newer content")
    assert target.read_bytes() == b"newer content"
    assert _partials(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.pt"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path):
    target = tmp_path / "spec.yaml"
    target.write_text("old")

    def fail(file):
        file.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, fail)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]


def test_a_live_writers_temporary_file_is_kept(tmp_path):
    """Only the files of writers that are gone are removed: this process is alive."""

    from searchspace.files import _HOST

    mine = tmp_path / f".out.csv.{_HOST}-{os.getpid()}-abc.partial"
    mine.write_text("being written")
    atomic_write(tmp_path / "out.csv", "a,b\n")
    assert mine.exists()


# Where the library may write without atomic_write, and why.
_ALLOWED = {
    "searchspace/files.py": "atomic_write itself",
    # Every export is written into a private folder beside the output, checked there, and only
    # then renamed into place (export_model): the pattern of atomic_write for several files.
    "nas/export/writer.py": "written in a scratch folder, renamed into place",
}
_LOCK_FILE = "open(lock_path"  # nas/search/rundir.py: the driver's lock, never read as data

_WRITE = re.compile(
    r"\.write_text\(|\.write_bytes\(|torch\.save\(|torch\.jit\.save\(|\.to_csv\(|savefig\("
    r"|write_html\(|pickle\.dump\(|json\.dump\(|\.open\([\"'][wax]|open\([^)]*[\"'][wax]b?\+?[\"']"
)


def test_every_file_the_library_writes_goes_through_atomic_write():
    direct = []
    for package in ("searchspace", "nas", "results", "scaling"):
        for source in sorted((REPO / package).rglob("*.py")):
            name = str(source.relative_to(REPO))
            if name in _ALLOWED:
                continue
            for number, line in enumerate(source.read_text().splitlines(), 1):
                code = line.split("#", 1)[0]
                if _WRITE.search(code) and "atomic_write(" not in code and _LOCK_FILE not in code:
                    direct.append(f"{name}:{number}: {line.strip()}")
    assert not direct, "write these through searchspace.files.atomic_write:\n" + "\n".join(direct)


def test_a_new_file_gets_the_mode_open_gives_and_a_replaced_file_keeps_its_own(tmp_path):
    """Not the temporary file's 0600: results in a shared folder stay readable as plain files."""
    plain = tmp_path / "plain.yaml"
    plain.write_text("x")  # the mode the process's umask gives a new file
    written = atomic_write(tmp_path / "best.yaml", "x")
    assert stat.S_IMODE(written.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
    written.chmod(0o640)  # a mode the user chose stays through a rewrite
    atomic_write(written, "y")
    assert stat.S_IMODE(written.stat().st_mode) == 0o640
