"""The computations behind the text metrics: each metric's scores of tokenized pairs.

One `<metric>_scored` function per metric of medsft.metrics.text's table (`METRICS`): from
tokenized predictions and references (medsft.metrics.tokenizers) to per-sample scores, a corpus
statistic over example indices (what the bootstrap resamples) and the signature of the
computation; `metric_result` turns that into the public `MetricResult`. The `check_*` functions
validate each metric's options, so that the public functions can fail before tokenizing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from sacrebleu import __version__ as _SACREBLEU_VERSION
from sacrebleu.metrics.bleu import BLEU as _SacreBLEU

from medsft import __version__ as _MEDSFT_VERSION
from medsft.metrics.overlap import lcs_length, lengths, ngrams, overlaps, prf
from medsft.metrics.stats import Interval, Statistic, bootstrap_interval, mean_statistic
from medsft.metrics.tokenizers import Tokenized

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
"""Default ROUGE variants; any ``rouge<n>`` with n in 1..9 is accepted as well."""


# --------------------------------------------------------------------------------------------
# Result object
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class MetricResult:
    """A corpus score, its per-sample scores and how it was computed. All scores are 0-100.

    Attributes:
        name: e.g. ``"BLEU-4"``, ``"ROUGE-L"``, ``"vocab-F1"``, ``"distinct-2"``.
        score: the corpus score (how samples are aggregated is in `signature`).
        per_sample: one score per example (for BLEU: sentence BLEU, see `bleu`).
        signature: exact recipe, e.g. ``"ROUGE-L|tok:zh(sacrebleu-2.6.0)|case:mixed|..."``.
        precision: corpus precision, for metrics that have one (ROUGE, vocab F1).
        recall: corpus recall, for metrics that have one.
        per_sample_precision: per-example precision, where defined.
        per_sample_recall: per-example recall, where defined.
        interval: bootstrap confidence interval of `score`, when requested.
        details: extra corpus quantities (BLEU: n-gram precisions, brevity penalty, lengths).
    """

    name: str
    score: float
    per_sample: np.ndarray
    signature: str
    precision: float | None = None
    recall: float | None = None
    per_sample_precision: np.ndarray | None = None
    per_sample_recall: np.ndarray | None = None
    interval: Interval | None = None
    details: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        text = f"{self.signature} = {self.score:.2f}"
        if self.interval is not None:
            iv = self.interval
            text += f" [{iv.low:.2f}, {iv.high:.2f}] ({iv.level:.0%} bootstrap CI)"
        return text


def check_n_resamples(n_resamples: int) -> None:
    if not isinstance(n_resamples, int) or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive int (e.g. 1000), got {n_resamples!r}")


# --------------------------------------------------------------------------------------------
# Metric internals: each returns per-sample scores plus a corpus statistic over example indices
# --------------------------------------------------------------------------------------------


@dataclass
class Scored:
    signature: str
    """How it was computed, after the result's name (`metric_result` puts the name first)."""
    per_sample: np.ndarray
    statistic: Statistic
    precision: np.ndarray | None = None
    recall: np.ndarray | None = None
    details: dict[str, float] = field(default_factory=dict)


def check_bleu_args(max_ngram_order: int, smooth_method: str) -> None:
    if not isinstance(max_ngram_order, int) or max_ngram_order < 1:
        raise ValueError(f"max_ngram_order must be an int >= 1, got {max_ngram_order!r}")
    if smooth_method not in _SacreBLEU.SMOOTH_DEFAULTS:
        raise ValueError(
            f"unknown smooth_method {smooth_method!r}; "
            f"choose one of {', '.join(_SacreBLEU.SMOOTH_DEFAULTS)}"
        )


def bleu_scored(
    tok: Tokenized,
    max_ngram_order: int = 4,
    smooth_method: str = "exp",
    smooth_value: float | None = None,
) -> Scored:
    """Corpus BLEU-n from pooled n-gram counts, per sample sentence BLEU (see `bleu`)."""
    check_bleu_args(max_ngram_order, smooth_method)
    order = max_ngram_order
    hyp_len, ref_len = lengths(tok.preds), lengths(tok.refs)
    correct = [overlaps(tok, n) for n in range(1, order + 1)]
    total = [np.maximum(hyp_len - n + 1, 0) for n in range(1, order + 1)]
    # sacrebleu's sufficient-statistics layout: [hyp_len, ref_len, correct_1..N, total_1..N].
    stats = np.column_stack([hyp_len, ref_len, *correct, *total])

    def from_stats(row: list[int], effective_order: bool):
        # compute_bleu mutates its lists under add-k smoothing, so always hand it fresh ones.
        return _SacreBLEU.compute_bleu(
            correct=row[2 : 2 + order],
            total=row[2 + order :],
            sys_len=row[0],
            ref_len=row[1],
            smooth_method=smooth_method,
            smooth_value=smooth_value,
            effective_order=effective_order,
            max_ngram_order=order,
        )

    def statistic(idx: np.ndarray) -> float:
        weights = np.bincount(idx, minlength=len(stats))
        return float(from_stats((weights @ stats).tolist(), False).score)

    corpus = from_stats(stats.sum(axis=0).tolist(), False)
    per_sample = np.array([from_stats(row, True).score for row in stats.tolist()], dtype=float)
    smooth = smooth_method
    default = _SacreBLEU.SMOOTH_DEFAULTS[smooth_method]
    if default is not None:
        smooth += f"[{(default if smooth_value is None else smooth_value):.2f}]"
    signature = (
        f"nrefs:1|{tok.signature()}|order:1-{order}(cumulative,uniform)"
        f"|smooth:{smooth}|eff:no|corpus:pooled-ngram-counts|per-sample:sentence-bleu(eff:yes)"
        f"|sacrebleu:{_SACREBLEU_VERSION}|medsft:{_MEDSFT_VERSION}"
    )
    details = {f"precision_{n}": float(p) for n, p in enumerate(corpus.precisions, 1)}
    details.update(
        bp=float(corpus.bp), sys_len=float(corpus.sys_len), ref_len=float(corpus.ref_len)
    )
    return Scored(signature, per_sample, statistic, details=details)


def check_rouge_types(rouge_types: Sequence[str]) -> tuple[str, ...]:
    if isinstance(rouge_types, str):
        rouge_types = (rouge_types,)
    types = tuple(rouge_types)
    for rouge_type in types:
        if not re.fullmatch(r"rouge[1-9L]", rouge_type):
            raise ValueError(
                f"unknown ROUGE type {rouge_type!r}; use 'rouge1'..'rouge9' or 'rougeL' "
                f"(rougeLsum is not implemented)"
            )
    if not types:
        raise ValueError("rouge_types is empty; e.g. pass ('rouge1', 'rouge2', 'rougeL')")
    return types


def rouge_scored(tok: Tokenized, rouge_type: str) -> Scored:
    """ROUGE-N or ROUGE-L F1 per sample, its mean the corpus score (see `rouge`)."""
    check_rouge_types((rouge_type,))
    pred_len, ref_len = lengths(tok.preds), lengths(tok.refs)
    if rouge_type == "rougeL":
        matches = np.fromiter(
            (lcs_length(p, r) for p, r in zip(tok.preds, tok.refs, strict=True)), np.int64, tok.n
        )
        pred_counts, ref_counts = pred_len, ref_len
        unit = "lcs"
    else:
        n = int(rouge_type[5:])
        matches = overlaps(tok, n)
        pred_counts, ref_counts = np.maximum(pred_len - n + 1, 0), np.maximum(ref_len - n + 1, 0)
        unit = f"{n}-gram"
    precision, recall, f1 = prf(matches, pred_counts, ref_counts)
    # What the computation equals, not what happens to be installed beside it.
    signature = (
        f"{tok.signature()}|unit:{unit}|score:F1|corpus:mean-of-samples"
        f"|medsft:{_MEDSFT_VERSION}|equals:rouge-score(same-tokens)"
    )
    return Scored(signature, f1, mean_statistic(f1), precision, recall)


VOCAB_F1_MODES = ("multiset", "set")
"""Overlap modes of `vocab_f1` (see its docstring)."""


def check_vocab_f1_mode(mode: str) -> None:
    if mode not in VOCAB_F1_MODES:
        raise ValueError(f"unknown mode {mode!r}; choose 'multiset' (SQuAD-style) or 'set'")


def vocab_f1_scored(tok: Tokenized, mode: str = "set") -> Scored:
    """F1 of the token types (`set`) or tokens (`multiset`) shared with the reference."""
    check_vocab_f1_mode(mode)
    if mode == "multiset":
        matches = overlaps(tok, 1)
        pred_counts, ref_counts = lengths(tok.preds), lengths(tok.refs)
    else:
        sets = [(set(p), set(r)) for p, r in zip(tok.preds, tok.refs, strict=True)]
        matches = np.fromiter((len(p & r) for p, r in sets), np.int64, tok.n)
        pred_counts = np.fromiter((len(p) for p, _ in sets), np.int64, tok.n)
        ref_counts = np.fromiter((len(r) for _, r in sets), np.int64, tok.n)
    precision, recall, f1 = prf(matches, pred_counts, ref_counts)
    signature = (
        f"{tok.signature()}|overlap:{mode}|score:F1|corpus:mean-of-samples|medsft:{_MEDSFT_VERSION}"
    )
    return Scored(signature, f1, mean_statistic(f1), precision, recall)


def distinct_scored(tok: Tokenized, n: int) -> Scored:
    """Distinct-n of the predictions alone (see `distinct`)."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"distinct-n takes an order n >= 1, got {n!r}")
    token_lists = tok.preds
    corpus: set = set()
    totals = np.zeros(len(token_lists), dtype=np.int64)
    uniques = np.zeros(len(token_lists), dtype=np.int64)
    for i, tokens in enumerate(token_lists):
        grams = ngrams(tokens, n)
        totals[i] = max(len(tokens) - n + 1, 0)
        uniques[i] = len(grams)
        corpus.update(grams)
    total = int(totals.sum())
    score = 100 * len(corpus) / total if total else 0.0
    with np.errstate(invalid="ignore", divide="ignore"):
        per_sample = np.where(totals > 0, 100 * uniques / np.maximum(totals, 1), 0.0)
    signature = (
        f"{tok.signature()}|corpus:unique/total-{n}-grams-over-all-predictions"
        f"|per-sample:unique/total-within-prediction|ci:none|medsft:{_MEDSFT_VERSION}"
    )
    details = {"unique": float(len(corpus)), "total": float(total)}
    # Only ever evaluated on the whole corpus (distinct has no bootstrap interval).
    return Scored(signature, per_sample, lambda idx: score, details=details)


def metric_result(
    scored: Scored, name: str, n: int, confidence: bool, n_resamples: int, seed: int
) -> MetricResult:
    signature = f"{name}|{scored.signature}"
    interval = None
    if confidence:
        interval = bootstrap_interval(n, scored.statistic, n_resamples=n_resamples, seed=seed)
        signature += f"|ci:95%-percentile-bootstrap|bs:{n_resamples}|rs:{seed}"
    score = interval.estimate if interval else float(scored.statistic(np.arange(n)))
    return MetricResult(
        name=name,
        score=score,
        per_sample=scored.per_sample,
        signature=signature,
        precision=None if scored.precision is None else float(scored.precision.mean()),
        recall=None if scored.recall is None else float(scored.recall.mean()),
        per_sample_precision=scored.precision,
        per_sample_recall=scored.recall,
        interval=interval,
        details=scored.details,
    )
