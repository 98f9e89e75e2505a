"""``nas front`` and ``nas report`` from the command line, and their one-line errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pandas as pd
import pytest

from nas.cli import main
from results import load_study_frame, pareto_front, reward_best
from tests.results.synthetic_study import make_run


def run_nas(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_front_prints_the_front_and_the_reward_best(capsys, pareto_run):
    code, out, err = run_nas(capsys, "front", str(pareto_run))
    assert code == 0, err
    frame = load_study_frame(pareto_run)
    front = pareto_front(frame, ["accuracy", "step_time_norm", "params"])
    on = "accuracy (max), step_time_norm (min), params (min)"
    assert f"Pareto front on {on}: {len(front)} trials" in out
    listed = [int(n) for n in re.findall(r"^\s*#(\d+)\s", out, flags=re.MULTILINE)]
    assert listed == list(front["number"])
    best = reward_best(frame)
    assert f"reward-best: trial #{best['number']} " in out
    # The held-out accuracy that chose it beside the test accuracy no decision read, and the gap.
    gap = 100 * (best["accuracy"] - best["test_accuracy"])
    assert f"held-out accuracy {100 * best['accuracy']:.2f}%, test " in out
    assert f"{100 * best['test_accuracy']:.2f}% (held-out - test {gap:+.2f} points)" in out
    header = next(line for line in out.splitlines() if line.lstrip().startswith("trial"))
    assert header.split()[:3] == ["trial", "held-out", "test"]
    assert "40 complete, 3 failed, 2 running" in out


def test_front_csv_and_json_on_chosen_objectives(capsys, tmp_path, reward_run):
    csv = tmp_path / "front.csv"
    code, out, err = run_nas(
        capsys, "front", str(reward_run), "--objectives", "accuracy,step_time_ms",
        "--csv", str(csv), "--json",
    )  # fmt: skip
    assert code == 0, err
    expected = pareto_front(load_study_frame(reward_run), ["accuracy", "step_time_ms"])
    payload = json.loads(out)
    assert payload["objectives"] == ["accuracy", "step_time_ms"]
    assert [trial["number"] for trial in payload["front"]] == list(expected["number"])
    assert payload["front"][0]["spec"] == expected.iloc[0]["spec"]
    assert payload["front"][0]["test_accuracy"] == expected.iloc[0]["test_accuracy"]
    best = reward_best(load_study_frame(reward_run))
    assert payload["reward_best"]["number"] == best["number"]
    assert payload["reward_best"]["heldout_minus_test_points"] == pytest.approx(
        100 * (best["accuracy"] - best["test_accuracy"])
    )
    written = pd.read_csv(csv)
    assert list(written["number"]) == list(expected["number"])
    assert list(written["spec"]) == list(expected["spec"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["front", "{root}/missing"], "argument run: '{root}/missing' does not exist"),
        (["front", "{pareto}", "--objectives", "accuracy,latency"], "unknown objective 'latency'"),
        (["front", "{pareto}", "--study", "other"], "--study 'other' is not in"),
        (["front", "{empty}"], "study 'empty' in"),
        (["front", "{running}"], "has no completed trial with"),
        (["report", "{pareto}", "{reward}"], "--out FILE is required"),
        (["report", "{pareto}", "--out", "{root}/no/such/dir/r.html"], "--out: directory"),
        (["report", "{root}/missing"], "argument run: '{root}/missing' does not exist"),
        (["dashboard", "{pareto}", "--port", "0"], "--port must be in 1..65535, got 0"),
        (["dashboard", "{pareto}", "--refresh", "-1"], "--refresh must be 0 or more"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, pareto_run, reward_run, argv, message):
    empty = tmp_path / "empty"
    if not empty.exists():
        make_run(tmp_path, "empty", "pareto", n_complete=0, n_failed=0, n_running=0)
        make_run(tmp_path, "running", "pareto", n_complete=0, n_failed=1, n_running=1)
    names = {"root": tmp_path, "pareto": pareto_run, "reward": reward_run, "empty": empty,
             "running": tmp_path / "running"}  # fmt: skip
    code, _out, err = run_nas(capsys, *[arg.format(**names) for arg in argv])
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(f"nas {argv[0]}: error: ")
    assert message.format(**names) in err


def test_error_has_no_traceback_in_a_real_process(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "nas.cli", "front", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    expected = f"nas front: error: argument run: '{tmp_path}/missing' does not exist"
    assert result.stderr.strip() == expected


def test_report_writes_self_contained_html_and_pngs(capsys, pareto_run):
    code, out, err = run_nas(capsys, "report", str(pareto_run))
    assert code == 0, err
    html_path = pareto_run / "report.html"
    text = html_path.read_text()
    # plotly.js is embedded, nothing is fetched: no script or stylesheet from anywhere.
    assert "<script src=" not in text and "<link " not in text
    assert len(text) > 3_000_000  # the embedded plotly.js bundle
    for div in ("accuracy-vs-step-time", "accuracy-vs-params", "pareto-3d"):
        assert f'id="{div}"' in text
    frame = load_study_frame(pareto_run)
    front = pareto_front(frame, ["accuracy", "step_time_norm", "params"])
    table = text.split('id="front-pareto-quick"')[1].split("</table>")[0]
    assert table.count("<tr") == len(front) + 1  # header row
    best = reward_best(frame)
    assert f"Reward-best: trial #{best['number']}" in text
    assert 'class="best"' in table  # the fixture's reward-best is on the front
    assert str(best["spec"]) in text
    gap = 100 * (best["accuracy"] - best["test_accuracy"])
    assert f"held-out - test {gap:+.2f} points" in text
    assert f"{100 * best['test_accuracy']:.2f}%" in table
    assert "3 failed trials" in text
    for key in ("accuracy-vs-step-time", "accuracy-vs-params"):
        png = pareto_run / f"report-{key}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert str(png) in out


def test_report_compares_several_runs(capsys, tmp_path, pareto_run, reward_run):
    out_file = tmp_path / "compare.html"
    code, _out, err = run_nas(
        capsys, "report", str(pareto_run), str(reward_run), "--out", str(out_file), "--no-png"
    )
    assert code == 0, err
    text = out_file.read_text()
    assert "pareto-quick: Pareto front" in text and "reward-quick: Pareto front" in text
    assert 'id="front-pareto-quick"' in text and 'id="front-reward-quick"' in text
    assert not list(tmp_path.glob("compare-*.png"))
