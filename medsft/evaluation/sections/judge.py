"""The LLM judge's win rates against the baseline (medsft.evaluation.judging), or why it did not
run."""

from __future__ import annotations

import logging
from typing import Any

from medsft.evaluation.report import Evaluation, Section

log = logging.getLogger(__name__)


def compute(run: Evaluation) -> dict[str, Any]:
    """report.json's `judge`: the results of medsft.evaluation.judging.run_judge, or status
    `skipped` with the reason (no baseline, no endpoint, disabled)."""
    from medsft.evaluation.config import judge_status

    status = judge_status(run.config)
    if not status.run:
        log.info("judge skipped: %s", status.reason)
        return {"status": "skipped", "reason": status.reason, "baseline": run.config.baseline}
    from medsft.evaluation.judging import run_judge

    return run_judge(run.outputs, run.examples, run.config, run.out_dir)


def _rate(value: float | None, interval: dict[str, Any] | None) -> str:
    if value is None:
        return "–"
    text = f"{value:.2f}"
    return text + (f" [{interval['low']:.2f}, {interval['high']:.2f}]" if interval else "")


def render(report: dict[str, Any]) -> list[str]:
    """Win, tie and loss counts, the adjusted and length-controlled win rates, and the cost."""
    judge = report["judge"]
    lines = ["", "## Judge", ""]
    if judge["status"] == "skipped":
        return lines + [f"Skipped: {judge['reason']}."]
    if judge["status"] in ("failed", "partial"):
        lines += [f"**{judge['status'].capitalize()}**: {judge['reason']}"]
        if not judge.get("results"):
            return lines
        lines.append("")
    lines += [
        f"Judge `{judge['model']}` at {judge['endpoint']} (prompt language `{judge['language']}`), "
        f"every pair judged in both answer orders against **{judge['baseline']}**. A pair counts "
        "as a win or loss only when both orders agree; otherwise it is a tie (inconsistent). "
        "Length-controlled: the adjusted win rate predicted at equal answer lengths (a logistic "
        "regression of each pair's outcome on tanh of the standardised length difference, "
        "AlpacaEval 2's approach); far below the raw rate, the judge rewarded length.",
        "",
        "| system | win | tie | loss | adjusted win rate (95% CI) | length-controlled (95% CI) "
        "| consistency | errors | judged |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s, r in judge["results"].items():
        rate = _rate(r["adjusted_win_rate"], r["interval"])
        controlled = r.get("length_controlled") or {}
        lc_rate = _rate(r.get("length_controlled_win_rate"), controlled.get("interval"))
        consistency = "–" if r["consistency_rate"] is None else f"{r['consistency_rate']:.0%}"
        c = r["counts"]
        lines.append(
            f"| {s} | {c['win']} | {c['tie']} | {c['loss']} | {rate} | {lc_rate} | {consistency} "
            f"| {r['n_errors']} | {r['n_judged']}/{r['n_pairs']} |"
        )
    for s, r in judge["results"].items():
        if (r.get("length_controlled") or {}).get("reason"):
            lines += [
                "",
                f"Length-controlled rate of {s}: none, {r['length_controlled']['reason']}.",
            ]
    usage = [r["usage"] for r in judge["results"].values()]
    return lines + [
        "",
        f"Requests: {sum(u['requests'] for u in usage)}; tokens billed: "
        f"{sum(u['total_tokens'] for u in usage)}; replies reused from the cache: "
        f"{sum(u['cached_judgements'] for u in usage)}. Verdicts per pair in "
        "`judge_<system>.json`.",
    ]


SECTIONS = (Section("judge", render, compute, order=100),)
