"""Start ``nas dashboard`` in a subprocess and talk to its HTTP API (for the tests)."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


@contextlib.contextmanager
def dashboard(run: Path, *extra: str, log: Path) -> Iterator[str]:
    """``nas dashboard run`` on a free loopback port; yields its base URL, stops it after."""
    port = free_port()
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "nas.cli", "dashboard", str(run), "--port", str(port), *extra],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                raise AssertionError(f"dashboard exited {process.returncode}: {log.read_text()}")
            try:
                get_json(f"{base}/api/meta")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"dashboard never answered: {log.read_text()}") from None
                time.sleep(0.5)
        yield base
    finally:
        process.terminate()  # SIGTERM: nas stops as on Ctrl-C
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()  # leave nothing behind, and say what went wrong
            process.wait(timeout=30)
            raise AssertionError(f"the dashboard ignored SIGTERM: {log.read_text()}") from None


def study_detail(base: str, name: str) -> dict:
    """The dashboard's JSON for study ``name`` (trials, note, attached figures)."""
    studies = get_json(f"{base}/api/studies")["study_summaries"]
    study_id = next(study["study_id"] for study in studies if study["study_name"] == name)
    return get_json(f"{base}/api/studies/{study_id}?after=0")
