"""medsft.metrics.length_control against simulated judges judged in both answer orders."""

from __future__ import annotations

import json
import subprocess
import sys
from statistics import NormalDist

import numpy as np
import pytest

from medsft.metrics.length_control import (
    fit_firth,
    length_controlled_win_rate,
    length_features,
    similar_length_win_rate,
)
from tests.conftest import ROOT


def _outcomes(rng: np.random.Generator, p: np.ndarray) -> np.ndarray:
    """Each order's verdict for A drawn with probability p; the pair's outcome follows the
    position-swap convention (both orders agree: win/loss; otherwise tie)."""
    ab, ba = rng.random(len(p)) < p, rng.random(len(p)) < p
    return np.where(ab & ba, 1.0, np.where(~ab & ~ba, 0.0, 0.5))


def _simulate(seed: int, quality: float, per_char: float, n: int = 400, share: float = 0.84):
    """Pairs where A's answer is the longer one in `share` of them (B's lengths log-normal around
    250 characters); logit P(A preferred) = quality + per_char * (len A - len B)."""
    rng = np.random.default_rng(seed)
    len_b = np.exp(rng.normal(np.log(250), 0.5, n)).round()
    len_a = (len_b * np.exp(rng.normal(NormalDist().inv_cdf(share) * 0.5, 0.5, n))).round()
    p = 1 / (1 + np.exp(-(quality + per_char * (len_a - len_b))))
    return _outcomes(rng, p), len_a, len_b


@pytest.mark.parametrize(("share", "seed"), [(0.5, 0), (0.7, 1), (0.87, 2), (0.87, 3), (0.95, 4)])
def test_a_judge_that_only_prefers_longer_answers_gets_about_half(share: float, seed: int) -> None:
    outcome, len_a, len_b = _simulate(seed, quality=0.0, per_char=1 / 25, share=share)
    result = length_controlled_win_rate(outcome, len_a, len_b, n_resamples=300, seed=seed)
    assert outcome.mean() > share - 0.06  # the raw rate rewards A's length
    assert abs(result.estimate - 0.5) < 0.1
    assert result.interval.low < 0.5 < result.interval.high
    assert result.coefficients["longer"] + result.coefficients["length difference"] > 1
    assert result.similar_length.interval.low < 0.5 < result.similar_length.interval.high


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_real_quality_preference_is_kept(seed: int) -> None:
    # A judge that prefers A 4 times in 5 whatever the lengths.
    outcome, len_a, len_b = _simulate(seed, quality=np.log(4), per_char=0.0)
    result = length_controlled_win_rate(outcome, len_a, len_b, n_resamples=300, seed=seed)
    assert abs(result.estimate - outcome.mean()) < 0.05
    assert 0.72 < result.estimate < 0.88 and result.interval.low < 0.8 < result.interval.high
    assert result.interval.low > 0.65


def test_quality_and_length_together_leave_the_quality() -> None:
    # Preference at equal lengths: sigmoid(1) = 0.73; the raw rate adds the length bias.
    outcome, len_a, len_b = _simulate(3, quality=1.0, per_char=1 / 50, n=1000)
    result = length_controlled_win_rate(outcome, len_a, len_b, confidence=False)
    assert outcome.mean() > 0.83 and abs(result.estimate - 0.731) < 0.05
    assert result.interval is None and result.similar_length.interval is None


def test_a_judge_that_always_picks_the_longer_answer_gets_no_rate() -> None:
    # The case: A longer in 87 of 100 pairs, the longer answer wins each one; the old
    # ridge fit said 0.71 [0.61, 0.82].
    rng = np.random.default_rng(0)
    len_b = rng.integers(200, 400, 100).astype(float)
    len_a = len_b + np.where(np.arange(100) < 87, 1, -1) * rng.integers(5, 190, 100)
    outcome = (len_a > len_b).astype(float)
    result = length_controlled_win_rate(outcome, len_a, len_b)
    assert outcome.mean() == 0.87
    assert result.estimate is None and result.interval is None
    assert (result.n_longer, result.n_shorter, result.n_equal) == (87, 13, 0)
    assert "the longer answer won every pair of unequal length" in result.reason
    assert result.reason.startswith("A's answer is longer in 87 and shorter in 13 of 100 pairs; ")
    assert result.note.startswith(f"No length-controlled rate: {result.reason}. ")
    # Model-free, the pairs of similar length show no preference for A.
    assert result.similar_length.win_rate == 0.5 and result.similar_length.n > 0
    assert f"On the {result.similar_length.n} pairs within 10%" in result.note
    # Two slips of the judge: the longer answer still wins every pair on one side.
    outcome[[0, 1]] = 0.0
    slipped = length_controlled_win_rate(outcome, len_a, len_b)
    assert slipped.estimate is None and "85 of 87 pairs where A's is longer" in slipped.reason


def test_a_judge_that_prefers_a_wins_on_both_sides() -> None:
    len_a = np.arange(20.0) + 100
    len_b = np.where(np.arange(20) < 10, 50.0, 300.0)
    every = length_controlled_win_rate(np.ones(20), len_a, len_b, n_resamples=50)
    assert every.estimate == 1.0 and (every.interval.low, every.interval.high) == (1.0, 1.0)


def test_without_a_length_difference_it_is_the_adjusted_win_rate() -> None:
    outcome = np.array([1, 1, 0.5, 0, 1, 0.5, 1, 0] * 2)
    result = length_controlled_win_rate(outcome, [10] * 16, [10] * 16, n_resamples=50)
    assert result.estimate == pytest.approx(outcome.mean()) and result.length_scale == 0.0
    assert result.n_equal == 16 and result.coefficients == dict.fromkeys(result.coefficients, 0.0)


def test_the_fit_is_firths_penalised_maximum_likelihood() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (200, 2))
    design = np.column_stack([np.ones(200), x])
    y = (rng.random(200) < 1 / (1 + np.exp(-(0.4 + x @ [1.5, -0.5])))).astype(float)
    weights = np.stack([np.ones(200), rng.integers(0, 3, 200)])
    for beta, w in zip(fit_firth(design, y, weights), weights, strict=True):
        p = 1 / (1 + np.exp(-(design @ beta)))
        info = (design * (w * p * (1 - p))[:, None]).T @ design
        hat = w * p * (1 - p) * np.einsum("ni,ij,nj->n", design, np.linalg.inv(info), design)
        # Firth's modified score vanishes at the returned coefficients.
        assert np.abs(design.T @ (w * (y - p) + hat * (0.5 - p))).max() < 1e-7
    # Separated outcomes: plain maximum likelihood diverges, Firth's stays finite.
    separated = fit_firth(design, (x[:, 0] > 0).astype(float))
    assert np.isfinite(separated).all()


def test_length_features_are_zero_at_equal_lengths() -> None:
    features, scale = length_features([100, 200, 50, 80], [100, 100, 150, 80])
    assert (features[[0, 3]] == 0).all() and scale > 0
    assert (np.sign(features[1]) == 1).all() and (np.sign(features[2]) == -1).all()


def test_similar_length_pairs_weigh_each_direction_half() -> None:
    # Within 10%: pairs 0-3 (A longer, A longer, A shorter, equal); pair 4 is too far apart.
    outcome = [1.0, 1.0, 0.0, 0.5, 1.0]
    result = similar_length_win_rate(
        outcome, [105, 210, 95, 70, 400], [100, 200, 100, 70, 100], confidence=False
    )
    assert (result.n, result.n_longer, result.n_shorter, result.n_equal) == (4, 2, 1, 1)
    # A longer (or equal): (1 + 1 + 0.5) / 3; A shorter (or equal): (0 + 0.5) / 2.
    assert result.win_rate == pytest.approx((2.5 / 3 + 0.25) / 2)
    one_sided = similar_length_win_rate([1, 1], [105, 210], [100, 200])
    assert one_sided.win_rate is None and "where A's answer is shorter" in one_sided.reason


def test_too_few_pairs_on_one_side_gives_no_rate() -> None:
    outcome = np.ones(40)
    outcome[::3] = 0.5
    len_a, len_b = np.full(40, 300.0), np.arange(40.0)
    len_b[:9] = 400  # 9 pairs the other way: fewer than 10
    result = length_controlled_win_rate(outcome, len_a, len_b)
    assert result.estimate is None and result.interval is None
    assert result.reason.startswith(
        "A's answer is longer in 31 and shorter in 9 of 40 pairs; predicting equal lengths "
        "needs 10 pairs on each side"
    )
    len_b[9] = 400
    assert length_controlled_win_rate(outcome, len_a, len_b, n_resamples=50).estimate is not None


def test_bad_input_names_the_problem() -> None:
    with pytest.raises(ValueError, match="differ in length: 2, 2, 1"):
        length_controlled_win_rate([1, 0], [1, 2], [1])
    with pytest.raises(ValueError, match="no judged pairs"):
        length_controlled_win_rate([], [], [])
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        length_controlled_win_rate([2], [1], [1])
    with pytest.raises(ValueError, match="lengths must be >= 0"):
        length_controlled_win_rate([1], [-1], [1])


def test_the_coverage_benchmark_runs_small(tmp_path) -> None:
    out = tmp_path / "coverage.json"
    judges = ["length: the longer in 80% of orders", "blind: A in 80% of orders"]
    done = subprocess.run(
        [
            sys.executable,
            "benchmarks/length_control_coverage.py",
            *("--runs", "6", "--resamples", "100", "--sizes", "100", "--shares", "0.87"),
            *("--judges", *judges, "--out", str(out)),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    settings = json.loads(out.read_text())["figures"]["settings"]
    assert [(s["judge"], s["pairs"], s["share_a_longer"]) for s in settings] == [
        (judges[0], 100, 0.87),
        (judges[1], 100, 0.87),
    ]
    length, blind = settings
    assert length["raw_mean"] > 0.65 and blind["truth"] == 0.8
    for s in settings:
        assert s["runs"] == 6 and s["holds_truth_or_no_rate"] >= 4 / 6
