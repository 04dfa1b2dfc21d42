"""Length-controlled win rate: the judge's preference predicted at equal answer lengths.

LLM judges prefer longer answers. AlpacaEval 2 (Dubois et al. 2024, "Length-Controlled
AlpacaEval") fits a logistic regression (a GLM) of each judgement on the length difference between
the two answers, and reports the win rate the fit predicts at a length difference of zero. This
module does the same with numpy alone (no sklearn, statsmodels or scipy: medsft.metrics stays
light), adapted to pairs judged in both answer orders:

- the response is each pair's outcome after the position swap (win 1, tie or inconsistent 0.5,
  loss 0; the share of a tie is a fractional target of the logistic likelihood), so position bias
  is removed before the regression and, with no length effect, the length-controlled rate equals
  the adjusted win rate reported beside it;
- the feature is AlpacaEval's: tanh of the length difference (system A minus system B, in
  characters) divided by its standard deviation over the pairs, which keeps one very long answer
  from dominating the fit;
- logit P(A preferred) = theta + gamma * feature, with an L2 penalty on gamma only (as
  sklearn's default `C=1`), which keeps the fit finite when the judge follows length exactly (the
  outcomes are then perfectly separated by the feature);
- the length-controlled win rate is sigmoid(theta): the prediction at zero length difference.
  Its interval is a seeded percentile bootstrap over pairs (the fit repeated on each resample;
  the length scale stays that of the full set).

The prediction at zero length difference needs pairs on both sides of it: when A's answer is the
longer one in (nearly) every pair, a preference for A and a preference for length cannot be told
apart, and the rate is not reported (`estimate` None, with the `reason`) rather than guessed by
extrapolation. Each side needs `MIN_SIDE_SHARE` of the pairs, and at least two.

AlpacaEval's GLM also holds a per-instruction difficulty term learned across many models; with
two systems there is nothing to learn it from, so it is left out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medsft.metrics.stats import Interval, bootstrap_interval

LENGTH_PENALTY = 1.0
"""L2 penalty on the length coefficient (sklearn's default strength, C = 1)."""
MIN_SIDE_SHARE = 0.05
"""Least share of pairs where A is the longer answer, and where it is the shorter one."""


@dataclass(frozen=True)
class LengthControlled:
    """A length-controlled win rate with its interval and the fitted length effect."""

    estimate: float | None
    """Win rate predicted at zero length difference (0-1); None when it cannot be (`reason`)."""
    interval: Interval | None
    """Bootstrap interval of `estimate` over pairs; None when not asked for or not estimated."""
    length_coefficient: float | None
    """gamma: logit change per unit of tanh(length difference / its std); 0 = no length effect."""
    length_scale: float
    """The standard deviation of the length difference (characters) the feature divides by."""
    reason: str | None = None
    """Why there is no estimate."""


def length_feature(
    lengths_a: Sequence[float], lengths_b: Sequence[float]
) -> tuple[np.ndarray, float]:
    """tanh of the standardised length difference (A - B) of each pair, and the scale used.

    Args:
        lengths_a: system A's answer lengths.
        lengths_b: system B's answer lengths, aligned with `lengths_a`.
    """
    delta = np.asarray(lengths_a, dtype=float) - np.asarray(lengths_b, dtype=float)
    scale = float(delta.std())
    if scale == 0.0:
        return np.zeros_like(delta), 0.0
    return np.tanh(delta / scale), scale


def fit_length_glm(
    feature: np.ndarray, outcome: np.ndarray, penalty: float = LENGTH_PENALTY
) -> tuple[float, float]:
    """(theta, gamma) of logit P(A preferred) = theta + gamma * feature, by Newton's method.

    Args:
        feature: the length feature of each pair (`length_feature`).
        outcome: each pair's outcome for A in [0, 1] (ties 0.5).
        penalty: L2 penalty on gamma.
    """
    mean = float(outcome.mean())
    if mean in (0.0, 1.0):
        # Every pair went one way: the intercept is infinite, the prediction is that outcome.
        return (np.inf if mean else -np.inf), 0.0
    design = np.column_stack([np.ones_like(feature), feature])
    ridge = np.diag([0.0, penalty])
    coef = np.array([np.log(mean / (1 - mean)), 0.0])
    for _ in range(100):
        p = 1 / (1 + np.exp(-(design @ coef)))
        gradient = design.T @ (p - outcome) + ridge @ coef
        hessian = (design * (p * (1 - p))[:, None]).T @ design + ridge
        # A tiny ridge on the intercept's diagonal keeps a near-separated fit solvable.
        step = np.linalg.solve(hessian + 1e-9 * np.eye(2), gradient)
        coef -= step
        if np.abs(step).max() < 1e-10:
            break
    return float(coef[0]), float(coef[1])


def _sigmoid(x: float) -> float:
    return float(1 / (1 + np.exp(-x))) if np.isfinite(x) else float(x > 0)


def length_controlled_win_rate(
    outcomes: Sequence[float],
    lengths_a: Sequence[float],
    lengths_b: Sequence[float],
    *,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    confidence: bool = True,
) -> LengthControlled:
    """A's win rate over B predicted at equal answer lengths (see the module docstring).

    Args:
        outcomes: each judged pair's outcome for A: 1 win, 0.5 tie, 0 loss.
        lengths_a: A's answer length in each pair (characters).
        lengths_b: B's answer length in each pair.
        n_resamples: bootstrap resamples of the interval.
        level: coverage of the interval.
        seed: bootstrap seed.
        confidence: compute the bootstrap interval.
    """
    y = np.asarray(outcomes, dtype=float)
    if not len(y) == len(lengths_a) == len(lengths_b):
        raise ValueError(
            f"outcomes, lengths_a and lengths_b differ in length: "
            f"{len(y)}, {len(lengths_a)}, {len(lengths_b)}"
        )
    if not len(y):
        raise ValueError("no judged pairs: a length-controlled win rate needs at least one")
    if ((y < 0) | (y > 1)).any():
        raise ValueError("outcomes must lie in [0, 1] (win 1, tie 0.5, loss 0)")
    feature, scale = length_feature(lengths_a, lengths_b)
    need = max(2, math.ceil(MIN_SIDE_SHARE * len(y)))
    longer, shorter = int((feature > 0).sum()), int((feature < 0).sum())
    if scale > 0 and min(longer, shorter) < need:
        reason = (
            f"A's answer is longer in {longer} and shorter in {shorter} of {len(y)} pairs; "
            f"predicting equal lengths needs {need} on each side"
        )
        return LengthControlled(None, None, None, scale, reason)

    def statistic(idx: np.ndarray) -> float:
        return _sigmoid(fit_length_glm(feature[idx], y[idx])[0])

    theta, gamma = fit_length_glm(feature, y)
    interval = None
    if confidence:
        interval = bootstrap_interval(
            len(y), statistic, n_resamples=n_resamples, level=level, seed=seed
        )
    return LengthControlled(_sigmoid(theta), interval, gamma, scale)
