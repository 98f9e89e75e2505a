"""A search's run directory, held by one driver at a time.

Two drivers in one run directory would write one Tune experiment and one ``best.yaml`` over each
other, so the second is refused with one line (``fcntl.flock`` on ``.driver.lock``: the lock goes
with the process, so a killed driver never leaves a stale lock behind). Searches that share a
study on a database server (Optuna's distributed mode) each have their own run directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from nas.errors import ConfigError
from searchspace.files import make_output_dir

__all__ = ["LOCK_FILE", "hold_run_dir"]

LOCK_FILE = ".driver.lock"


@contextlib.contextmanager
def hold_run_dir(run_dir: Path, study: str) -> Iterator[None]:
    """Create ``run_dir`` if needed and hold it for this driver until the block ends.

    A directory this call created is removed again if the block fails before anything but the
    lock was written in it (a refused search leaves nothing behind).

    Raises:
        ConfigError: another driver holds the directory.
    """
    created = _first_missing(run_dir)
    make_output_dir(run_dir, "run directory", ConfigError)
    lock_path = run_dir / LOCK_FILE
    with open(lock_path, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            raise ConfigError(
                f"study {study!r} in {run_dir} is being searched by another nas search "
                f"({holder}); wait for it to end, or use another --study or --runs-dir"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()}")
        lock.flush()
        try:
            yield
        except BaseException:
            if created is not None and {p.name for p in run_dir.iterdir()} <= {LOCK_FILE}:
                shutil.rmtree(created, ignore_errors=True)
            raise


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of ``path`` that does not exist yet (``None`` if it exists)."""
    missing = None
    for folder in (path, *path.parents):
        if folder.exists():
            return missing
        missing = folder
    return missing
