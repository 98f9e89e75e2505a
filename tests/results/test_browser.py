"""Headless Chromium opens the report and the dashboard and finds the Pareto plot with the right
number of points (rendered SVG markers, not just data), and the spec on hover; the hypervolume
and importance figures with their traces and axis titles; and tick labels, read from the rendered
SVG, that are plain numbers and never repeat on neighbouring ticks. Screenshots go to the test's
temporary folder, and also to ``$EFFNAS_SCREENSHOTS`` when that is set.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from nas.cli import main
from results import load_study_frame, pareto_front
from results.figures import PLOTS, front_trace_name
from results.progress import HYPERVOLUME_PLOTS, IMPORTANCE_PREFIX, hypervolume_trace_name
from tests.results.dashboard_helpers import dashboard, get_json
from tests.results.synthetic_study import make_run
from tests.results.test_infeasible import constrained_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip(
        "chromium and chromedriver are not installed (apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")

pytestmark = pytest.mark.slow

# Renders points of the named trace in a plotly graph div: the SVG markers it drew.
COUNT_POINTS = """
const plot = document.getElementById(arguments[0]);
if (!plot) return null;
const group = [...plot.querySelectorAll('.scatterlayer .trace')]
    .find((g) => g.__data__ && g.__data__[0].trace.name === arguments[1]);
return group ? group.querySelectorAll('path.point').length : null;
"""
# Hovers the first point of the named trace and returns the hover label's text.
HOVER_TEXT = """
const plot = document.getElementById(arguments[0]);
const index = plot._fullData.findIndex((trace) => trace.name === arguments[1]);
Plotly.Fx.hover(plot, [{curveNumber: index, pointNumber: 0}]);
return plot.querySelector('.hoverlayer').textContent;
"""


# Every rendered tick label of a plotly graph div, per axis ("xtick", "x2tick", "ytick", ...), in
# the order the ticks sit on the axis; and whether any label is drawn with a superscript (how
# plotly writes exponents such as 4x10^1).
TICK_LABELS = """
const plot = document.getElementById(arguments[0]);
const axes = {};
let superscript = false;
for (const text of plot.querySelectorAll('.xaxislayer-above text, .yaxislayer-above text')) {
    const axis = text.parentNode.getAttribute('class').split(' ')[0];
    const box = text.getBoundingClientRect();
    const position = axis.startsWith('x') ? box.left + box.width / 2 : -(box.top + box.height / 2);
    (axes[axis] = axes[axis] || []).push([position, text.textContent]);
    superscript ||= !!text.querySelector('tspan[style*="super"]');
}
for (const axis in axes) axes[axis] = axes[axis].sort((a, b) => a[0] - b[0]).map((t) => t[1]);
return {axes, superscript};
"""
# Axis titles of a plotly graph div.
AXIS_TITLES = """
const plot = document.getElementById(arguments[0]);
return [...plot.querySelectorAll('.g-xtitle, .g-ytitle, [class^="g-x"][class$="title"]')]
    .map((title) => title.textContent);
"""
# Rendered bars per trace name of a plotly bar chart.
COUNT_BARS = """
const plot = document.getElementById(arguments[0]);
const counts = {};
for (const group of plot.querySelectorAll('.barlayer .trace')) {
    const name = group.__data__[0].trace.name;
    counts[name] = (counts[name] || 0) + group.querySelectorAll('path').length;
}
return counts;
"""
EXPONENT = re.compile(r"[×x]\s*10|e[+-]?\d|\^|[⁰¹²³⁴⁵⁶⁷⁸⁹]")


@pytest.fixture
def browser(tmp_path):
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-quic", "--no-first-run", "--disable-component-update", "--disable-sync",
        "--window-size=1400,2000", f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver, script: str, *args, timeout: float = 60.0):
    """Poll a script until it returns something truthy; fail with its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script(script, *args)
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.5)


def screenshot(driver, path: Path) -> None:
    driver.save_screenshot(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("EFFNAS_SCREENSHOTS"):
        shutil.copy(path, Path(os.environ["EFFNAS_SCREENSHOTS"]) / path.name)


def test_report_in_chromium(browser, tmp_path):
    run_dir = make_run(tmp_path, "browser-report", "pareto", n_complete=30)
    assert main(["report", str(run_dir), "--no-png"]) == 0
    frame = load_study_frame(run_dir)
    expected = len(pareto_front(frame, ["accuracy", "step_time_ms"]))
    browser.get((run_dir / "report.html").as_uri())
    name = front_trace_name("browser-report")
    assert wait_for(browser, COUNT_POINTS, "accuracy-vs-step-time", name) == expected
    trials = browser.execute_script(COUNT_POINTS, "accuracy-vs-params", "browser-report: trials")
    assert trials == 30
    hover = browser.execute_script(HOVER_TEXT, "accuracy-vs-step-time", name)
    front = pareto_front(frame, ["accuracy", "step_time_ms"]).sort_values("step_time_ms")
    assert front.iloc[0]["spec"] in hover and f"trial #{front.iloc[0]['number']}" in hover
    # The search's progress: one hypervolume point per finished trial (30 complete, 3 failed).
    for key, (_, x_title) in HYPERVOLUME_PLOTS.items():
        name = hypervolume_trace_name("browser-report")
        assert wait_for(browser, COUNT_POINTS, key, name) == 33
        titles = browser.execute_script(AXIS_TITLES, key)
        assert titles[0].startswith(x_title) and titles[1].startswith("hypervolume")
    # Which choices matter: a figure per objective (and the reward), a bar per choice.
    choices = {name for params in frame["trial_params"] for name in params}
    for objective in ("accuracy", "step_time_norm", "params", "reward"):
        key = IMPORTANCE_PREFIX + objective
        assert wait_for(browser, COUNT_BARS, key) == {"browser-report": len(choices)}
        assert browser.execute_script(AXIS_TITLES, key)[0] == "importance"
        title = browser.execute_script(
            "return document.getElementById(arguments[0]).querySelector('.gtitle').textContent",
            key,
        )
        assert title.startswith(f"Which choices matter for {objective}")
    browser.execute_script("document.getElementById('section-progress').scrollIntoView()")
    screenshot(browser, tmp_path / "report.png")


def test_report_shows_infeasible_trials_apart_in_chromium(browser, tmp_path):
    # Two trials that ran and broke a constraint (one better than every feasible trial) and
    # three nets refused before training (no accuracy, nothing to plot).
    run_dir = constrained_run(tmp_path)
    assert main(["report", str(run_dir), "--no-png"]) == 0
    frame = load_study_frame(run_dir)
    feasible = frame[frame["violations"] == ""]
    browser.get((run_dir / "report.html").as_uri())
    crosses = "constrained: infeasible (broke a constraint)"
    assert wait_for(browser, COUNT_POINTS, "accuracy-vs-step-time", crosses) == 2
    front = browser.execute_script(
        COUNT_POINTS, "accuracy-vs-step-time", front_trace_name("constrained")
    )
    assert front == len(pareto_front(feasible, ["accuracy", "step_time_ms"]))
    trials = browser.execute_script(COUNT_POINTS, "accuracy-vs-params", "constrained: trials")
    assert trials == len(feasible[feasible["state"] == "COMPLETE"])
    hover = browser.execute_script(HOVER_TEXT, "accuracy-vs-step-time", crosses)
    assert "infeasible: step_time_norm 1.50 > max_step_time_norm 1.2" in hover
    # The table apart from the front: the 2 that ran, then the 3 refused.
    rows = browser.execute_script(
        "return [...document.querySelectorAll('#infeasible-constrained tbody tr')]"
        ".map((row) => row.textContent)"
    )
    assert len(rows) == 5 and sum("refused" in row for row in rows) == 3
    browser.execute_script("document.getElementById('infeasible-constrained').scrollIntoView()")
    screenshot(browser, tmp_path / "report-infeasible.png")


@pytest.mark.parametrize("narrow", [True, False], ids=["narrow-ranges", "wide-ranges"])
def test_report_tick_labels_are_plain_and_distinct(browser, tmp_path, narrow):
    """Narrow: accuracies within 1.5 points and step times within 30-60 ms, where the labels
    once read "98%, 98%" and "4x10^1"; wide: several decades of parameters and step times."""
    run_dir = make_run(tmp_path, "ticks", "pareto", n_complete=30, narrow=narrow)
    assert main(["report", str(run_dir), "--no-png"]) == 0
    browser.get((run_dir / "report.html").as_uri())
    keys = [plot.key for plot in PLOTS] + list(HYPERVOLUME_PLOTS) + [IMPORTANCE_PREFIX + "params"]
    for key in keys:
        assert wait_for(browser, "return !!document.getElementById(arguments[0]).__data__ "
                        "|| !!document.getElementById(arguments[0])._fullLayout", key)  # fmt: skip
        ticks = wait_for(browser, TICK_LABELS, key)
        assert not ticks["superscript"], key
        assert len(ticks["axes"]) >= 2, (key, ticks)
        for axis, labels in ticks["axes"].items():
            assert len(labels) >= 2, (key, axis, labels)
            assert not [label for label in labels if EXPONENT.search(label)], (key, axis, labels)
            repeats = [a for a, b in itertools.pairwise(labels) if a == b]
            assert not repeats, (key, axis, labels)
    accuracy_ticks = browser.execute_script(TICK_LABELS, "accuracy-vs-step-time")["axes"]["ytick"]
    assert all(label.endswith("%") for label in accuracy_ticks)
    screenshot(browser, tmp_path / f"report-ticks-{'narrow' if narrow else 'wide'}.png")


def test_dashboard_in_chromium(browser, tmp_path):
    run_dir = make_run(tmp_path, "browser-dashboard", "pareto", n_complete=30)
    frame = load_study_frame(run_dir)
    expected = len(pareto_front(frame, ["accuracy", "step_time_ms"]))
    with dashboard(run_dir, "--refresh", "0", log=tmp_path / "dashboard.log") as base:
        study_id = get_json(f"{base}/api/studies")["study_summaries"][0]["study_id"]
        browser.get(f"{base}/dashboard/studies/{study_id}")
        plot_id = "user-defined-plot:effnas-accuracy-vs-step-time"
        count = wait_for(browser, COUNT_POINTS, plot_id, front_trace_name("browser-dashboard"))
        assert count == expected
        # optuna-dashboard's own Pareto-front plot is there too.
        assert browser.execute_script("return !!document.getElementById('graph-pareto-front')")
        # So is our hypervolume history: one point per finished trial (30 complete, 3 failed).
        hypervolume_id = "user-defined-plot:effnas-hypervolume-vs-trials"
        name = hypervolume_trace_name("browser-dashboard")
        assert wait_for(browser, COUNT_POINTS, hypervolume_id, name) == 33
        browser.execute_script("document.getElementById(arguments[0]).scrollIntoView()", plot_id)
        time.sleep(1)
        screenshot(browser, tmp_path / "dashboard.png")
