"""Length-controlled win rate: the judge's preference predicted at equal answer lengths.

LLM judges prefer longer answers. AlpacaEval 2 (Dubois et al. 2024, "Length-Controlled
AlpacaEval") fits a logistic regression of each judgement on the length difference between the
two answers and reports the win rate the fit predicts at a length difference of zero. This module
does the same with numpy alone (medsft.metrics stays light), adapted to pairs judged in both
answer orders and made robust to one system being longer in most pairs:

- the response is each pair's outcome after the position swap (win 1, tie or inconsistent 0.5,
  loss 0; a tie is a fractional target of the logistic likelihood), so position bias is removed
  before the regression;
- logit P(A preferred) = theta + the length terms, three of them, because judges follow length
  in different ways and a model with only one of them mistakes the others for a preference:
  AlpacaEval's tanh(length difference / its standard deviation) (characters), the same of the log
  length ratio (how much longer, relatively), and the sign of the difference (a judge that picks
  the longer answer however small the difference). All are 0 at equal lengths, so the
  length-controlled rate is sigmoid(theta);
- the fit is Firth's penalised likelihood (the Jeffreys prior), not a ridge on the length terms:
  a ridge shrinks them toward 0 and, when one system is longer in most pairs, moves the length
  effect into theta (issue 26: a judge that only preferred the longer answer, longer in 87 of 100
  pairs, read 0.71 [0.61, 0.82] that way). Firth's penalty keeps every fit finite and removes most of the small-
  sample bias instead of adding one;
- the interval is a seeded percentile bootstrap over pairs (the fit repeated on each resample,
  all resamples at once; the length scales stay those of the full set).

Not every set of pairs can say what happens at equal lengths, and then no rate is given
(`estimate` None, the `reason` saying why) rather than an extrapolation:

- too few pairs on one side: A's answer must be the longer one in at least `MIN_SIDE_PAIRS`
  pairs, and the shorter one in as many (pairs of equal length count on both sides);
- verdicts that follow length on one side of equal length at least: the longer answer won every
  pair where A's answer is longer, or every pair where it is shorter, and most of the others
  (or the shorter answer did). Such a judge may have any preference at equal lengths; the pairs
  cannot show it, and a fit would read it from the penalty (its logit on the unanimous side has
  no bound).

Beside the fit, `similar_length` is a check that assumes no model: the win rate on the pairs whose
answers differ by at most `SIMILAR_LENGTH` of the longer one, with pairs where A is longer and
pairs where A is shorter weighing half each (a judge that picks the longer answer then scores 0.5
however lopsided the lengths are), and its n.

`benchmarks/length_control_coverage.py` measures how often the intervals hold the truth for
simulated judges (pure-length, length-blind, both) at several shares of pairs where one system
is longer, at 100 and 400 pairs.

AlpacaEval's GLM also holds a per-instruction difficulty term learned across many models; with
two systems there is nothing to learn it from, so it is left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medsft.metrics.stats import Interval, resample_counts

MIN_SIDE_PAIRS = 10
"""Least number of pairs where A's answer is longer, and where it is shorter (or equal)."""
SIMILAR_LENGTH = 0.1
"""Pairs of similar length differ by at most this share of the longer answer's length."""
FEATURES = ("length difference", "length ratio", "longer")
"""The length terms of the fit, in the order of `LengthControlled.coefficients`."""


@dataclass(frozen=True)
class SimilarLength:
    """The win rate on pairs of similar length: a check on the fit that assumes no model."""

    max_difference: float
    """Pairs whose lengths differ by at most this share of the longer answer (0.1 = 10%)."""
    n: int
    """Pairs of similar length."""
    n_longer: int
    """Of them, pairs where A's answer is longer."""
    n_shorter: int
    """Pairs where A's answer is shorter."""
    n_equal: int
    """Pairs of exactly equal length (counted on both sides)."""
    win_rate: float | None
    """A's win rate on them, A-longer and A-shorter pairs weighing half each; None: `reason`."""
    interval: Interval | None
    """Bootstrap interval of `win_rate` over all pairs."""
    reason: str | None = None
    """Why there is no rate."""


@dataclass(frozen=True)
class LengthControlled:
    """A length-controlled win rate with its interval, the fitted length terms and the check."""

    estimate: float | None
    """Win rate predicted at zero length difference (0-1); None when it cannot be (`reason`)."""
    interval: Interval | None
    """Bootstrap interval of `estimate` over pairs; None when not asked for or not estimated."""
    length_coefficient: float | None
    """Logit change per unit of tanh(length difference / `length_scale`): AlpacaEval's length
    term (0 = none); None when not fitted."""
    length_scale: float
    """The standard deviation of the length difference (characters) the first term divides by."""
    reason: str | None = None
    """Why there is no estimate."""
    n_longer: int = 0
    """Pairs where A's answer is the longer one."""
    n_shorter: int = 0
    """Pairs where A's answer is the shorter one."""
    n_equal: int = 0
    """Pairs of equal length."""
    coefficients: dict[str, float] | None = None
    """Every fitted length term by name (`FEATURES`); None when not fitted."""
    similar_length: SimilarLength | None = None
    """The win rate on pairs of similar length (see the module docstring)."""
    note: str = ""
    """One sentence for a report: the lengths, and why there is no estimate when there is none."""


def length_features(
    lengths_a: Sequence[float], lengths_b: Sequence[float]
) -> tuple[np.ndarray, float]:
    """The length terms of each pair (columns of `FEATURES`; a column without variation is all
    0), and the standard deviation of the length difference.

    Args:
        lengths_a: system A's answer lengths.
        lengths_b: system B's answer lengths, aligned with `lengths_a`.
    """
    a, b = np.asarray(lengths_a, dtype=float), np.asarray(lengths_b, dtype=float)
    delta, ratio = a - b, np.log((a + 1) / (b + 1))
    scale = float(delta.std())
    columns = []
    for x in (delta, ratio):
        sd = float(x.std())
        columns.append(np.tanh(x / sd) if sd > 0 else np.zeros_like(x))
    columns.append(np.sign(delta))
    return np.column_stack(columns), scale


def fit_firth(
    design: np.ndarray,
    outcome: np.ndarray,
    weights: np.ndarray | None = None,
    start: np.ndarray | None = None,
) -> np.ndarray:
    """Coefficients of logit P(A preferred) = design @ beta, by Firth's penalised likelihood.

    Newton's method on the modified score X'(w(y - p) + h(1/2 - p)), h the hat values, for many
    weightings at once (a bootstrap's resample counts).

    Args:
        design: (n, k) columns, the first all ones (the intercept).
        outcome: (n,) each pair's outcome for A in [0, 1] (ties 0.5).
        weights: (B, n) how often each pair counts in each of B fits; None: one fit, each once.
        start: (k,) coefficients to start from (a bootstrap starts from the full fit's); None: 0.

    Returns:
        (B, k) coefficients ((1, k) when `weights` is None).
    """
    n, k = design.shape
    w = np.ones((1, n)) if weights is None else np.asarray(weights, dtype=float)
    beta = np.zeros((w.shape[0], k)) if start is None else np.tile(start, (w.shape[0], 1))
    # Each pair's outer product x x', flattened: information and hat values become matrix
    # products over pairs (BLAS) rather than a (B, n, k, k) einsum.
    outer = (design[:, :, None] * design[:, None, :]).reshape(n, k * k)
    # A whisker of ridge keeps a resample without one kind of pair (a constant column) solvable.
    ridge = 1e-8 * np.eye(k)
    active = np.arange(len(beta))  # the fits still moving
    for _ in range(100):
        b, wa = beta[active], w[active]
        p = 1 / (1 + np.exp(-(b @ design.T)))
        wp = wa * p * (1 - p)
        info_inv = np.linalg.inv((wp @ outer).reshape(-1, k, k) + ridge)
        hat = wp * (info_inv.reshape(-1, k * k) @ outer.T)
        score = (wa * (outcome - p) + hat * (0.5 - p)) @ design
        step = np.einsum("bij,bj->bi", info_inv, score)
        # Limit a step to 5 logits: the first steps of a nearly separated fit overshoot.
        size = np.abs(step).max(axis=1, keepdims=True)
        beta[active] = b + step * np.minimum(1.0, 5.0 / np.maximum(size, 1e-12))
        # 1e-6 logits is far below any reported digit; Firth's Newton steps converge linearly.
        active = active[size[:, 0] >= 1e-6]
        if not len(active):
            break
    return beta


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def similar_length_win_rate(
    outcomes: Sequence[float],
    lengths_a: Sequence[float],
    lengths_b: Sequence[float],
    *,
    max_difference: float = SIMILAR_LENGTH,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    confidence: bool = True,
) -> SimilarLength:
    """A's win rate on the pairs of similar length, A-longer and A-shorter pairs weighing half
    each (see the module docstring).

    Args:
        outcomes: each judged pair's outcome for A: 1 win, 0.5 tie, 0 loss.
        lengths_a: A's answer length in each pair (characters).
        lengths_b: B's answer length in each pair.
        max_difference: similar = lengths differ by at most this share of the longer one.
        n_resamples: bootstrap resamples of the interval.
        level: coverage of the interval.
        seed: bootstrap seed.
        confidence: compute the bootstrap interval.
    """
    y = np.asarray(outcomes, dtype=float)
    a, b = np.asarray(lengths_a, dtype=float), np.asarray(lengths_b, dtype=float)
    band = np.abs(a - b) <= max_difference * np.maximum(a, b)
    longer, shorter, equal = band & (a > b), band & (a < b), band & (a == b)
    sides = (longer | equal, shorter | equal)
    counts = dict(
        max_difference=max_difference,
        n=int(band.sum()),
        n_longer=int(longer.sum()),
        n_shorter=int(shorter.sum()),
        n_equal=int(equal.sum()),
    )
    if not all(side.any() for side in sides):
        side = "longer" if not sides[0].any() else "shorter"
        reason = (
            f"no pair of similar length (within {max_difference:.0%}) where A's answer is {side}"
        )
        return SimilarLength(**counts, win_rate=None, interval=None, reason=reason)

    def rate(w: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            halves = [(w * y * side).sum(1) / (w * side).sum(1) for side in sides]
        return (halves[0] + halves[1]) / 2

    estimate = float(rate(np.ones((1, len(y))))[0])
    interval = None
    if confidence:
        resampled = rate(resample_counts(len(y), n_resamples, seed))
        # A resample without one side has no rate; the interval is of those that have one.
        low, high = np.nanquantile(resampled, [(1 - level) / 2, (1 + level) / 2])
        interval = Interval(estimate, float(low), float(high), level, n_resamples, seed)
    return SimilarLength(**counts, win_rate=estimate, interval=interval)


def _similar_note(similar: SimilarLength) -> str:
    """The similar-length check as a sentence of the note."""
    within = f"within {similar.max_difference:.0%} of each other's length"
    if similar.win_rate is None:
        return f"Pairs {within}: {similar.n}, no rate ({similar.reason})."
    interval = similar.interval
    bounds = f" [{interval.low:.2f}, {interval.high:.2f}]" if interval else ""
    return (
        f"On the {similar.n} pairs {within} ({similar.n_longer} with A longer, "
        f"{similar.n_shorter} shorter, {similar.n_equal} equal; each direction weighing half), "
        f"A's win rate is {similar.win_rate:.2f}{bounds}."
    )


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
        confidence: compute the bootstrap intervals.
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
    if min(np.min(lengths_a), np.min(lengths_b)) < 0:
        raise ValueError("answer lengths must be >= 0 (characters)")
    bootstrap = dict(n_resamples=n_resamples, level=level, seed=seed, confidence=confidence)
    similar = similar_length_win_rate(y, lengths_a, lengths_b, **bootstrap)
    features, scale = length_features(lengths_a, lengths_b)
    longer, shorter = features[:, 2] > 0, features[:, 2] < 0
    sides = dict(
        n_longer=int(longer.sum()),
        n_shorter=int(shorter.sum()),
        n_equal=int((~longer & ~shorter).sum()),
    )
    lengths = (
        f"A's answer is longer in {sides['n_longer']} and shorter in {sides['n_shorter']} of "
        f"{len(y)} pairs" + (f" ({sides['n_equal']} of equal length)" if sides["n_equal"] else "")
    )

    def unidentified(why: str) -> LengthControlled:
        reason = f"{lengths}; {why}"
        return LengthControlled(
            None,
            None,
            None,
            scale,
            reason,
            **sides,
            similar_length=similar,
            note=f"No length-controlled rate: {reason}. {_similar_note(similar)}",
        )

    need = MIN_SIDE_PAIRS
    fewest = min(sides["n_longer"], sides["n_shorter"]) + sides["n_equal"]
    if fewest < need:
        return unidentified(
            f"predicting equal lengths needs {need} pairs on each side of equal length "
            f"(longer and shorter, equal ones counting for both); a preference for A and one for "
            f"{'longer' if sides['n_longer'] > sides['n_shorter'] else 'shorter'} answers cannot "
            "be told apart from these lengths"
        )
    for winner, a_longer in (
        (("longer", y), ("shorter", 1 - y)) if longer.any() and shorter.any() else ()
    ):
        # How each pair went for the longer (or shorter) answer, on each side.
        sided = (a_longer[longer], 1 - a_longer[shorter])
        unanimous = [bool((s == 1).all()) for s in sided]
        if all(unanimous):
            return unidentified(
                f"the {winner} answer won every pair of unequal length: the verdicts follow "
                "length alone and say nothing of a preference at equal lengths"
            )
        if any(unanimous) and min(s.mean() for s in sided) > 0.5:
            # One side all one way: its logit is unbounded and the fit's value at equal lengths
            # comes from the penalty, not from the pairs.
            a_side, b_side = (f"{s.mean() * len(s):g} of {len(s)}" for s in sided)
            return unidentified(
                f"the {winner} answer won {a_side} pairs where A's is longer and {b_side} where "
                f"it is shorter: with one side unanimous, the verdicts cannot separate a "
                "preference at equal lengths from one for length"
            )
    used = [i for i in range(features.shape[1]) if features[:, i].std() > 0]
    if y.min() == y.max() or not used:
        # Every pair went one way on both sides of equal length, or every pair is of equal
        # length: the adjusted win rate is the rate at equal lengths.
        value = float(y.mean())
        interval = None
        if confidence:
            means = (resample_counts(len(y), n_resamples, seed) @ y) / len(y)
            low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
            interval = Interval(value, float(low), float(high), level, n_resamples, seed)
        return LengthControlled(
            value,
            interval,
            0.0,
            scale,
            None,
            **sides,
            coefficients=dict.fromkeys(FEATURES, 0.0),
            similar_length=similar,
            note=f"{lengths}. {_similar_note(similar)}",
        )
    design = np.column_stack([np.ones(len(y)), features[:, used]])
    beta = fit_firth(design, y)[0]
    coefficients = dict.fromkeys(FEATURES, 0.0)
    coefficients.update({FEATURES[i]: float(c) for i, c in zip(used, beta[1:], strict=True)})
    estimate = float(_sigmoid(beta[0]))
    interval = None
    if confidence:
        thetas = fit_firth(design, y, resample_counts(len(y), n_resamples, seed), beta)[:, 0]
        low, high = np.quantile(_sigmoid(thetas), [(1 - level) / 2, (1 + level) / 2])
        interval = Interval(estimate, float(low), float(high), level, n_resamples, seed)
    return LengthControlled(
        estimate,
        interval,
        coefficients["length difference"],
        scale,
        None,
        **sides,
        coefficients=coefficients,
        similar_length=similar,
        note=f"{lengths}. {_similar_note(similar)}",
    )
