"""Reference-based text metrics for Chinese and English QA: BLEU, ROUGE, vocabulary F1, distinct-n.

Every function takes plain lists of strings and returns `MetricResult`s on the 0-100 scale whose
`signature` says exactly how the number was computed (tokenizer, n-gram order, smoothing, how the
corpus score aggregates samples, library versions), so that scores can be compared across papers.

Tokenizers (`tokenizer=`): ``"auto"`` (default: ``"zh"`` if any text of the call has a Han
character, else ``"13a"``), ``"zh"``, ``"char"``, ``"jieba"``, ``"13a"``; see
medsft.metrics.tokenizers. `bleu` equals `sacrebleu.corpus_bleu` with the same tokenizer.
`rouge` equals rouge-score's `RougeScorer(..., tokenizer=...)` given the same tokens; the overlap
counts (and ROUGE-L's fast exact LCS) are in medsft.metrics.overlap.

`METRICS` is the one table of metrics: each entry names its results, scores tokenized pairs (its
`<metric>_scored` computation, in medsft.metrics.scorers) and says whether it has references (an
interval, a paired test) and how evaluation picks its variants. `score_metric` and `compare` take
any of its keys; the functions below are its entries with their options spelled out.

Edge cases, for every reference-based metric: lists of different lengths raise ValueError naming
both lengths; a non-string item raises TypeError naming its index; a reference without tokens raises
ValueError naming its index (the score would be undefined); an empty prediction is a valid output
and scores 0 for that sample.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from medsft.metrics.scorers import (
    ROUGE_TYPES,
    MetricResult,
    Scored,
    bleu_scored,
    check_bleu_args,
    check_n_resamples,
    check_rouge_types,
    check_vocab_f1_mode,
    distinct_scored,
    metric_result,
    rouge_scored,
    vocab_f1_scored,
)
from medsft.metrics.stats import PairedTest, Statistic, paired_bootstrap
from medsft.metrics.tokenizers import TOKENIZERS as TOKENIZERS  # public here since 0.1
from medsft.metrics.tokenizers import (
    Tokenized,
    as_pairs,
    as_texts,
    resolve_tokenizer,
    tokenize_corpus,
    tokenize_pairs,
)
from medsft.metrics.tokenizers import tokenize as tokenize  # public here since 0.1

# --------------------------------------------------------------------------------------------
# The metrics table: what scoring, paired tests, reports and plots know about each metric
# --------------------------------------------------------------------------------------------

VOCAB_F1_NAMES = {"set": "vocab-F1", "multiset": "token-F1"}
"""The name of `vocab_f1`'s result per overlap mode: one name, one definition."""


@dataclass(frozen=True)
class TextMetric:
    """One entry of `METRICS`: a text metric as scoring, paired tests, reports and plots use it."""

    name: Callable[..., str]
    """The result's name from the metric's options: ``max_ngram_order=4`` -> ``"BLEU-4"``."""
    scored: Callable[..., Scored]
    """(tokenized pairs, **options) -> per-sample scores, corpus statistic and signature; its
    keyword parameters are the options `score_metric` and `compare` take for the metric."""
    setting: str | None = None
    """The evaluation setting (a field of medsft.evaluation's `scoring:` section) holding the
    values of `option`, one result per value; None: one result with the default options."""
    option: str | None = None
    """The option that `setting`'s values (and `alias` names) set."""
    alias: str | None = None
    """A regular expression of further names that pick one value of `option` (``rougeL``)."""
    references: bool = True
    """False: a property of the predictions alone (diversity): no interval, no paired test, and
    its own panel in plots."""
    note: str = ""
    """What a report says about the metric beside its scores."""
    headline: bool | tuple[Any, ...] = False
    """Which results are headline scores (the ablation table's columns): True all of them, a
    tuple those of these values of `option` (BLEU: ``(4,)``, BLEU-4 only), False none."""

    def is_headline(self, name: str) -> bool:
        """Whether this metric's result called `name` is a headline score.

        Args:
            name: a result's name, as `name` gives it (``"BLEU-4"``).
        """
        if isinstance(self.headline, bool):
            return self.headline
        return any(name == self.name(**{str(self.option): v}) for v in self.headline)


METRICS: dict[str, TextMetric] = {
    "bleu": TextMetric(
        name=lambda max_ngram_order=4, **_: f"BLEU-{max_ngram_order}",
        scored=bleu_scored,
        setting="bleu_orders",
        option="max_ngram_order",
        headline=(4,),
    ),
    "rouge": TextMetric(
        name=lambda rouge_type, **_: f"ROUGE-{rouge_type[5:]}",
        scored=rouge_scored,
        setting="rouge_types",
        option="rouge_type",
        alias=r"rouge[1-9L]",
        headline=("rougeL",),
    ),
    "vocab_f1": TextMetric(
        name=lambda mode="set", **_: VOCAB_F1_NAMES[mode],
        scored=vocab_f1_scored,
        setting="vocab_f1_mode",
        option="mode",
        note="vocab-F1: F1 of the token types a prediction shares with its reference, each "
        "counted once (`scoring.vocab_f1_mode: multiset` gives token-F1 instead: SQuAD-style "
        "token counts, which equals ROUGE-1 F1 with the same tokens).",
        headline=True,
    ),
    "distinct": TextMetric(
        name=lambda n, **_: f"distinct-{n}",
        scored=distinct_scored,
        setting="distinct_orders",
        option="n",
        references=False,
        note="Distinct-n measures diversity, not agreement, and has no interval.",
    ),
}
"""Every text metric by key, in report order. A new metric is one `*_scored` function
(medsft.metrics.scorers) and one entry here; `score_metric`, `compare`, evaluate.py's scores,
paired tests, report and plots all follow this table."""

COMPARABLE = tuple(key for key, metric in METRICS.items() if metric.references)
"""Metric keys `compare` takes (and ROUGE types such as ``"rougeL"``)."""


def _resolve(metric: str, options: dict[str, Any]) -> tuple[TextMetric, dict[str, Any]]:
    """The table entry of a metric key or alias, and its options checked against it."""
    entry = METRICS.get(metric)
    if entry is None:
        entry = next(
            (m for m in METRICS.values() if m.alias and re.fullmatch(m.alias, metric)), None
        )
        if entry is None:
            raise ValueError(
                f"unknown metric {metric!r}; choose one of {', '.join(METRICS)} (or a ROUGE type "
                "such as 'rougeL')"
            )
        assert entry.option is not None
        options = {**options, entry.option: metric}
    params = list(inspect.signature(entry.scored).parameters.values())[1:]
    unknown = sorted(set(options) - {p.name for p in params})
    if unknown:
        raise ValueError(
            f"metric {metric!r} takes no option {', '.join(unknown)}; its options: "
            f"{', '.join(p.name for p in params)}"
        )
    missing = [p.name for p in params if p.default is p.empty and p.name not in options]
    if missing:
        raise ValueError(f"metric {metric!r} needs {', '.join(missing)}")
    return entry, options


def _predictions_only(predictions: Sequence[str], tokenizer: str, lowercase: bool) -> Tokenized:
    """Predictions tokenized for a metric without references (`auto` looks at them alone)."""
    preds = as_texts("predictions", predictions)
    if not preds:
        raise ValueError("no predictions: pass at least one")
    kind = resolve_tokenizer(tokenizer, preds)
    return Tokenized(preds, (), tokenize_corpus(kind, lowercase, preds), (), kind, lowercase)


def score_metric(
    metric: str,
    predictions: Sequence[str],
    references: Sequence[str] | None = None,
    *,
    tokenizer: str = "auto",
    lowercase: bool = False,
    confidence: bool = False,
    n_resamples: int = 1000,
    seed: int = 0,
    **options: Any,
) -> MetricResult:
    """Any metric of `METRICS` by key, with its options: the path every metric function takes.

    ``score_metric("bleu", preds, refs, max_ngram_order=2)`` equals ``bleu(preds, refs,
    max_ngram_order=2)``.

    Args:
        metric: a key of `METRICS` (``"bleu"``, ``"rouge"``, ``"vocab_f1"``, ``"distinct"``) or
            a ROUGE type (``"rougeL"``).
        predictions: system outputs, one string per example.
        references: one reference per example (same order); unused (may be None) by metrics
            without references (distinct-n).
        tokenizer: one of `TOKENIZERS`.
        lowercase: lowercase before tokenizing.
        confidence: attach a percentile bootstrap 95% interval (metrics with references only).
        n_resamples: bootstrap resamples.
        seed: bootstrap RNG seed.
        **options: the metric's own options (BLEU's ``max_ngram_order``, ROUGE's ``rouge_type``,
            vocab-F1's ``mode``, distinct's ``n``); see the metric's function.
    """
    entry, options = _resolve(metric, options)
    check_n_resamples(n_resamples)
    if not entry.references:
        tok = _predictions_only(predictions, tokenizer, lowercase)
    elif references is None:
        raise ValueError(f"metric {metric!r} needs references: pass one per prediction")
    else:
        preds, refs = as_pairs(predictions, references)
        tok = tokenize_pairs(preds, refs, resolve_tokenizer(tokenizer, preds, refs), lowercase)
    scored = entry.scored(tok, **options)
    name = entry.name(**options)
    return metric_result(scored, name, tok.n, confidence and entry.references, n_resamples, seed)


# --------------------------------------------------------------------------------------------
# Public metrics
# --------------------------------------------------------------------------------------------


def bleu(
    predictions: Sequence[str],
    references: Sequence[str],
    *,
    max_ngram_order: int = 4,
    tokenizer: str = "auto",
    lowercase: bool = False,
    smooth_method: str = "exp",
    smooth_value: float | None = None,
    confidence: bool = False,
    n_resamples: int = 1000,
    seed: int = 0,
) -> MetricResult:
    """Corpus BLEU, identical to ``sacrebleu.corpus_bleu(predictions, [references], ...)``.

    BLEU-n (as HuatuoGPT's BLEU-1..4) is *cumulative* BLEU with ``max_ngram_order=n``: the
    geometric mean of the 1..n-gram precisions with uniform weights, times the brevity penalty;
    not the n-gram precision alone (that is in ``details["precision_n"]``). HuatuoGPT-style
    BLEU-1..4: ``{n: bleu(preds, refs, max_ngram_order=n).score for n in range(1, 5)}``; the
    n-gram counts are cached, so the four calls count each order once.

    Args:
        predictions: system outputs, one string per example.
        references: one reference per example (same order).
        max_ngram_order: n of BLEU-n; 4 is standard BLEU.
        tokenizer: one of `TOKENIZERS`; ``"jieba"``/``"char"`` tokens are passed to sacrebleu's
            ``tokenize="none"`` as space-joined text.
        lowercase: case-insensitive BLEU (sacrebleu's ``lowercase``).
        smooth_method: sacrebleu's ``'exp'`` (default), ``'floor'``, ``'add-k'`` or ``'none'``.
        smooth_value: value for ``floor``/``add-k``; None uses sacrebleu's default.
        confidence: attach a percentile bootstrap 95% interval, recomputing corpus BLEU (pooled
            n-gram counts) on each resample.
        n_resamples: bootstrap resamples (sacrebleu uses 1000).
        seed: bootstrap RNG seed.

    Returns:
        `MetricResult` whose `per_sample` is sentence BLEU with effective order (as
        ``sacrebleu.sentence_bleu``); the corpus score is not their mean.
    """
    check_bleu_args(max_ngram_order, smooth_method)
    return score_metric(
        "bleu",
        predictions,
        references,
        tokenizer=tokenizer,
        lowercase=lowercase,
        confidence=confidence,
        n_resamples=n_resamples,
        seed=seed,
        max_ngram_order=max_ngram_order,
        smooth_method=smooth_method,
        smooth_value=smooth_value,
    )


def rouge(
    predictions: Sequence[str],
    references: Sequence[str],
    *,
    rouge_types: Sequence[str] = ROUGE_TYPES,
    tokenizer: str = "auto",
    lowercase: bool = False,
    confidence: bool = False,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, MetricResult]:
    """ROUGE-N and ROUGE-L F1 with precision and recall, equal to rouge-score given the same tokens.

    Per sample, the numbers are those of ``rouge_scorer.RougeScorer(rouge_types,
    tokenizer=T).score(reference, prediction)`` (times 100), where ``T.tokenize(text)`` is
    ``medsft.metrics.tokenize(text, tok, lowercase=lowercase)`` with the tokenizer ``tok`` named in
    the signature. The corpus score, precision and recall are the *means of the per-sample values*
    (so the corpus F1 is not the harmonic mean of the corpus P and R).

    Args:
        predictions: system outputs, one string per example.
        references: one reference per example (same order).
        rouge_types: any of ``rouge1``..``rouge9`` and ``rougeL`` (summary-level rougeLsum is not
            implemented).
        tokenizer: one of `TOKENIZERS`. Unlike rouge-score, no lowercasing or [a-z0-9] filter is
            applied unless asked for.
        lowercase: lowercase before tokenizing (rouge-score's default tokenizer does).
        confidence: attach a percentile bootstrap 95% interval of each corpus mean.
        n_resamples: bootstrap resamples.
        seed: bootstrap RNG seed.

    Returns:
        ``{rouge_type: MetricResult}``, e.g. ``result["rougeL"].score``.
    """
    types = check_rouge_types(rouge_types)
    check_n_resamples(n_resamples)
    options = dict(tokenizer=tokenizer, lowercase=lowercase, confidence=confidence)
    return {
        t: score_metric(
            "rouge",
            predictions,
            references,
            n_resamples=n_resamples,
            seed=seed,
            rouge_type=t,
            **options,
        )
        for t in types
    }


def vocab_f1(
    predictions: Sequence[str],
    references: Sequence[str],
    *,
    mode: str = "set",
    tokenizer: str = "auto",
    lowercase: bool = False,
    confidence: bool = False,
    n_resamples: int = 1000,
    seed: int = 0,
) -> MetricResult:
    """Precision, recall and F1 of the vocabulary a prediction shares with its reference.

    ``mode="set"`` (default; result name ``vocab-F1``): shared = |set(pred) & set(ref)|;
    precision = shared / |set(pred)|, recall = shared / |set(ref)|. This is the definition of the
    comparison script in a published Qwen3 medical SFT tutorial; repeated tokens count once, so it
    scores repetitive outputs higher. ``mode="multiset"`` (result name ``token-F1``, SQuAD-style):
    shared = sum over tokens of min(count in prediction, count in reference); precision = shared
    / #prediction tokens, recall = shared / #reference tokens. With the same tokenizer token-F1
    equals ROUGE-1 F1, so it is named apart: one name, one definition.

    Unlike SQuAD's script no answer normalisation (punctuation/article stripping) is done: choose
    `tokenizer` and `lowercase` instead. An empty prediction scores 0. The corpus scores are means
    of the per-sample values.

    Args:
        predictions: system outputs, one string per example.
        references: one reference per example (same order).
        mode: ``"set"`` or ``"multiset"`` (see above).
        tokenizer: one of `TOKENIZERS`.
        lowercase: lowercase before tokenizing.
        confidence: attach a percentile bootstrap 95% interval of the mean F1.
        n_resamples: bootstrap resamples.
        seed: bootstrap RNG seed.
    """
    check_vocab_f1_mode(mode)
    return score_metric(
        "vocab_f1",
        predictions,
        references,
        tokenizer=tokenizer,
        lowercase=lowercase,
        confidence=confidence,
        n_resamples=n_resamples,
        seed=seed,
        mode=mode,
    )


def distinct(
    predictions: Sequence[str],
    *,
    orders: Sequence[int] | int = (1, 2),
    tokenizer: str = "auto",
    lowercase: bool = False,
) -> dict[str, MetricResult]:
    """Distinct-n (Li et al. 2016): the share of n-grams across all predictions that are unique.

    Corpus score = (number of different n-grams over all predictions) / (number of n-grams over
    all predictions), times 100. `per_sample` is the same ratio within each prediction (0 for a
    prediction shorter than n tokens). Needs no references.

    Args:
        predictions: system outputs.
        orders: the n values, e.g. ``(1, 2)`` for distinct-1 and distinct-2.
        tokenizer: one of `TOKENIZERS` (``"auto"`` looks at the predictions only).
        lowercase: lowercase before tokenizing.

    No confidence interval: corpus distinct-n depends on the corpus size, and a bootstrap
    resample repeats predictions (lowering it) or, without repeats, shrinks the corpus (raising
    it), so no resampling scheme gives an interval around the estimate.

    Returns:
        ``{"distinct-1": MetricResult, ...}``, one per order.
    """
    if isinstance(orders, int):
        orders = (orders,)
    orders = tuple(orders)
    if not orders or any(not isinstance(n, int) or n < 1 for n in orders):
        raise ValueError(f"orders must be positive ints, e.g. (1, 2); got {orders!r}")
    results = [
        score_metric("distinct", predictions, tokenizer=tokenizer, lowercase=lowercase, n=n)
        for n in orders
    ]
    return {r.name: r for r in results}


def metric_name(metric: str, order: int | None = None) -> str:
    """The name a metric's results carry (and reports show), from its function's terms.

    Args:
        metric: a key of `METRICS` or a ROUGE type (``"rouge1"``, ``"rougeL"``).
        order: the value of the metric's option: the n of BLEU-n and distinct-n.

    ``metric_name("bleu", 4) == "BLEU-4"``, ``metric_name("rougeL") == "ROUGE-L"``.
    """
    entry, options = _resolve(metric, {})
    if order is not None and entry.option is not None:
        options[entry.option] = order
    try:
        return entry.name(**options)
    except TypeError:
        raise ValueError(f"metric_name({metric!r}) needs the order n") from None


def compare(
    metric: str,
    predictions_a: Sequence[str],
    predictions_b: Sequence[str],
    references: Sequence[str],
    *,
    tokenizer: str = "auto",
    lowercase: bool = False,
    n_resamples: int = 1000,
    seed: int = 0,
    **options: Any,
) -> PairedTest:
    """Paired bootstrap test of system A against system B on the same references.

    As ``sacrebleu --paired-bs``: both systems are rescored on the same resampled examples (corpus
    BLEU from pooled n-gram counts, or the mean of per-sample scores) and the p-value is that of
    'A and B score the same' (see `medsft.metrics.stats.paired_bootstrap`). With
    ``tokenizer="auto"`` the tokenizer is chosen from all three lists, so both systems share it.

    Args:
        metric: one of `COMPARABLE`, or a ROUGE type (``"rougeL"``).
        predictions_a: outputs of system A.
        predictions_b: outputs of system B, same examples and order.
        references: the shared references.
        tokenizer: one of `TOKENIZERS`.
        lowercase: lowercase before tokenizing.
        n_resamples: bootstrap resamples (sacrebleu uses 1000).
        seed: bootstrap RNG seed.
        **options: the metric's own options, as its function takes them: BLEU's
            ``max_ngram_order``, ``smooth_method``, ``smooth_value``; vocab-F1's ``mode``.

    Returns:
        `PairedTest` with ``delta`` = score(A) - score(B) and ``p_value``.
    """
    entry, options = _resolve(metric, options)
    if not entry.references:
        raise ValueError(
            f"metric {metric!r} scores predictions alone and has no paired test; compare one of "
            f"{', '.join(COMPARABLE)}"
        )
    check_n_resamples(n_resamples)
    preds_a, refs = as_pairs(predictions_a, references, "predictions_a")
    preds_b, _ = as_pairs(predictions_b, references, "predictions_b")
    kind = resolve_tokenizer(tokenizer, preds_a, preds_b, refs)

    def statistic(preds: tuple[str, ...]) -> Statistic:
        return entry.scored(tokenize_pairs(preds, refs, kind, lowercase), **options).statistic

    return paired_bootstrap(
        len(refs), statistic(preds_a), statistic(preds_b), n_resamples=n_resamples, seed=seed
    )
