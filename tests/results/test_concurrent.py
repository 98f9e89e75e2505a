"""``nas report`` and ``nas dashboard`` on a study that a search is writing at the same time.

A writer process adds trials in a tight loop the way a search does (ask, one commit per user
attribute, tell; Optuna's default SQLite settings), while we report on the study and a dashboard
serves it and refreshes its attached figures every second. Neither side may see "database is
locked" (or any other error), and the dashboard must follow the new trials.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from nas.cli import main
from tests.results.dashboard_helpers import dashboard, study_detail
from tests.results.synthetic_study import make_run

WRITER = Path(__file__).with_name("synthetic_study.py")
WRITE_SECONDS = 8


def trial_count(run_dir: Path, name: str) -> int:
    storage = f"sqlite:///{run_dir / 'study.db'}"
    return len(optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False))


@pytest.mark.slow
def test_report_and_dashboard_while_a_search_writes(capsys, tmp_path):
    run_dir = make_run(tmp_path, "busy", "pareto", n_complete=30)
    start_count = trial_count(run_dir, "busy")
    url = f"sqlite:///{run_dir / 'study.db'}"
    seen_by_dashboard = []
    reports = 0
    with dashboard(run_dir, "--refresh", "1", log=tmp_path / "dashboard.log") as base:
        writer = subprocess.Popen(
            [sys.executable, str(WRITER), "write-loop", url, "busy", str(WRITE_SECONDS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + WRITE_SECONDS + 120  # the writer's start-up included
            while writer.poll() is None and time.monotonic() < deadline:
                assert main(["report", str(run_dir), "--no-png"]) == 0, capsys.readouterr().err
                reports += 1
                seen_by_dashboard.append(len(study_detail(base, "busy")["trials"]))
                time.sleep(0.5)
            out, err = writer.communicate(timeout=120)
        finally:
            if writer.poll() is None:
                writer.kill()
    dashboard_log = (tmp_path / "dashboard.log").read_text()
    assert writer.returncode == 0, err
    assert "locked" not in err.lower()
    assert "locked" not in dashboard_log.lower() and "refresh failed" not in dashboard_log
    assert "locked" not in capsys.readouterr().err.lower()
    written = int(out.split()[1])
    assert written > 0 and reports > 0
    assert trial_count(run_dir, "busy") == start_count + written
    # The dashboard followed the search as it wrote.
    assert seen_by_dashboard[-1] > seen_by_dashboard[0] >= start_count
