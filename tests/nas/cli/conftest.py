"""The path harness's case counts, in the terminal summary."""

from __future__ import annotations

import sys


def pytest_terminal_summary(terminalreporter) -> None:
    harness = sys.modules.get("tests.nas.cli.test_paths")
    if harness is None:
        return
    counts = harness.CASE_COUNTS
    terminalreporter.section("path cases per command (tests/nas/cli/test_paths.py)")
    for command, count in sorted(counts.items()):
        terminalreporter.write_line(f"nas {command}: {count}")
    terminalreporter.write_line(f"total: {sum(counts.values())}")
