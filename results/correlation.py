"""Rank agreement between two measurements of the same nets, with bootstrap intervals.

Kendall's tau (tau-b) and Spearman's rho of two figures of the same nets (a brief proxy's accuracy
against a long run's, a short step timing against the real time per step), each with a percentile
bootstrap interval over the nets, every resample computed at once, as arrays. Why vectorized
rather than ``scipy.stats.bootstrap``, and how the tests check it against scipy:
docs/fidelity.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import rankdata

from results.errors import ResultsError

__all__ = ["RankCorrelation", "kendall_tau", "rank_correlation", "spearman_rho"]

#: Pair-matrix entries computed per array operation (about 32 MB of float64 per matrix).
_CHUNK_ENTRIES = 4_000_000


@dataclass(frozen=True)
class RankCorrelation:
    """Kendall's tau and Spearman's rho between two figures of the same nets, with intervals.

    Attributes:
        n: nets compared (pairs where both figures are known).
        tau, tau_low, tau_high: Kendall's tau-b and its bootstrap interval.
        rho, rho_low, rho_high: Spearman's rho and its bootstrap interval.
        confidence: the intervals' coverage (0.95: 2.5th to 97.5th percentile).
        resamples: bootstrap resamples drawn; resamples on which a figure is constant (the
            statistic is undefined there) are left out of the interval.
    """

    n: int
    tau: float
    tau_low: float
    tau_high: float
    rho: float
    rho_low: float
    rho_high: float
    confidence: float
    resamples: int

    @property
    def tau_text(self) -> str:
        """``"0.71 [0.52, 0.86]"`` (``"n/a"`` with fewer than 3 nets)."""
        return _with_interval(self.tau, self.tau_low, self.tau_high)

    @property
    def rho_text(self) -> str:
        """``"0.85 [0.66, 0.95]"`` (``"n/a"`` with fewer than 3 nets)."""
        return _with_interval(self.rho, self.rho_low, self.rho_high)

    def to_dict(self) -> dict[str, Any]:
        return {
            k: (None if isinstance(v, float) and math.isnan(v) else v)
            for k, v in asdict(self).items()
        }


def _with_interval(value: float, low: float, high: float) -> str:
    if math.isnan(value):
        return "n/a"
    if math.isnan(low):
        return f"{value:.2f}"
    return f"{value:.2f} [{low:.2f}, {high:.2f}]"


def kendall_tau(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of each row of ``x`` against the same row of ``y`` (shape ``(..., n)``).

    ``(concordant - discordant) / sqrt((n0 - ties_x) * (n0 - ties_y))`` over the ``n0`` pairs,
    as ``scipy.stats.kendalltau`` computes it; NaN where a row of ``x`` or ``y`` is constant.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    sign_x = np.sign(x[..., :, None] - x[..., None, :])
    sign_y = np.sign(y[..., :, None] - y[..., None, :])
    # Each unordered pair appears twice in the full matrices: halve every count.
    score = (sign_x * sign_y).sum(axis=(-2, -1)) / 2
    untied_x = np.count_nonzero(sign_x, axis=(-2, -1)) / 2
    untied_y = np.count_nonzero(sign_y, axis=(-2, -1)) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        tau = score / np.sqrt(untied_x * untied_y)
    return np.where((untied_x > 0) & (untied_y > 0), np.clip(tau, -1.0, 1.0), np.nan)


def spearman_rho(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row of ``x`` against the same row of ``y`` (shape ``(..., n)``):
    Pearson's correlation of the average ranks; NaN where a row is constant."""
    rank_x = rankdata(np.asarray(x, dtype=float), axis=-1)
    rank_y = rankdata(np.asarray(y, dtype=float), axis=-1)
    rank_x -= rank_x.mean(axis=-1, keepdims=True)
    rank_y -= rank_y.mean(axis=-1, keepdims=True)
    norm = np.sqrt((rank_x**2).sum(axis=-1) * (rank_y**2).sum(axis=-1))
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = (rank_x * rank_y).sum(axis=-1) / norm
    return np.where(norm > 0, np.clip(rho, -1.0, 1.0), np.nan)


def bootstrap_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """``resamples`` rows of ``n`` indices drawn with replacement, seeded (``numpy``'s PCG64)."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    defined = values[~np.isnan(values)]
    # Too few defined resamples to place the tails: no interval rather than a made-up one.
    if defined.size < max(10, 0.5 * values.size):
        return math.nan, math.nan
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(defined, [tail, 100 - tail])
    return float(low), float(high)


def rank_correlation(
    x: Sequence[float],
    y: Sequence[float],
    *,
    resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> RankCorrelation:
    """Kendall's tau and Spearman's rho of ``x`` against ``y``, with percentile bootstrap
    intervals over ``resamples`` resamples of the pairs, seeded by ``seed``.

    Pairs where either value is missing (None or NaN) are left out. With fewer than 3 pairs every
    figure is NaN: two points always agree or disagree perfectly, which says nothing.

    Raises:
        ResultsError: ``x`` and ``y`` differ in length, ``resamples`` is below 100, or
            ``confidence`` is not in (0, 1).
    """
    if len(x) != len(y):
        raise ResultsError(f"x and y must pair the same nets, got {len(x)} and {len(y)} values")
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 100:
        raise ResultsError(f"resamples must be an integer of at least 100, got {resamples!r}")
    if not 0.0 < confidence < 1.0:
        raise ResultsError(f"confidence must be in (0, 1), got {confidence!r}")
    pairs = np.array(
        [(a, b) for a, b in zip(x, y, strict=True) if a is not None and b is not None],
        dtype=float,
    ).reshape(-1, 2)
    pairs = pairs[~np.isnan(pairs).any(axis=1)]
    n = len(pairs)
    if n < 3:
        nan = math.nan
        return RankCorrelation(n, nan, nan, nan, nan, nan, nan, confidence, resamples)
    xs, ys = pairs[:, 0], pairs[:, 1]
    indices = bootstrap_indices(n, resamples, seed)
    taus, rhos = np.empty(resamples), np.empty(resamples)
    step = max(1, _CHUNK_ENTRIES // (n * n))
    for start in range(0, resamples, step):
        chunk = indices[start : start + step]
        taus[start : start + step] = kendall_tau(xs[chunk], ys[chunk])
        rhos[start : start + step] = spearman_rho(xs[chunk], ys[chunk])
    return RankCorrelation(
        n,
        float(kendall_tau(xs, ys)),
        *_interval(taus, confidence),
        float(spearman_rho(xs, ys)),
        *_interval(rhos, confidence),
        confidence,
        resamples,
    )
