"""The LLM judge of every system against the baseline (medsft.metrics.judge), for the report."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: judging answer files needs neither torch nor Lightning
    from medsft.evaluation.config import EvalConfig, JudgeSettings
    from medsft.evaluation.systems import SystemOutput
    from medsft.evaluation.testset import Example
    from medsft.metrics import HumanLabel
    from medsft.metrics.judge import JudgeResult

log = logging.getLogger(__name__)

EMPTY_ANSWER = "(no answer)"
"""What the judge is shown for an empty answer (it refuses empty texts)."""


def judge_settings(judge: JudgeSettings) -> JudgeSettings:
    """The config's judge as `judge_pairs` takes it: the system prompt read from its file (the
    config names a file, the judge takes the text)."""
    if judge.system_prompt is None:
        return judge
    text = Path(judge.system_prompt).read_text(encoding="utf-8").strip()
    return replace(judge, system_prompt=text)


def run_judge(
    outputs: list[SystemOutput], examples: list[Example], config: EvalConfig, out_dir: Path
) -> dict[str, Any]:
    """Each system's judged win rates against the baseline (both answer orders), the judge's
    position and verbosity biases, its agreement with people (`judge.labels`) and with a second
    judge (`judge.compare_with`).

    Status `failed` (with the reason) when judging had to stop, or when no pair was judged;
    `partial` (with the reason and each such system's counts under `partial`) when more than
    `judge.max_failed_share` of a system's pairs could not be judged; else `ok`. A second judge
    that has to stop is `failed` under `second_judge`, the first judge's results standing.
    """
    from medsft.metrics import judge_biases, read_labels
    from medsft.metrics.judge import JudgeConfigError, judge_pairs

    judge = config.judge
    baseline = next(o for o in outputs if o.name == config.baseline)
    results: dict[str, Any] = {}
    summary: dict[str, Any] = {
        "status": "ok",
        "baseline": baseline.name,
        "model": judge.model,
        "endpoint": judge.base_url or "OpenAI",
        "language": judge.language,
        "results": results,
    }
    settings = judge_settings(judge)
    second = judge_settings(judge.second_settings()) if judge.compare_with else None
    if second is not None:
        summary["second_judge"] = {
            "status": "ok",
            "model": second.model,
            "endpoint": second.base_url or "OpenAI",
        }
    labels = None
    if judge.labels is not None:
        labels = read_labels(judge.labels, [o.name for o in outputs])
        n = len(labels)
        summary["labels"] = {"path": judge.labels, "n": n, "compared": 0, "unmatched": n}
    cache = out_dir / "judge_cache.jsonl" if judge.cache else None
    questions = [ex.question for ex in examples]
    bootstrap = {"n_resamples": max(config.scoring.n_resamples, 1), "seed": config.scoring.seed}
    confidence = config.scoring.n_resamples > 0

    def ask(which: JudgeSettings, output: SystemOutput) -> JudgeResult:
        return judge_pairs(
            questions,
            _shown(output.answers),
            _shown(baseline.answers),
            which,
            cache_path=cache,
            progress=config.runtime.progress,
            **bootstrap,
        )

    for output in outputs:
        if output.name == baseline.name:
            continue
        try:
            result = ask(settings, output)
        except JudgeConfigError as err:
            log.error("judge failed: %s", err)
            summary.update(status="failed", reason=str(err))
            return summary
        _write(out_dir / f"judge_{output.name}.json", result)
        entry = results[output.name] = result.to_dict(include_records=False)
        entry["empty_answers_shown"] = sum(not a.strip() for a in output.answers)
        if result.n_judged == 0:
            errors = [r.error for r in result.records if r.error]
            reason = f"no pair of {output.name} could be judged; first error: {errors[0]}"
            log.error("judge failed: %s", reason)
            summary.update(status="failed", reason=reason)
            return summary
        entry["biases"] = judge_biases(result.records, confidence=confidence, **bootstrap)
        if labels is not None:
            entry["human_agreement"] = human_agreement(
                labels, output.name, baseline.name, result, examples, confidence, bootstrap
            )
            summary["labels"]["compared"] += entry["human_agreement"]["compared"]
            summary["labels"]["unmatched"] = len(labels) - summary["labels"]["compared"]
        if second is not None and summary["second_judge"]["status"] == "ok":
            try:
                other = ask(second, output)
            except JudgeConfigError as err:
                log.error("second judge failed: %s", err)
                summary["second_judge"].update(status="failed", reason=str(err))
            else:
                _write(out_dir / f"second_judge_{output.name}.json", other)
                entry["second_judge"] = judges_agreement(result, other, confidence, bootstrap)
        if result.failed_share > judge.max_failed_share:
            _mark_partial(summary, output.name, result.n_errors, result.n_pairs, judge)
    return summary


def human_agreement(
    labels: list[HumanLabel],
    system: str,
    baseline: str,
    result: JudgeResult,
    examples: list[Example],
    confidence: bool,
    bootstrap: dict[str, Any],
) -> dict[str, Any]:
    """People's verdicts on the pairs of `system` and `baseline` against the judge's: `labels`
    (of this pair), `compared` (with a judged pair), `unmatched` (the others: a question not in
    the test set, or a pair the judge could not judge), and the `agreement` (None: none
    compared).

    A label names its question by text or by `id`: the question's index in report.json (and in
    `judge_<system>.json`'s records).
    """
    from medsft.metrics import agreement, align_labels
    from medsft.metrics.agreement import OUTCOME_VERDICT

    verdicts = [OUTCOME_VERDICT.get(r.outcome) for r in result.records]
    people, judged, _ = align_labels(
        labels,
        system,
        baseline,
        [ex.question for ex in examples],
        verdicts,
        ids=[str(ex.index) for ex in examples],
    )
    n = sum({label.system_a, label.system_b} == {system, baseline} for label in labels)
    found = agreement(people, judged, confidence=confidence, **bootstrap) if people else None
    return {
        "labels": n,
        "compared": len(people),
        "unmatched": n - len(people),
        "agreement": asdict(found) if found else None,
    }


def judges_agreement(
    first: JudgeResult, second: JudgeResult, confidence: bool, bootstrap: dict[str, Any]
) -> dict[str, Any]:
    """The second judge's results on the same pairs (as `JudgeResult.to_dict`), and under
    `agreement` its verdicts against the first judge's on the pairs both judged (None: none)."""
    from medsft.metrics import agreement
    from medsft.metrics.agreement import OUTCOME_VERDICT

    both = [
        (OUTCOME_VERDICT[a.outcome], OUTCOME_VERDICT[b.outcome])
        for a, b in zip(first.records, second.records, strict=True)
        if a.outcome != "error" and b.outcome != "error"
    ]
    found = None
    if both:
        firsts, seconds = zip(*both, strict=True)
        found = agreement(firsts, seconds, confidence=confidence, **bootstrap)
    return {**second.to_dict(include_records=False), "agreement": asdict(found) if found else None}


def _write(path: Path, result: JudgeResult) -> None:
    path.write_text(
        json.dumps(result.to_dict(include_records=True), ensure_ascii=False, indent=1),
        encoding="utf-8",
    )


def _mark_partial(
    summary: dict[str, Any], name: str, failed: int, pairs: int, judge: JudgeSettings
) -> None:
    """Status `partial`: `failed` of `pairs` pairs of system `name` could not be judged."""
    partial = summary.setdefault("partial", {})
    partial[name] = {"failed": failed, "pairs": pairs, "share": round(failed / pairs, 4)}
    systems = "; ".join(
        f"{n}: {c['failed']} of {c['pairs']} ({c['share']:.0%})" for n, c in partial.items()
    )
    reason = (
        f"pairs that could not be judged exceed judge.max_failed_share "
        f"({judge.max_failed_share:.0%}): {systems}; their rates leave those pairs out "
        f"(errors in judge_<system>.json)"
    )
    log.warning("judge partial: %s", reason)
    summary.update(status="partial", reason=reason)


def _shown(answers: list[str]) -> list[str]:
    return [a if a.strip() else EMPTY_ANSWER for a in answers]
