"""How often the length-controlled win rate's interval holds the truth, for simulated judges.

    python benchmarks/length_control_coverage.py                     # 100 runs per setting, 500 resamples
    python benchmarks/length_control_coverage.py --runs 20 --resamples 200 --out /tmp/lc.json

Simulated pairs: system B's answer lengths are log-normal (median 250 characters, sigma 0.5),
A's are B's times a log-normal ratio whose median sets the share of pairs where A is longer
(50%, 70%, 87% as HuatuoGPT2-7B against GPT-4, 95%). Each pair is judged in both orders, each
order preferring A with the judge's probability; both orders agreeing make a win or loss,
otherwise a tie (medsft's position-swap convention), so a pair's expected outcome is that
probability. Judges:

- pure length (truth at equal lengths: 0.5): logistic in the character difference (1 logit per
  25 or 100 characters), logistic in the length ratio (3 x log ratio), picks the longer answer in
  80% or 95% of orders, or always;
- length-blind (truth: its preference): prefers A in 80% or 60% of orders whatever the lengths;
- both: logit = 1 + difference / 50 characters (truth sigmoid(1) = 0.73).

For each setting and number of pairs (100, 400): how often `length_controlled_win_rate` gives a
rate at all (else it says why not), how often its 95% interval holds the truth when it does, the
share of runs that either hold the truth or give no rate (the claim: a judge is never misread),
the estimate's mean and spread, |LC - raw| (for length-blind judges: the price of controlling for
length), and the same coverage for the similar-length check. Writes
benchmarks/results/length_control_coverage.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from statistics import NormalDist

import numpy as np
from record import write_result

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARES = (0.5, 0.7, 0.87, 0.95)
SIZES = (100, 400)
SIGMA = 0.5


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def _longer(p: float):
    return lambda d, a, b: np.where(d > 0, p, np.where(d < 0, 1 - p, 0.5))


JUDGES = {
    "length: 1 logit per 25 characters": (lambda d, a, b: _sigmoid(d / 25), 0.5),
    "length: 1 logit per 100 characters": (lambda d, a, b: _sigmoid(d / 100), 0.5),
    "length: 3 x log length ratio": (lambda d, a, b: _sigmoid(3 * np.log(a / b)), 0.5),
    "length: the longer in 80% of orders": (_longer(0.8), 0.5),
    "length: the longer in 95% of orders": (_longer(0.95), 0.5),
    "length: always the longer": (_longer(1.0), 0.5),
    "blind: A in 80% of orders": (lambda d, a, b: np.full(len(d), 0.8), 0.8),
    "blind: A in 60% of orders": (lambda d, a, b: np.full(len(d), 0.6), 0.6),
    "both: logit 1 + difference / 50": (lambda d, a, b: _sigmoid(1 + d / 50), float(_sigmoid(1))),
}
"""name: (P(A preferred in one order) from (difference, len A, len B), the rate at equal lengths)."""


def simulate(rng: np.random.Generator, n: int, share: float, judge) -> tuple[np.ndarray, ...]:
    """(outcomes, lengths A, lengths B) of `n` pairs judged in both orders."""
    len_b = np.exp(rng.normal(np.log(250), SIGMA, n))
    len_a = (len_b * np.exp(rng.normal(NormalDist().inv_cdf(share) * SIGMA, SIGMA, n))).round()
    len_b = len_b.round().clip(1)
    len_a = len_a.clip(1)
    p = judge(len_a - len_b, len_a, len_b)
    ab, ba = rng.random(n) < p, rng.random(n) < p
    return np.where(ab & ba, 1.0, np.where(~ab & ~ba, 0.0, 0.5)), len_a, len_b


def measure(judge, truth: float, n: int, share: float, runs: int, resamples: int, seed: list[int]):
    """The figures of one setting over `runs` simulated sets of pairs."""
    from medsft.metrics.length_control import length_controlled_win_rate

    raw, estimates, held, similar_held, similar_n, similar_given, widths = [], [], 0, 0, [], 0, []
    for run in range(runs):
        rng = np.random.default_rng([*seed, run])
        y, len_a, len_b = simulate(rng, n, share, judge)
        raw.append(float(y.mean()))
        lc = length_controlled_win_rate(y, len_a, len_b, n_resamples=resamples, seed=run)
        if lc.estimate is not None:
            estimates.append((lc.estimate, raw[-1]))
            held += lc.interval.low <= truth <= lc.interval.high
            widths.append(lc.interval.high - lc.interval.low)
        sim = lc.similar_length
        similar_n.append(sim.n)
        if sim.win_rate is not None:
            similar_given += 1
            similar_held += sim.interval.low <= truth <= sim.interval.high
    given = len(estimates)
    est = np.array([e for e, _ in estimates]) if estimates else np.array([np.nan])
    gap = np.array([abs(e - r) for e, r in estimates]) if estimates else np.array([np.nan])

    def r3(x: float) -> float | None:
        return None if np.isnan(x) else round(float(x), 3)

    return {
        "pairs": n,
        "share_a_longer": share,
        "truth": round(truth, 3),
        "runs": runs,
        "raw_mean": r3(np.mean(raw)),
        "rate_given": round(given / runs, 3),
        "coverage_when_given": r3(held / given) if given else None,
        "holds_truth_or_no_rate": round((held + runs - given) / runs, 3),
        "estimate_mean": r3(np.nanmean(est)),
        "estimate_sd": r3(np.nanstd(est)),
        "interval_width_mean": r3(np.mean(widths)) if widths else None,
        "abs_lc_minus_raw_p95": r3(np.nanquantile(gap, 0.95)),
        "similar_length_n_mean": round(float(np.mean(similar_n)), 1),
        "similar_length_rate_given": round(similar_given / runs, 3),
        "similar_length_coverage_when_given": r3(similar_held / similar_given)
        if similar_given
        else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100, help="simulated sets of pairs per setting")
    parser.add_argument("--resamples", type=int, default=500, help="bootstrap resamples")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="pairs per set")
    parser.add_argument("--shares", type=float, nargs="+", default=list(SHARES))
    parser.add_argument("--judges", nargs="+", default=list(JUDGES), help="names of JUDGES")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="write here instead of benchmarks/results/")
    args = parser.parse_args()
    unknown = sorted(set(args.judges) - set(JUDGES))
    if unknown:
        parser.error(f"unknown judges {unknown}; choose from {list(JUDGES)}")
    start = time.perf_counter()
    settings = []
    for j, name in enumerate(args.judges):
        judge, truth = JUDGES[name]
        for n in args.sizes:
            for s, share in enumerate(args.shares):
                seed = [args.seed, j, n, s]
                row = {"judge": name, "seed": seed}
                row |= measure(judge, truth, n, share, args.runs, args.resamples, seed)
                settings.append(row)
                print(
                    f"{name:38} n={n:4} A longer {share:.0%}: raw {row['raw_mean']:.2f}, "
                    f"rate given {row['rate_given']:.0%}, coverage "
                    f"{row['coverage_when_given']}, holds truth or no rate "
                    f"{row['holds_truth_or_no_rate']:.0%}, LC {row['estimate_mean']} "
                    f"(sd {row['estimate_sd']}); similar-length coverage "
                    f"{row['similar_length_coverage_when_given']} (n {row['similar_length_n_mean']})",
                    flush=True,
                )
    figures = {
        "settings": settings,
        "level": 0.95,
        "seconds": round(time.perf_counter() - start, 1),
    }
    write_result("length_control_coverage", figures, args=vars(args), out=args.out)


if __name__ == "__main__":
    main()
