"""Aggregation statistics against hand computations."""
import math

import pytest

from timm_gkt.report.stats import bootstrap_mean_ci, mean, spearman, wilson_interval


def test_wilson_interval_matches_the_formula_by_hand():
    # 1 of 2: centre 0.5, half-width 1.96 * sqrt(0.125 + 1.96^2/16) / (1 + 1.96^2/2)
    lo, hi = wilson_interval(1, 2)
    z2 = 1.959963984540054 ** 2
    half = math.sqrt(z2) * math.sqrt(0.125 + z2 / 16) / (1 + z2 / 2)
    assert lo == pytest.approx(0.5 - half, abs=1e-12) and hi == pytest.approx(0.5 + half, abs=1e-12)
    assert lo == pytest.approx(0.0945, abs=1e-4)


def test_wilson_interval_of_all_successes_stays_below_one():
    lo, hi = wilson_interval(56, 56)
    assert hi == 1.0
    assert lo == pytest.approx(0.9358, abs=1e-4)  # n / (n + z^2) for p = 1
    assert wilson_interval(0, 10)[0] == 0.0


def test_bootstrap_interval_resamples_whole_clusters():
    # two clusters with means 0.25 and -0.05: a cluster resample can only give -0.05, 0.10 or 0.25
    lo, hi = bootstrap_mean_ci([0.25, -0.05], clusters=['a', 'b'], resamples=2000)
    assert (lo, hi) == (pytest.approx(-0.05), pytest.approx(0.25))
    # unequal cluster sizes weight pairs, not clusters: cluster a (3 values of 1) and b (1 value of 0)
    lo, hi = bootstrap_mean_ci([1, 1, 1, 0], clusters=['a', 'a', 'a', 'b'], resamples=2000)
    assert lo == pytest.approx(0.0) and hi == pytest.approx(1.0)
    # the middle of the resamples is {a, b}: 3 of its 4 pairs are 1, so 0.75 (averaging the two clusters' means
    # instead, the wrong weighting, would give 0.5)
    assert bootstrap_mean_ci([1, 1, 1, 0], clusters=['a', 'a', 'a', 'b'], level=0.2, resamples=4000) == \
        (pytest.approx(0.75), pytest.approx(0.75))


def test_bootstrap_is_reproducible_and_brackets_the_mean():
    values = [0.1 * i for i in range(20)]
    a = bootstrap_mean_ci(values, seed=3)
    assert a == bootstrap_mean_ci(values, seed=3)
    assert a[0] < mean(values) < a[1]


def test_spearman_on_ranks_and_ties():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ties get average ranks: x ranks 1.5 1.5 3, y ranks 1 2 3 -> r = 0.866
    assert spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(math.sqrt(3) / 2)
