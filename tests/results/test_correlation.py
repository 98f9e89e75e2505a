"""Rank correlations with bootstrap intervals, checked against scipy's own statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from results.correlation import (
    bootstrap_indices,
    kendall_tau,
    rank_correlation,
    spearman_rho,
)
from results.errors import ResultsError


def _tied_sample(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Correlated figures with ties in both (rounded), as accuracies on a small split have."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 6, n).astype(float)
    y = np.round(x + rng.normal(0, 2, n))
    return x, y


@pytest.mark.parametrize("seed", range(6))
def test_tau_and_rho_equal_scipys(seed):
    x, y = _tied_sample(seed, 5 + 3 * seed)
    assert kendall_tau(x, y) == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12)
    assert spearman_rho(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)


def test_every_bootstrap_resample_equals_scipys():
    # Resamples repeat nets, so they hold ties in both figures at once: tau-b's hardest case.
    x, y = _tied_sample(7, 12)
    indices = bootstrap_indices(len(x), 400, seed=3)
    taus = kendall_tau(x[indices], y[indices])
    rhos = spearman_rho(x[indices], y[indices])
    expected_taus = np.array([stats.kendalltau(x[i], y[i]).statistic for i in indices])
    expected_rhos = np.array([stats.spearmanr(x[i], y[i]).statistic for i in indices])
    np.testing.assert_allclose(taus, expected_taus, atol=1e-12)
    np.testing.assert_allclose(rhos, expected_rhos, atol=1e-12)


def test_a_constant_figure_has_no_correlation():
    assert math.isnan(kendall_tau([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
    assert math.isnan(spearman_rho([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]))


def test_intervals_match_scipys_percentile_bootstrap():
    x, y = _tied_sample(11, 15)
    found = rank_correlation(x, y, resamples=20_000, seed=1)
    for statistic, low, high in (
        (lambda a, b: stats.kendalltau(a, b).statistic, found.tau_low, found.tau_high),
        (lambda a, b: stats.spearmanr(a, b).statistic, found.rho_low, found.rho_high),
    ):
        scipy_interval = stats.bootstrap(
            (x, y),
            statistic,
            paired=True,
            vectorized=False,
            n_resamples=20_000,
            method="percentile",
            rng=np.random.default_rng(2),
        ).confidence_interval
        # Two independent Monte Carlo estimates of the same percentiles: they agree to about
        # 0.01 at 20,000 resamples (seeded, so the test is deterministic).
        assert low == pytest.approx(scipy_interval.low, abs=0.03)
        assert high == pytest.approx(scipy_interval.high, abs=0.03)
    assert found.tau == pytest.approx(stats.kendalltau(x, y).statistic)
    assert found.rho == pytest.approx(stats.spearmanr(x, y).statistic)
    assert found.tau_low < found.tau < found.tau_high and found.n == 15


def test_same_seed_same_interval_and_missing_pairs_are_left_out():
    x, y = _tied_sample(5, 10)
    first = rank_correlation(x, y, resamples=500, seed=4)
    assert rank_correlation(x, y, resamples=500, seed=4) == first
    with_gaps = rank_correlation([*x, None, 3.0], [*y, 1.0, math.nan], resamples=500, seed=4)
    assert with_gaps == first


def test_fewer_than_three_pairs_give_nan_not_a_perfect_score():
    result = rank_correlation([0.9, 0.8, None], [0.95, 0.85, 0.9], resamples=100)
    assert result.n == 2 and math.isnan(result.tau) and math.isnan(result.rho_high)
    assert result.tau_text == "n/a" and result.to_dict()["tau"] is None


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"x": [1, 2, 3], "y": [1, 2]}, "3 and 2"),
        ({"resamples": 10}, "resamples"),
        ({"confidence": 1.5}, "confidence"),
    ],
)
def test_bad_arguments_name_the_value(kwargs, words):
    arguments = {"x": [1, 2, 3], "y": [3, 2, 1], **kwargs}
    with pytest.raises(ResultsError, match=words):
        rank_correlation(**arguments)
