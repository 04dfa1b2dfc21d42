"""medsft.metrics.stats: seeded percentile bootstrap intervals and the paired bootstrap test."""

from __future__ import annotations

import numpy as np
import pytest

from medsft.metrics.stats import bootstrap_interval, mean_statistic, paired_bootstrap


def test_interval_is_seeded_and_surrounds_the_estimate():
    values = np.random.default_rng(0).normal(50, 10, size=200)
    stat = mean_statistic(values)
    interval = bootstrap_interval(len(values), stat, n_resamples=200, seed=3)
    assert interval.estimate == pytest.approx(values.mean())
    assert interval.low < interval.estimate < interval.high
    # The standard error of a mean of 200 draws with sd 10 is ~0.7: the 95% interval is ~2.8 wide.
    assert 1.5 < interval.high - interval.low < 4.5
    assert bootstrap_interval(len(values), stat, n_resamples=200, seed=3) == interval
    with pytest.raises(ValueError, match="level must be in"):
        bootstrap_interval(10, stat, level=1.0)
    with pytest.raises(ValueError, match="at least one example"):
        bootstrap_interval(0, stat)


def test_paired_test_tells_a_real_difference_from_none():
    rng = np.random.default_rng(1)
    a = rng.normal(60, 5, size=100)
    same = paired_bootstrap(100, mean_statistic(a), mean_statistic(a), n_resamples=200)
    assert same.delta == 0 and same.p_value == 1.0
    better = paired_bootstrap(100, mean_statistic(a + 3), mean_statistic(a), n_resamples=200)
    assert better.delta == pytest.approx(3) and better.p_value == pytest.approx(1 / 201)
