"""Statistics for aggregating transfer results over many student-teacher pairs.

Pure functions on plain numbers: success rates with Wilson intervals, bootstrap intervals of a
mean (optionally resampling whole clusters, e.g. all pairs of one student, because pairs that
share a student are not independent) and a rank correlation.
"""
from __future__ import annotations

import math
import random
from typing import Hashable, Sequence

# Conventional two-sided level: a pair's change is significant when McNemar's p is below it.
SIGNIFICANCE = 0.05
Z95 = 1.959963984540054  # standard normal quantile for a 95% two-sided interval


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion, as fractions in [0, 1].

    Better than the normal approximation for small n and for rates near 0 or 1
    (e.g. 56 of 56 successes still gets a lower bound below 1).
    """
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


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

    With ``clusters``, whole clusters are resampled (a cluster bootstrap): the right thing when
    values within a cluster are correlated, as the 7 pairs of one student are. Seeded, so the
    report is reproducible to the digit.
    """
    if not values:
        return (float('nan'), float('nan'))
    rng = random.Random(seed)
    if clusters is None:
        groups = [[v] for v in values]
    else:
        by_cluster: dict = {}
        for v, c in zip(values, clusters):
            by_cluster.setdefault(c, []).append(v)
        groups = list(by_cluster.values())
    k = len(groups)
    means = []
    for _ in range(resamples):
        total, count = 0.0, 0
        for _ in range(k):
            g = groups[rng.randrange(k)]
            total += sum(g)
            count += len(g)
        means.append(total / count)
    means.sort()
    lo = means[int(math.floor((1 - level) / 2 * (resamples - 1)))]
    hi = means[int(math.ceil((1 + level) / 2 * (resamples - 1)))]
    return (lo, hi)


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    def ranks(v):
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2.0 + 1
            i = j + 1
        return r
    rx, ry = ranks(x), ranks(y)
    mx, my = mean(rx), mean(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else float('nan')

