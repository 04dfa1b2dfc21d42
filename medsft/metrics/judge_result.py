"""What a pairwise judging run returns: per-pair records, usage, rates and their intervals.

Outcome of a pair, from system A's point of view (each pair is judged in both answer orders,
'ab' = A's answer shown as Assistant 1):

- both orders give the same verdict about A (ab 'better' + ba 'worse' -> win; ab 'worse' + ba
  'better' -> loss; 'equal' twice -> tie): that outcome, *consistent*;
- any other combination, including one order 'equal' and the other decisive: a tie, reported as
  *inconsistent* (the MT-bench convention; a half-decided pair is not evidence of a win);
- an order that failed (HTTP errors past the retries, or no verdict even after the label
  retry): outcome 'error'; the pair is left out of every rate and counted in `n_errors`.

Rates are shares of the judged (non-error) pairs. The adjusted win rate is (wins + ties / 2) / n,
and its interval is a seeded percentile bootstrap over pairs. The length-controlled win rate
(medsft.metrics.length_control) is the same rate predicted at equal answer lengths.

Token usage: `JudgeUsage.prompt_tokens` / `completion_tokens` are what this run was billed (every
200 reply, including one that lacked a label and was retried); replies served from the cache are
counted separately in `cached_*`, with the usage recorded when they were first paid for.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from medsft.metrics.length_control import LengthControlled
from medsft.metrics.stats import Interval
from medsft.metrics.verdict import Label, reasons

Outcome = Literal["win", "loss", "tie", "error"]

# Verdict about system A, given the label of the order it was shown in.
_A_VIEW: dict[str, dict[Label, Outcome]] = {
    "ab": {"better": "win", "worse": "loss", "equal": "tie"},
    "ba": {"better": "loss", "worse": "win", "equal": "tie"},
}
SCORE: dict[Outcome, float] = {"win": 1.0, "tie": 0.5, "loss": 0.0}
"""A pair's outcome as a number for A, the unit of the adjusted and length-controlled rates."""


@dataclass(frozen=True)
class PairRecord:
    """The judgement of one question, in both orders. 'ab' = A's answer shown as Assistant 1."""

    index: int
    question: str
    answer_a: str
    answer_b: str
    outcome: Outcome
    """For system A: 'win', 'loss', 'tie' (inconsistent pairs included) or 'error'."""
    consistent: bool | None
    """Whether both orders gave the same verdict about A; None for an error."""
    verdict_ab: Label | None
    verdict_ba: Label | None
    raw_ab: str | None
    """The judge's full reply in order ab (also kept for a reply without a label)."""
    raw_ba: str | None
    reasons_ab: str | None
    reasons_ba: str | None
    cached_ab: bool = False
    cached_ba: bool = False
    error: str | None = None


@dataclass
class JudgeUsage:
    """Requests and tokens; `cached_*` are replies reused from the cache, not billed again."""

    requests: int = 0
    """HTTP requests sent, failed attempts included."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_judgements: int = 0
    cached_prompt_tokens: int = 0
    cached_completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens billed in this run."""
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, repr=False)
class JudgeResult:
    """Outcome of `judge_pairs`: rates for system A against system B, plus per-pair records."""

    model: str
    base_url: str | None
    """Endpoint, without any credentials in the URL."""
    records: list[PairRecord]
    usage: JudgeUsage
    interval: Interval | None
    """Bootstrap interval of the adjusted win rate; None when no pair was judged."""
    template_sha256: str
    """Hash of the system prompt, template and rubric, to tell reports from different prompts."""
    rubric: bool = True
    length_controlled: LengthControlled | None = None
    """The adjusted win rate predicted at equal answer lengths, with its interval; None when
    no pair was judged."""
    counts: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        counts = {"win": 0, "loss": 0, "tie": 0, "error": 0, "inconsistent": 0}
        for record in self.records:
            counts[record.outcome] += 1
            counts["inconsistent"] += record.consistent is False
        object.__setattr__(self, "counts", counts)

    @property
    def n_pairs(self) -> int:
        """Pairs submitted."""
        return len(self.records)

    @property
    def n_errors(self) -> int:
        """Pairs left out of the rates because an order failed."""
        return self.counts["error"]

    @property
    def n_judged(self) -> int:
        """Pairs with a verdict in both orders; the denominator of every rate."""
        return self.n_pairs - self.n_errors

    def _rate(self, count: int) -> float:
        return count / self.n_judged if self.n_judged else math.nan

    @property
    def win_rate(self) -> float:
        """Share of judged pairs A wins in both orders."""
        return self._rate(self.counts["win"])

    @property
    def loss_rate(self) -> float:
        """Share of judged pairs A loses in both orders."""
        return self._rate(self.counts["loss"])

    @property
    def tie_rate(self) -> float:
        """Share of judged pairs that are ties, inconsistent ones included."""
        return self._rate(self.counts["tie"])

    @property
    def adjusted_win_rate(self) -> float:
        """(wins + ties / 2) / judged pairs."""
        return self._rate(self.counts["win"] + self.counts["tie"] / 2)

    @property
    def failed_share(self) -> float:
        """Share of submitted pairs that could not be judged (0 when none was submitted)."""
        return self.n_errors / self.n_pairs if self.n_pairs else 0.0

    @property
    def length_controlled_win_rate(self) -> float:
        """The adjusted win rate predicted at zero length difference (NaN: nothing judged)."""
        estimate = self.length_controlled.estimate if self.length_controlled else None
        return math.nan if estimate is None else estimate

    @property
    def consistency_rate(self) -> float:
        """Share of judged pairs whose verdict survived the position swap."""
        return self._rate(self.n_judged - self.counts["inconsistent"])

    def to_dict(self, include_records: bool = True) -> dict[str, Any]:
        """JSON-serialisable summary (NaN rates become None).

        Args:
            include_records: also list every per-pair record.
        """

        def finite(x: float) -> float | None:
            return None if math.isnan(x) else x

        out: dict[str, Any] = {
            "model": self.model,
            "base_url": self.base_url,
            "template_sha256": self.template_sha256,
            "rubric": self.rubric,
            "n_pairs": self.n_pairs,
            "n_judged": self.n_judged,
            "n_errors": self.n_errors,
            "counts": dict(self.counts),
            "win_rate": finite(self.win_rate),
            "loss_rate": finite(self.loss_rate),
            "tie_rate": finite(self.tie_rate),
            "adjusted_win_rate": finite(self.adjusted_win_rate),
            "consistency_rate": finite(self.consistency_rate),
            "interval": asdict(self.interval) if self.interval else None,
            "length_controlled_win_rate": finite(self.length_controlled_win_rate),
            "length_controlled": asdict(self.length_controlled) if self.length_controlled else None,
            "usage": {**asdict(self.usage), "total_tokens": self.usage.total_tokens},
        }
        if include_records:
            out["records"] = [asdict(r) for r in self.records]
        return out

    def __repr__(self) -> str:
        # Records hold every answer in full; a repr that prints them is useless in a log.
        return (
            f"JudgeResult(model={self.model!r}, n_pairs={self.n_pairs}, n_errors={self.n_errors}, "
            f"win_rate={self.win_rate:.3f}, loss_rate={self.loss_rate:.3f}, "
            f"tie_rate={self.tie_rate:.3f}, adjusted_win_rate={self.adjusted_win_rate:.3f}, "
            f"length_controlled_win_rate={self.length_controlled_win_rate:.3f}, "
            f"consistency_rate={self.consistency_rate:.3f}, interval={self.interval})"
        )


# --------------------------------------------------------------------------------------------


def pair_record(
    index: int, question: str, answer_a: str, answer_b: str, ab: Any, ba: Any
) -> PairRecord:
    """A pair's record from its two orders' judgements (each with `label`, `raw`, `cached` and
    `error`, as `medsft.metrics.judge_client.JudgeOrder`).

    Args:
        index: the pair's position in the inputs.
        question: the question.
        answer_a: system A's answer.
        answer_b: system B's answer.
        ab: the judgement with A's answer shown first.
        ba: the judgement with B's answer shown first.
    """
    common = {
        "index": index,
        "question": question,
        "answer_a": answer_a,
        "answer_b": answer_b,
        "verdict_ab": ab.label,
        "verdict_ba": ba.label,
        "raw_ab": ab.raw,
        "raw_ba": ba.raw,
        "reasons_ab": reasons(ab.raw) if ab.raw is not None else None,
        "reasons_ba": reasons(ba.raw) if ba.raw is not None else None,
        "cached_ab": ab.cached,
        "cached_ba": ba.cached,
    }
    if ab.label is None or ba.label is None:
        failed = [f"{name}: {o.error}" for name, o in (("ab", ab), ("ba", ba)) if o.error]
        return PairRecord(**common, outcome="error", consistent=None, error="; ".join(failed))
    view_ab, view_ba = _A_VIEW["ab"][ab.label], _A_VIEW["ba"][ba.label]
    consistent = view_ab == view_ba
    return PairRecord(**common, outcome=view_ab if consistent else "tie", consistent=consistent)
