"""How far to trust a pairwise judge: agreement with people, with another judge, and its biases.

A judge's win rate is only as good as its verdicts. MT-bench (Zheng et al. 2023, "Judging
LLM-as-a-judge") measured GPT-4 against human experts: 66% agreement counting ties as a verdict,
85% without ties (about the agreement of two experts), and showed position bias (the answer
shown first wins more often) and verbosity bias (the longer answer wins more often). This module
computes the same figures for any verdicts, numpy only:

- `agreement(first, second)`: two raters' verdicts on the same pairs (people and the judge, or two
  judges): agreement with ties, agreement without ties (pairs where neither rater said tie, as
  MT-bench's "w/o tie"), Cohen's kappa with a seeded bootstrap interval over pairs, and the
  confusion table;
- `position_bias(verdicts_ab, verdicts_ba)`: of the judge's decisive single-order verdicts, the
  share that chose the answer shown first (0.5: none), and the pairs whose two orders both chose
  the first-shown (or the second-shown) answer;
- `verbosity_bias(outcomes, lengths_a, lengths_b)`: the longer answer's win rate over pairs of
  unequal length (0.5: none), the logistic slope of A's outcome on log(length A / length B), and
  A's win rate by bins of relative length difference;
- `judge_biases(records)`: both biases from a judging run's pair records (`PairRecord`s);
- `read_labels(path)`: human verdicts from a `judge.labels` file (JSONL), with one clear error per
  bad line; `align_labels` pairs them with a judging run's verdicts.

Verdicts are from system A's side: `"a"` (A's answer is better), `"b"` (B's), `"tie"`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from medsft.errors import InputError
from medsft.metrics.length_control import fit_firth
from medsft.metrics.stats import Interval, resample_counts

Verdict = Literal["a", "b", "tie"]
VERDICTS: tuple[Verdict, ...] = ("a", "b", "tie")
"""A's answer better, B's answer better, neither."""
SPELLINGS: dict[str, Verdict] = {
    "a": "a",
    "a>b": "a",
    "win": "a",
    "b": "b",
    "b>a": "b",
    "loss": "b",
    "tie": "tie",
    "equal": "tie",
    "a=b": "tie",
}
"""How a `judge.labels` file may write a verdict (case ignored), from system_a's side."""
OUTCOME_VERDICT: dict[str, Verdict] = {"win": "a", "loss": "b", "tie": "tie"}
"""A judging run's pair outcome (medsft.metrics.judge_result) as a verdict."""
LENGTH_BINS = (-1.0, -0.5, -0.1, 0.1, 0.5, 1.0)
"""Edges of the relative length difference (A - B) / longer for `verbosity_bias`'s bins: much
shorter, shorter, similar (within 10%, as the length control's check), longer, much longer."""


@dataclass(frozen=True)
class Agreement:
    """Two raters' verdicts on the same pairs, compared."""

    n: int
    """Pairs both rated."""
    agreement: float
    """Share of pairs with the same verdict, ties a verdict like the others."""
    n_without_ties: int
    """Pairs where neither rater said tie."""
    agreement_without_ties: float | None
    """Share of those with the same verdict; None when there are none."""
    kappa: float | None
    """Cohen's kappa over the three verdicts: agreement beyond what the two raters' verdict
    shares give by chance (1 perfect, 0 chance); None when both always say the same one thing."""
    kappa_interval: Interval | None
    """Seeded percentile bootstrap interval of kappa over pairs."""
    confusion: dict[str, dict[str, int]]
    """first rater's verdict -> second rater's verdict -> pairs."""


@dataclass(frozen=True)
class PositionBias:
    """Whether the judge prefers the answer it is shown first."""

    n_pairs: int
    """Pairs with a verdict in both orders."""
    n_decisive: int
    """Single-order verdicts that chose an answer (not equal)."""
    first_position_share: float | None
    """Share of those that chose the answer shown first: 0.5 no bias; None when none chose."""
    interval: Interval | None
    """Bootstrap interval of `first_position_share` over pairs."""
    both_orders_first: int
    """Pairs whose two orders both chose the answer shown first (an inconsistent pair)."""
    both_orders_second: int
    """Pairs whose two orders both chose the answer shown second."""


@dataclass(frozen=True)
class LengthBin:
    """A's win rate on the pairs whose relative length difference lies in (low, high]."""

    low: float
    high: float
    n: int
    win_rate: float | None
    """Ties count half; None when the bin is empty."""


@dataclass(frozen=True)
class VerbosityBias:
    """Whether the judge prefers the longer answer."""

    n_unequal: int
    """Pairs whose answers differ in length."""
    longer_win_rate: float | None
    """The longer answer's win rate over those pairs (ties half): 0.5 no bias."""
    longer_win_interval: Interval | None
    """Bootstrap interval of `longer_win_rate` over pairs."""
    slope: float | None
    """Logit change of A's outcome per unit of log(length A / length B) (Firth's fit): ln 2 x
    slope is what doubling A's length buys; None when the lengths or outcomes do not vary."""
    slope_interval: Interval | None
    """Bootstrap interval of `slope` over pairs."""
    bins: list[LengthBin]
    """A's win rate by relative length difference (`LENGTH_BINS`)."""


@dataclass(frozen=True)
class HumanLabel:
    """One human verdict from a `judge.labels` file."""

    question: str
    """The question's text, or its id as written in the file (`id`)."""
    system_a: str
    system_b: str
    verdict: Verdict
    """From system_a's side."""
    annotator: str | None
    where: str
    """File and line, for messages."""


def _percentile(values: np.ndarray, estimate: float, level: float, **meta: int) -> Interval | None:
    values = values[np.isfinite(values)]
    if not len(values):
        return None
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return Interval(estimate, float(low), float(high), level, **meta)


def _check_verdicts(values: Sequence[str], name: str) -> np.ndarray:
    bad = sorted({v for v in values if v not in VERDICTS}, key=str)
    if bad:
        raise ValueError(f"{name} holds {bad}; verdicts are 'a', 'b' or 'tie'")
    return np.array([VERDICTS.index(v) for v in values], dtype=int)


def agreement(
    first: Sequence[Verdict],
    second: Sequence[Verdict],
    *,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    confidence: bool = True,
) -> Agreement:
    """Agreement of two raters on the same pairs (see the module docstring).

    Args:
        first: the first rater's verdicts (people, for agreement with a judge).
        second: the second rater's verdicts, aligned with `first`.
        n_resamples: bootstrap resamples of kappa's interval.
        level: coverage of the interval.
        seed: bootstrap seed.
        confidence: compute the interval.
    """
    if len(first) != len(second):
        raise ValueError(f"first and second differ in length: {len(first)}, {len(second)}")
    if not len(first):
        raise ValueError("no pairs rated by both: agreement needs at least one")
    x, y = _check_verdicts(first, "first"), _check_verdicts(second, "second")
    # Each pair as one cell of the 3 x 3 table; a resample's table is its counts per cell.
    cells = np.eye(9)[x * 3 + y]

    def kappas(tables: np.ndarray) -> np.ndarray:
        t = tables.reshape(-1, 3, 3)
        n = t.sum(axis=(1, 2))
        observed = np.trace(t, axis1=1, axis2=2) / n
        chance = (t.sum(axis=2) * t.sum(axis=1)).sum(axis=1) / n**2
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(chance < 1, (observed - chance) / (1 - chance), np.nan)

    table = cells.sum(axis=0)
    kappa = float(kappas(table[None])[0])
    interval = None
    if confidence and math.isfinite(kappa):
        resampled = kappas(resample_counts(len(x), n_resamples, seed) @ cells)
        interval = _percentile(resampled, kappa, level, n_resamples=n_resamples, seed=seed)
    decided = (x != 2) & (y != 2)
    t = table.reshape(3, 3).astype(int)
    return Agreement(
        n=len(x),
        agreement=float((x == y).mean()),
        n_without_ties=int(decided.sum()),
        agreement_without_ties=float((x[decided] == y[decided]).mean()) if decided.any() else None,
        kappa=kappa if math.isfinite(kappa) else None,
        kappa_interval=interval,
        confusion={
            a: {b: int(t[i, j]) for j, b in enumerate(VERDICTS)} for i, a in enumerate(VERDICTS)
        },
    )


def position_bias(
    verdicts_ab: Sequence[str | None],
    verdicts_ba: Sequence[str | None],
    *,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    confidence: bool = True,
) -> PositionBias:
    """The judge's preference for the answer shown first (see the module docstring).

    Args:
        verdicts_ab: each pair's verdict about Assistant 1 ('better', 'worse', 'equal'; None:
            failed) with A's answer shown first.
        verdicts_ba: the same with B's answer shown first.
        n_resamples: bootstrap resamples of the interval.
        level: coverage of the interval.
        seed: bootstrap seed.
        confidence: compute the interval.
    """
    if len(verdicts_ab) != len(verdicts_ba):
        raise ValueError(
            f"verdicts_ab and verdicts_ba differ in length: {len(verdicts_ab)}, {len(verdicts_ba)}"
        )
    pairs = [(ab, ba) for ab, ba in zip(verdicts_ab, verdicts_ba, strict=True) if ab and ba]
    bad = {v for pair in pairs for v in pair} - {"better", "worse", "equal"}
    if bad:
        raise ValueError(f"verdicts {sorted(bad)}; expected 'better', 'worse' or 'equal'")
    # Per pair: single-order verdicts choosing the first-shown answer, and decisive ones.
    first = np.array([(ab == "better") + (ba == "better") for ab, ba in pairs], dtype=float)
    decisive = np.array([(ab != "equal") + (ba != "equal") for ab, ba in pairs], dtype=float)
    share = float(first.sum() / decisive.sum()) if decisive.sum() else None
    interval = None
    if confidence and share is not None:
        counts = resample_counts(len(pairs), n_resamples, seed)
        with np.errstate(invalid="ignore", divide="ignore"):
            resampled = (counts @ first) / (counts @ decisive)
        interval = _percentile(resampled, share, level, n_resamples=n_resamples, seed=seed)
    return PositionBias(
        n_pairs=len(pairs),
        n_decisive=int(decisive.sum()),
        first_position_share=share,
        interval=interval,
        both_orders_first=sum(ab == ba == "better" for ab, ba in pairs),
        both_orders_second=sum(ab == ba == "worse" for ab, ba in pairs),
    )


def verbosity_bias(
    outcomes: Sequence[float],
    lengths_a: Sequence[float],
    lengths_b: Sequence[float],
    *,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    confidence: bool = True,
) -> VerbosityBias:
    """The judge's preference for the longer answer (see the module docstring).

    Args:
        outcomes: each pair's outcome for A after the position swap: 1 win, 0.5 tie, 0 loss.
        lengths_a: A's answer length in each pair (characters).
        lengths_b: B's answer length in each pair.
        n_resamples: bootstrap resamples of the intervals.
        level: coverage of the intervals.
        seed: bootstrap seed.
        confidence: compute the intervals.
    """
    y = np.asarray(outcomes, dtype=float)
    a, b = np.asarray(lengths_a, dtype=float), np.asarray(lengths_b, dtype=float)
    if not len(y) == len(a) == len(b):
        raise ValueError(
            f"outcomes, lengths_a and lengths_b differ in length: {len(y)}, {len(a)}, {len(b)}"
        )
    if ((y < 0) | (y > 1)).any() or (np.minimum(a, b) < 0).any():
        raise ValueError("outcomes must lie in [0, 1] and lengths be >= 0")
    meta = dict(n_resamples=n_resamples, seed=seed)
    counts = resample_counts(len(y), n_resamples, seed) if confidence and len(y) else None
    unequal = a != b
    # The longer answer's outcome in each pair of unequal length.
    longer = np.where(a > b, y, 1 - y) * unequal
    rate = float(longer.sum() / unequal.sum()) if unequal.any() else None
    rate_interval = None
    if counts is not None and rate is not None:
        with np.errstate(invalid="ignore", divide="ignore"):
            resampled = (counts @ longer) / (counts @ unequal)
        rate_interval = _percentile(resampled, rate, level, **meta)
    ratio = np.log((a + 1) / (b + 1))
    slope = slope_interval = None
    if len(y) and ratio.std() > 0 and y.min() < y.max():
        design = np.column_stack([np.ones(len(y)), ratio])
        beta = fit_firth(design, y)[0]
        slope = float(beta[1])
        if counts is not None:
            slopes = fit_firth(design, y, counts, beta)[:, 1]
            slope_interval = _percentile(slopes, slope, level, **meta)
    relative = np.divide(a - b, np.maximum(a, b), out=np.zeros(len(y)), where=np.maximum(a, b) > 0)
    bins = []
    for i, (low, high) in enumerate(zip(LENGTH_BINS[:-1], LENGTH_BINS[1:], strict=True)):
        inside = (
            (relative > low) & (relative <= high) if i else (relative >= low) & (relative <= high)
        )
        bins.append(
            LengthBin(
                low, high, int(inside.sum()), float(y[inside].mean()) if inside.any() else None
            )
        )
    return VerbosityBias(
        n_unequal=int(unequal.sum()),
        longer_win_rate=rate,
        longer_win_interval=rate_interval,
        slope=slope,
        slope_interval=slope_interval,
        bins=bins,
    )


def judge_biases(records: Iterable[Any], **bootstrap: Any) -> dict[str, Any]:
    """Position and verbosity bias of one judging run, as JSON for report.json.

    Args:
        records: the run's pair records (`medsft.metrics.judge_result.PairRecord`: `verdict_ab`,
            `verdict_ba`, `outcome`, `answer_a`, `answer_b`); failed pairs are left out.
        **bootstrap: n_resamples, level, seed, confidence.
    """
    judged = [r for r in records if r.outcome != "error"]
    position = position_bias(
        [r.verdict_ab for r in judged], [r.verdict_ba for r in judged], **bootstrap
    )
    score = {"win": 1.0, "tie": 0.5, "loss": 0.0}
    verbosity = verbosity_bias(
        [score[r.outcome] for r in judged],
        [len(r.answer_a.strip()) for r in judged],
        [len(r.answer_b.strip()) for r in judged],
        **bootstrap,
    )
    return {"position": asdict(position), "verbosity": asdict(verbosity)}


def read_labels(path: str | Path, systems: Sequence[str] | None = None) -> list[HumanLabel]:
    """Human verdicts from a `judge.labels` file: JSONL, one object per line with the question
    (`question`: its text, or `id`), the pair (`system_a`, `system_b`: system names as in the
    evaluation), the `verdict` from system_a's side (`a`, `b` or `tie`; `A>B`, `B>A`, `win`,
    `loss`, `equal` also read) and optionally `annotator`. Blank lines are skipped.

    Args:
        path: the file.
        systems: the names a label's systems must be among (an evaluation's systems); None: any.

    Raises:
        InputError: naming the file, line and field of the first problem.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"judge.labels: no file {path}")
    labels: list[HumanLabel] = []
    seen: dict[tuple[str, str, str, str | None], str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"judge.labels {where}: not JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise InputError(f"judge.labels {where}: expected an object, got {type(row).__name__}")
        question = row.get("question", row.get("id"))
        if question is None or str(question).strip() == "":
            raise InputError(
                f"judge.labels {where}: field 'question' (or 'id') is missing or empty"
            )
        pair: list[str] = []
        for name in ("system_a", "system_b"):
            if not isinstance(row.get(name), str) or not row[name].strip():
                raise InputError(f"judge.labels {where}: field '{name}' (a system name) is missing")
            pair.append(row[name].strip())
            if systems is not None and pair[-1] not in systems:
                raise InputError(
                    f"judge.labels {where}: field '{name}' is {pair[-1]!r}, not a system of this "
                    f"evaluation ({', '.join(systems)})"
                )
        if pair[0] == pair[1]:
            raise InputError(f"judge.labels {where}: system_a and system_b are both {pair[0]!r}")
        raw = row.get("verdict")
        verdict = SPELLINGS.get(str(raw).strip().lower()) if raw is not None else None
        if verdict is None:
            raise InputError(
                f"judge.labels {where}: field 'verdict' is {raw!r}; write 'a' (system_a's answer "
                f"is better), 'b' or 'tie'"
            )
        annotator = None if row.get("annotator") is None else str(row["annotator"])
        label = HumanLabel(" ".join(str(question).split()), *pair, verdict, annotator, where)
        key = (label.question, *sorted(pair), annotator)
        if key in seen:
            raise InputError(
                f"judge.labels {where}: the same question, pair and annotator as {seen[key]}; "
                "give each annotator's verdict once (or an `annotator` to tell them apart)"
            )
        seen[key] = where
        labels.append(label)
    if not labels:
        raise InputError(f"judge.labels: {path} holds no verdicts")
    return labels


def align_labels(
    labels: Iterable[HumanLabel],
    system_a: str,
    system_b: str,
    questions: Sequence[str],
    judge_verdicts: Sequence[Verdict | None],
    ids: Sequence[str] | None = None,
) -> tuple[list[Verdict], list[Verdict], list[HumanLabel]]:
    """Human and judge verdicts on the same pairs of systems A and B, for `agreement`.

    A label written for (B, A) is turned to A's side. A question matches by its text (spaces
    ignored) or by its id in `ids`.

    Args:
        labels: from `read_labels`.
        system_a: the judged system A's name.
        system_b: system B's name (the baseline).
        questions: each judged pair's question, in the judge's order.
        judge_verdicts: the judge's verdict for each (None: failed, left out).
        ids: each judged pair's question id, when the labels name questions by id.

    Returns:
        (human verdicts, judge verdicts, labels of this pair that matched no judged question).
    """
    where: dict[str, int] = {" ".join(q.split()): i for i, q in enumerate(questions)}
    if ids is not None:
        where |= {str(q): i for i, q in enumerate(ids)}
    flip: dict[Verdict, Verdict] = {"a": "b", "b": "a", "tie": "tie"}
    human: list[Verdict] = []
    judge: list[Verdict] = []
    unmatched: list[HumanLabel] = []
    for label in labels:
        if {label.system_a, label.system_b} != {system_a, system_b}:
            continue
        i = where.get(label.question)
        if i is None:
            unmatched.append(label)
            continue
        if judge_verdicts[i] is None:
            continue
        human.append(label.verdict if label.system_a == system_a else flip[label.verdict])
        judge.append(judge_verdicts[i])
    return human, judge, unmatched
