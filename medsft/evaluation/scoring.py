"""Scores of every system against the references: text metrics, paired tests, think blocks, length."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: scoring a file of answers needs neither torch nor Lightning
    from medsft.evaluation.config import ScoringSettings
    from medsft.evaluation.systems import SystemOutput
    from medsft.evaluation.testset import Example

LENGTH_RATIO_FLAG = 2.0
"""A system whose mean answer length differs from the baseline's by more than this factor is
flagged: BLEU's brevity penalty and LLM judges both reward or punish length."""


def metric_tokenizer(scoring: ScoringSettings, references: Sequence[str]) -> str:
    """The one metric tokenizer of the run, decided from the references."""
    # Decided once: `auto` per call would let a system's gibberish (or an English answer) switch
    # the tokenizer and make its scores incomparable with the others'.
    from medsft.metrics import resolve_tokenizer

    return resolve_tokenizer(scoring.tokenizer, references)


def metric_variants(scoring: ScoringSettings) -> list[tuple[str, dict[str, Any]]]:
    """(metric key, options) of every score the settings ask for, in medsft.metrics.METRICS's
    order: one per value of each metric's setting (BLEU-1, BLEU-2, ...)."""
    from medsft.metrics import METRICS

    variants = []
    for key, metric in METRICS.items():
        if metric.setting is None or metric.option is None:
            variants.append((key, {}))
            continue
        values = getattr(scoring, metric.setting)
        for value in values if isinstance(values, (list, tuple)) else [values]:
            variants.append((key, {metric.option: value}))
    return variants


def metric_names(scoring: ScoringSettings) -> list[str]:
    """The names `score_texts` gives its scores under these settings, in order."""
    from medsft.metrics import METRICS

    return [METRICS[key].name(**options) for key, options in metric_variants(scoring)]


def has_references(entry: dict[str, Any]) -> bool:
    """Whether a score of `score_texts` measures agreement with the references (with an interval
    and a paired test), not a property of the answers alone (distinct-n)."""
    from medsft.metrics import METRICS

    return METRICS[entry["metric"]].references


def score_texts(
    predictions: Sequence[str], references: Sequence[str], scoring: ScoringSettings, tokenizer: str
) -> dict[str, dict[str, Any]]:
    """Every text metric of medsft.metrics.METRICS the settings ask for, keyed by its name
    (BLEU-4, ROUGE-L, ...); each entry names its table key under `metric`."""
    from medsft.metrics import score_metric

    scores = {}
    for key, options in metric_variants(scoring):
        result = score_metric(
            key,
            predictions,
            references,
            tokenizer=tokenizer,
            confidence=scoring.n_resamples > 0,
            n_resamples=max(scoring.n_resamples, 1),
            seed=scoring.seed,
            **options,
        )
        scores[result.name] = {"metric": key, **_metric_entry(result)}
    return scores


def _metric_entry(result: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"score": result.score, "signature": result.signature}
    if result.interval is not None:
        entry.update(
            low=result.interval.low, high=result.interval.high, level=result.interval.level
        )
    if result.precision is not None:
        entry.update(precision=result.precision, recall=result.recall)
    entry["per_sample"] = [round(float(x), 4) for x in result.per_sample]
    return entry


def paired_tests(
    outputs: list[SystemOutput], references: list[str], scoring: ScoringSettings, tokenizer: str
) -> list[dict[str, Any]]:
    """Paired bootstrap test of every pair of systems on every score with references."""
    from medsft.metrics import METRICS, compare

    metrics = [
        (key, options, METRICS[key].name(**options))
        for key, options in metric_variants(scoring)
        if METRICS[key].references
    ]
    tests = []
    for i, a in enumerate(outputs):
        for b in outputs[i + 1 :]:
            for key, options, label in metrics:
                test = compare(
                    key,
                    a.answers,
                    b.answers,
                    references,
                    tokenizer=tokenizer,
                    n_resamples=scoring.n_resamples,
                    seed=scoring.seed,
                    **options,
                )
                tests.append(
                    {
                        "a": a.name,
                        "b": b.name,
                        "metric": label,
                        "delta": test.delta,
                        "p_value": test.p_value,
                    }
                )
    return tests


def think_summary(
    output: SystemOutput, examples: list[Example], scoring: ScoringSettings, tokenizer: str
) -> dict[str, Any]:
    """How many answers have a think block, and (for reasoning data) their scores."""
    with_think = [t for t in output.thinks if t]
    out: dict[str, Any] = {
        "with_think": len(with_think),
        "mean_think_chars": round(sum(map(len, with_think)) / len(with_think), 1)
        if with_think
        else 0,
    }
    refs = [ex.reference_think for ex in examples]
    if all(refs) and with_think:
        # Reasoning data: the think block is scored against the reference reasoning, apart.
        out["metrics"] = score_texts([t or "" for t in output.thinks], refs, scoring, tokenizer)
    return out


def length_summary(texts: Sequence[str], tokenizer: str, cut_off: int | None = None) -> dict:
    """Mean and median length in characters and in metric tokens, and for generated answers the
    share that hit max_new_tokens (`cut_off` of them: cut short, not finished)."""
    from medsft.metrics import tokenize

    chars = [len(t.strip()) for t in texts]
    tokens = [len(tokenize(t, tokenizer)) for t in texts]
    return {
        "mean_chars": round(statistics.fmean(chars), 1),
        "median_chars": statistics.median(chars),
        "mean_tokens": round(statistics.fmean(tokens), 1),
        "median_tokens": statistics.median(tokens),
        "tokenizer": tokenizer,
        "hit_max_new_tokens": None if cut_off is None else cut_off / len(texts),
    }


def flag_lengths(lengths: dict[str, dict[str, Any]], baseline: str | None) -> None:
    """Add each entry's mean-length ratio to the baseline's, and flag systems beyond 2x (in
    place; the `reference` entry gets its ratio, never a flag)."""
    if baseline is None or baseline not in lengths:
        return
    base = lengths[baseline]["mean_chars"]
    for name, entry in lengths.items():
        ratio = entry["mean_chars"] / base if base else None
        entry["ratio_to_baseline"] = None if ratio is None else round(ratio, 2)
        entry["length_flag"] = (
            name != "reference"
            and ratio is not None
            and not 1 / LENGTH_RATIO_FLAG <= ratio <= LENGTH_RATIO_FLAG
        )


def slice_scores(
    outputs: list[SystemOutput], examples: list[Example], scoring: ScoringSettings, tokenizer: str
) -> dict[str, dict[str, Any]]:
    """Every text metric of every system on each slice of the test set (its `slice_column`'s
    values), with counts and intervals; per-example scores stay in `metrics`."""
    groups: dict[str, list[int]] = {}
    for ex in examples:
        groups.setdefault(str(ex.group), []).append(ex.index)
    out = {}
    for group, idx in sorted(groups.items(), key=lambda g: (-len(g[1]), g[0])):
        references = [examples[i].reference for i in idx]
        systems = {
            o.name: score_texts([o.answers[i] for i in idx], references, scoring, tokenizer)
            for o in outputs
        }
        for metrics in systems.values():
            for entry in metrics.values():
                entry.pop("per_sample")
        out[group] = {"n": len(idx), "systems": systems}
    return out
