"""Headless Chromium opens the report and the dashboard and finds the Pareto plot with the right
number of points (rendered SVG markers, not just data), and the spec on hover. Screenshots go to
the test's temporary folder, and also to ``$EFFNAS_SCREENSHOTS`` when that is set.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from nas.cli import main
from results import load_study_frame, pareto_front
from results.figures import front_trace_name
from tests.results.dashboard_helpers import dashboard, get_json
from tests.results.synthetic_study import make_run

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
    screenshot(browser, tmp_path / "report.png")


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
        browser.execute_script("document.getElementById(arguments[0]).scrollIntoView()", plot_id)
        time.sleep(1)
        screenshot(browser, tmp_path / "dashboard.png")
