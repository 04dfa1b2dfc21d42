"""The LLM judge of every system against the baseline (medsft.metrics.judge), for the report."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: judging answer files needs neither torch nor Lightning
    from medsft.evaluation.config import EvalConfig, JudgeSettings
    from medsft.evaluation.systems import SystemOutput
    from medsft.evaluation.testset import Example

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
    """Each system's judged win rates against the baseline (both answer orders).

    Status `failed` (with the reason) when judging had to stop, or when no pair was judged;
    `partial` (with the reason and each such system's counts under `partial`) when more than
    `judge.max_failed_share` of a system's pairs could not be judged; else `ok`.
    """
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
    cache = out_dir / "judge_cache.jsonl" if judge.cache else None
    questions = [ex.question for ex in examples]
    for output in outputs:
        if output.name == baseline.name:
            continue
        try:
            result = judge_pairs(
                questions,
                _shown(output.answers),
                _shown(baseline.answers),
                settings,
                cache_path=cache,
                n_resamples=max(config.scoring.n_resamples, 1),
                seed=config.scoring.seed,
                progress=config.runtime.progress,
            )
        except JudgeConfigError as err:
            log.error("judge failed: %s", err)
            summary.update(status="failed", reason=str(err))
            return summary
        (out_dir / f"judge_{output.name}.json").write_text(
            json.dumps(result.to_dict(include_records=True), ensure_ascii=False, indent=1),
            encoding="utf-8",
        )
        results[output.name] = result.to_dict(include_records=False)
        results[output.name]["empty_answers_shown"] = sum(not a.strip() for a in output.answers)
        if result.n_judged == 0:
            errors = [r.error for r in result.records if r.error]
            reason = f"no pair of {output.name} could be judged; first error: {errors[0]}"
            log.error("judge failed: %s", reason)
            summary.update(status="failed", reason=reason)
            return summary
        if result.failed_share > judge.max_failed_share:
            _mark_partial(summary, output.name, result.n_errors, result.n_pairs, judge)
    return summary


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
