"""medsft.metrics.length_control against simulated judges judged in both answer orders."""

from __future__ import annotations

import numpy as np
import pytest

from medsft.metrics.length_control import fit_length_glm, length_controlled_win_rate


def _simulate(seed: int, quality: float, per_char: float, n: int = 400):
    """Pairs where A's answers run ~60 characters longer than B's; each order's verdict for A is
    drawn with logit = quality + per_char * (len A - len B); the pair's outcome follows the
    position-swap convention (both orders agree: win/loss; otherwise tie)."""
    rng = np.random.default_rng(seed)
    len_a, len_b = rng.normal(260, 60, n).round(), rng.normal(200, 60, n).round()
    p = 1 / (1 + np.exp(-(quality + per_char * (len_a - len_b))))
    ab, ba = rng.random(n) < p, rng.random(n) < p
    outcome = np.where(ab & ba, 1.0, np.where(~ab & ~ba, 0.0, 0.5))
    return outcome, len_a, len_b


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_judge_that_only_prefers_longer_answers_gets_about_half(seed: int) -> None:
    outcome, len_a, len_b = _simulate(seed, quality=0.0, per_char=1 / 25)
    result = length_controlled_win_rate(outcome, len_a, len_b, n_resamples=300, seed=seed)
    assert outcome.mean() > 0.68  # the raw rate rewards A's length
    assert abs(result.estimate - 0.5) < 0.08
    assert result.interval.low < 0.5 < result.interval.high
    assert result.length_coefficient > 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_real_quality_preference_is_kept(seed: int) -> None:
    # A judge that prefers A 4 times in 5 whatever the lengths.
    outcome, len_a, len_b = _simulate(seed, quality=np.log(4), per_char=0.0)
    result = length_controlled_win_rate(outcome, len_a, len_b, n_resamples=300, seed=seed)
    assert abs(result.estimate - outcome.mean()) < 0.03
    assert 0.74 < result.estimate < 0.86 and result.interval.low > 0.7
    assert abs(result.length_coefficient) < 0.5


def test_quality_and_length_together_leave_the_quality() -> None:
    # Preference at equal lengths: sigmoid(1) = 0.73; the raw rate adds the length bias.
    outcome, len_a, len_b = _simulate(3, quality=1.0, per_char=1 / 25, n=1000)
    result = length_controlled_win_rate(outcome, len_a, len_b, confidence=False)
    assert outcome.mean() > 0.78 and abs(result.estimate - 0.731) < 0.05
    assert result.interval is None


def test_without_a_length_difference_it_is_the_adjusted_win_rate() -> None:
    outcome = np.array([1, 1, 0.5, 0, 1, 0.5, 1, 0])
    result = length_controlled_win_rate(outcome, [10] * 8, [10] * 8, n_resamples=50)
    assert result.estimate == pytest.approx(outcome.mean()) and result.length_scale == 0.0
    every = length_controlled_win_rate([1] * 4, [5, 3, 1, 1], [1, 2, 4, 5], confidence=False)
    assert every.estimate == 1.0  # A won every pair, longer or shorter


def test_the_fit_is_the_penalised_maximum_likelihood() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, 200)
    y = (rng.random(200) < 1 / (1 + np.exp(-(0.4 + 1.5 * x)))).astype(float)
    theta, gamma = fit_length_glm(x, y, penalty=1.0)
    p = 1 / (1 + np.exp(-(theta + gamma * x)))
    # The gradient of the penalised log-likelihood vanishes at the returned coefficients.
    assert abs(np.sum(p - y)) < 1e-8 and abs(np.sum((p - y) * x) + gamma) < 1e-8


def test_bad_input_names_the_problem() -> None:
    with pytest.raises(ValueError, match="differ in length: 2, 2, 1"):
        length_controlled_win_rate([1, 0], [1, 2], [1])
    with pytest.raises(ValueError, match="no judged pairs"):
        length_controlled_win_rate([], [], [])
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        length_controlled_win_rate([2], [1], [1])


def test_no_estimate_when_one_system_is_longer_in_nearly_every_pair() -> None:
    # Outcomes that a length-only judge and a quality judge would both give: nothing to tell
    # them apart, so no extrapolated guess.
    outcome = np.ones(40)
    len_a, len_b = np.full(40, 300.0), np.arange(40.0)
    len_b[0] = 400  # one pair the other way is not enough (5% of 40 = 2)
    result = length_controlled_win_rate(outcome, len_a, len_b)
    assert result.estimate is None and result.interval is None
    assert result.reason == (
        "A's answer is longer in 39 and shorter in 1 of 40 pairs; predicting equal lengths "
        "needs 2 on each side"
    )
