"""Seeded bootstrap statistics shared by the text metrics and the judge.

Both functions resample *example indices* and hand each resample to a caller-supplied statistic,
so a corpus-level score (BLEU is not a mean of sentence BLEUs) is recomputed on every resample,
as `sacrebleu --confidence` and `--paired-bs` do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

Statistic = Callable[[np.ndarray], float]
"""Maps an array of example indices (with repeats) to a corpus score."""


@dataclass(frozen=True)
class Interval:
    """A bootstrap confidence interval around a point estimate."""

    estimate: float
    low: float
    high: float
    level: float = 0.95
    n_resamples: int = 1000
    seed: int = 0

    def __str__(self) -> str:
        return f"{self.estimate:.2f} [{self.low:.2f}, {self.high:.2f}]"


def _indices(n: int, n_resamples: int, seed: int) -> np.ndarray:
    if n <= 0:
        raise ValueError("bootstrap needs at least one example")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))


def resample_counts(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, n): how often each of `n` examples is drawn in each bootstrap resample, the
    resamples `bootstrap_interval` draws with the same seed (for statistics computed on all
    resamples at once, as weights).

    Args:
        n: number of examples.
        n_resamples: bootstrap resamples.
        seed: RNG seed.
    """
    idx = _indices(n, n_resamples, seed)
    counts = np.zeros((n_resamples, n))
    np.add.at(counts, (np.arange(n_resamples)[:, None], idx), 1)
    return counts


def bootstrap_interval(
    n: int,
    statistic: Statistic,
    *,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap interval of `statistic` over `n` examples.

    Args:
        n: number of examples.
        statistic: corpus score of a resample, given its example indices.
        n_resamples: bootstrap resamples (sacrebleu uses 1000).
        level: coverage of the interval, e.g. 0.95.
        seed: RNG seed, so intervals are reproducible.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    resamples = _indices(n, n_resamples, seed)  # checks n and n_resamples first
    estimate = float(statistic(np.arange(n)))
    scores = np.array([statistic(idx) for idx in resamples])
    alpha = (1 - level) / 2
    low, high = np.quantile(scores, [alpha, 1 - alpha])
    return Interval(estimate, float(low), float(high), level, n_resamples, seed)


@dataclass(frozen=True)
class PairedTest:
    """Paired bootstrap test of system A against system B on the same references."""

    delta: float
    """score(A) - score(B) on the full set."""
    p_value: float
    """Two-sided p-value of 'A and B score the same', from the centred bootstrap deltas."""
    n_resamples: int
    seed: int


def paired_bootstrap(
    n: int,
    statistic_a: Statistic,
    statistic_b: Statistic,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
) -> PairedTest:
    """Paired bootstrap resampling (Koehn 2004), as `sacrebleu --paired-bs`.

    Both systems are scored on the *same* resampled indices. The p-value follows sacrebleu: the
    share of resamples whose (centred) difference is at least as extreme as the observed one,
    i.e. `(count(|d_i - mean(d)| >= |d_obs|) + 1) / (n_resamples + 1)`.
    """
    full = np.arange(n)
    observed = float(statistic_a(full) - statistic_b(full))
    deltas = np.array(
        [statistic_a(idx) - statistic_b(idx) for idx in _indices(n, n_resamples, seed)]
    )
    centred = np.abs(deltas - deltas.mean())
    p = (np.sum(centred >= abs(observed)) + 1) / (n_resamples + 1)
    return PairedTest(observed, float(p), n_resamples, seed)


def mean_statistic(values: Sequence[float]) -> Statistic:
    """Statistic for per-example scores whose corpus score is their mean."""
    arr = np.asarray(values, dtype=float)
    return lambda idx: float(arr[idx].mean())
