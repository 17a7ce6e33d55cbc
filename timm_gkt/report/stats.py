"""Statistics of transfer results, from scipy and numpy: McNemar's exact test for one pair, and over many pairs
success rates with Wilson intervals, bootstrap intervals of a mean (optionally resampling whole clusters, e.g.
all pairs of one student, because pairs that share a student are not independent) and a rank correlation.
"""
from __future__ import annotations

import math
import random
import warnings
from typing import Hashable, Sequence

import numpy as np

# Conventional two-sided level: a pair's change is significant when McNemar's p is below it.
SIGNIFICANCE = 0.05


def mcnemar_p_value(gains: int, losses: int) -> float:
    """Exact two-sided McNemar test: how likely a split of the ``gains + losses`` changed images at least this
    uneven is when a change is as likely to be a gain as a loss (binomial, p = 0.5)."""
    from scipy.stats import binomtest
    n = gains + losses
    if n == 0:
        return 1.0
    return float(binomtest(min(gains, losses), n, 0.5).pvalue)


def below_chance_p_value(successes: int, n: int, chance: float) -> float:
    """One-sided binomial test: how likely this few successes in ``n`` are when each succeeds with ``chance``."""
    from scipy.stats import binomtest
    return float(binomtest(successes, n, chance, alternative='less').pvalue) if n > 0 else 1.0


def wilson_interval(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion, as fractions in [0, 1].

    Better than the normal approximation for small n and for rates near 0 or 1
    (e.g. 56 of 56 successes still gets a lower bound below 1).
    """
    from scipy.stats import binomtest
    if n <= 0:
        return (0.0, 1.0)
    ci = binomtest(successes, n).proportion_ci(confidence_level=level, method='wilson')
    return (max(0.0, float(ci.low)), min(1.0, float(ci.high)))


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float('nan')


def bootstrap_mean_ci(
        values: Sequence[float],
        clusters: Sequence[Hashable] | None = None,
        level: float = 0.95,
        resamples: int = 10000,
        seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values``.

    With ``clusters``, whole clusters are resampled (a cluster bootstrap): the right thing when values within a
    cluster are correlated, as the 7 pairs of one student are. A resample's mean is the sum of its clusters'
    sums over the sum of their sizes, so clusters of different sizes weigh by their pairs. Vectorised and
    seeded, so the report is reproducible to the digit.
    """
    if not values:
        return (float('nan'), float('nan'))
    values = np.asarray(values, dtype=float)
    if clusters is None:
        sums, sizes = values, np.ones_like(values)
    else:
        order = list(dict.fromkeys(clusters))  # clusters in order of first appearance
        index = np.array([order.index(c) for c in clusters])
        sums, sizes = np.bincount(index, weights=values), np.bincount(index).astype(float)
    # the draws come from Python's seeded generator (one index per cluster and resample, in that order), so the
    # intervals are those of the loop this replaced, to the digit; the arithmetic on them is numpy's
    draw, k = random.Random(seed).randrange, len(sums)
    picks = np.array([draw(k) for _ in range(resamples * k)]).reshape(resamples, k)
    means = np.sort(sums[picks].sum(axis=1) / sizes[picks].sum(axis=1))
    lo = means[int(math.floor((1 - level) / 2 * (resamples - 1)))]
    hi = means[int(math.ceil((1 + level) / 2 * (resamples - 1)))]
    return (float(lo), float(hi))


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties); NaN when either side is constant."""
    from scipy.stats import spearmanr
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # a constant input: the correlation is undefined, and NaN says so
        return float(spearmanr(x, y).statistic)
