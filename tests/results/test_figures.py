"""The matplotlib PNGs' tick labels: plain numbers, never an exponent, never the same label on
two neighbouring ticks (read from the drawn figures)."""

from __future__ import annotations

import itertools

import optuna
import pytest

from results import study_frame
from results.figures import png_figures, tick_decimals
from tests.results.synthetic_study import fill_study


def drawn_labels(axis) -> list[str]:
    """The tick labels matplotlib drew on ``axis`` (after a draw), major and minor, in order."""
    index = 0 if axis.axis_name == "x" else 1
    low, high = sorted(axis.get_view_interval())
    labels = sorted(
        (label.get_position()[index], label.get_text())
        for label in axis.get_ticklabels(which="both")
        if label.get_visible() and label.get_text()
    )
    return [text for position, text in labels if low <= position <= high]


@pytest.mark.parametrize("narrow", [True, False], ids=["narrow-ranges", "wide-ranges"])
def test_png_tick_labels_are_plain_and_distinct(narrow):
    study = fill_study(optuna.storages.InMemoryStorage(), "png", "pareto", narrow=narrow)
    for key, figure in png_figures([study_frame(study)]).items():
        figure.canvas.draw()
        (axes,) = figure.axes
        for axis in (axes.xaxis, axes.yaxis):
            labels = drawn_labels(axis)
            assert len(labels) >= 2, (key, labels)
            assert not [label for label in labels if "$" in label or "e+" in label], (key, labels)
            assert not [a for a, b in itertools.pairwise(labels) if a == b], (key, labels)
        assert all(label.endswith("%") for label in drawn_labels(axes.yaxis))


def test_tick_decimals():
    assert tick_decimals([97.0, 97.5, 98.0]) == 1
    assert tick_decimals([97.9, 97.95, 98.0]) == 2
    assert tick_decimals([70.0, 80.0, 90.0]) == 0
    assert tick_decimals([0.1 + 0.2, 0.5]) == 1  # floating-point noise is not a decimal
