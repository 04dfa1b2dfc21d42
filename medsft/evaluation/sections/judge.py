"""The LLM judge's win rates against the baseline (medsft.evaluation.judging), or why it did not
run."""

from __future__ import annotations

import logging
from typing import Any

from medsft.evaluation.report import Evaluation, Section
from medsft.metrics.length_control import SIMILAR_LENGTH

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
    """Win, tie and loss counts, the adjusted and length-controlled win rates, the judge's
    biases, its agreement with people and with a second judge, and the cost."""
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
        "Length-controlled: the adjusted win rate predicted at equal answer lengths (AlpacaEval "
        "2's approach: a fit on the length difference, ratio and which answer is longer, read at "
        "equal length; none when these lengths cannot give one). Similar length: the win rate on "
        f"the pairs whose lengths differ by at most {SIMILAR_LENGTH:.0%}, pairs where the system's answer is longer "
        "and shorter weighing half each, and how many pairs that is (n). Below, A is the system and "
        "B the baseline.",
        "",
        "| system | win | tie | loss | adjusted win rate (95% CI) | length-controlled (95% CI) "
        "| similar length (95% CI) | consistency | errors | judged |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s, r in judge["results"].items():
        rate = _rate(r["adjusted_win_rate"], r["interval"])
        controlled = r.get("length_controlled") or {}
        lc_rate = _rate(r.get("length_controlled_win_rate"), controlled.get("interval"))
        consistency = "–" if r["consistency_rate"] is None else f"{r['consistency_rate']:.0%}"
        c = r["counts"]
        lines.append(
            f"| {s} | {c['win']} | {c['tie']} | {c['loss']} | {rate} | {lc_rate} "
            f"| {_similar(controlled.get('similar_length'))} | {consistency} "
            f"| {r['n_errors']} | {r['n_judged']}/{r['n_pairs']} |"
        )
    for s, r in judge["results"].items():
        controlled = r.get("length_controlled") or {}
        if controlled.get("note"):
            lines += ["", f"Length, {s}: {controlled['note']}"]
        elif controlled.get("reason"):
            lines += ["", f"Length-controlled rate of {s}: none, {controlled['reason']}."]
        if r.get("biases"):
            lines += ["", _position(s, r["biases"]["position"])]
            lines += ["", _verbosity(s, r["biases"]["verbosity"])]
    lines += _agreements(judge)
    usage = [r["usage"] for r in judge["results"].values()]
    lines += [
        "",
        f"Requests: {sum(u['requests'] for u in usage)}; tokens billed: "
        f"{sum(u['total_tokens'] for u in usage)}; replies reused from the cache: "
        f"{sum(u['cached_judgements'] for u in usage)}. Verdicts per pair in "
        "`judge_<system>.json`.",
    ]
    second = [r["second_judge"]["usage"] for r in judge["results"].values() if "second_judge" in r]
    if second:
        lines[-1] += (
            f" Second judge: requests {sum(u['requests'] for u in second)}, tokens billed "
            f"{sum(u['total_tokens'] for u in second)}, replies reused "
            f"{sum(u['cached_judgements'] for u in second)}; its verdicts in "
            "`second_judge_<system>.json`."
        )
    return lines


def _similar(similar: dict[str, Any] | None) -> str:
    """The similar-length win rate's table cell: the rate and interval, and its n."""
    if not similar:
        return "–"
    return f"{_rate(similar['win_rate'], similar['interval'])} (n={similar['n']})"


def _position(system: str, position: dict[str, Any]) -> str:
    """One line: the share of single-order verdicts that chose the answer shown first."""
    share = position["first_position_share"]
    if share is None:
        return (
            f"Position bias, {system}: no single-order verdict chose an answer "
            f"({position['n_pairs']} pairs)."
        )
    interval = position["interval"]
    bounds = f" [{interval['low']:.0%}, {interval['high']:.0%}]" if interval else ""
    return (
        f"Position bias, {system}: the answer shown first won {share:.0%}{bounds} of the "
        f"{position['n_decisive']} single-order verdicts that chose one (50%: none); "
        f"{position['both_orders_first']} pairs chose the first-shown answer in both orders, "
        f"{position['both_orders_second']} the second-shown."
    )


def _verbosity(system: str, verbosity: dict[str, Any]) -> str:
    """One line: the longer answer's win rate, and the slope of the verdict on the length ratio."""
    rate = verbosity["longer_win_rate"]
    if rate is None:
        return f"Verbosity bias, {system}: no pair of unequal length."
    slope = verbosity["slope"]
    if slope is None:
        fit = "no slope (the verdicts or the length ratios do not vary)"
    else:
        interval = verbosity["slope_interval"]
        bounds = f" [{interval['low']:+.2f}, {interval['high']:+.2f}]" if interval else ""
        fit = f"the verdict's logit moves {slope:+.2f}{bounds} per unit of log length ratio"
    return (
        f"Verbosity bias, {system}: the longer answer won "
        f"{_rate(rate, verbosity['longer_win_interval'])} of {verbosity['n_unequal']} pairs of "
        f"unequal length (0.50: none; ties half); {fit}."
    )


def _agreements(judge: dict[str, Any]) -> list[str]:
    """How far to trust the judge: its agreement with people's verdicts (`judge.labels`) and
    with a second judge (`judge.compare_with`), each with its confusion table."""
    labels, second = judge.get("labels"), judge.get("second_judge")
    if labels is None and second is None:
        return []
    lines = ["", "### Agreement", ""]
    rows = []
    for s, r in judge["results"].items():
        if "human_agreement" in r:
            human = r["human_agreement"]
            rows.append((s, "people", "the judge", human["agreement"], f"{human['unmatched']}"))
        if "second_judge" in r:
            other = f"judge `{second['model']}`"
            rows.append((s, "the judge", other, r["second_judge"]["agreement"], "–"))
    if labels is not None:
        lines += [
            f"People's verdicts: {labels['n']} in `{labels['path']}`; {labels['compared']} "
            f"compared with a judged pair, {labels['unmatched']} matched none (a question not in "
            "the test set, a pair without the baseline, or a pair the judge could not judge).",
            "",
        ]
    if second is not None and second["status"] == "failed":
        lines += [f"**Second judge failed**: {second['reason']}", ""]
    if not rows:
        return lines
    lines += [
        "Verdicts compared per pair (MT-bench's figures): agreement counting a tie as a verdict, "
        "agreement on the pairs where neither said tie, and Cohen's kappa (agreement beyond "
        "chance: 0 chance, 1 perfect; – when both gave one and the same verdict throughout).",
        "",
        "| system | the judge against | pairs | agreement | without ties (pairs) "
        "| Cohen's kappa (95% CI) | unmatched labels |",
        "|---|---|---|---|---|---|---|",
    ]
    for s, first, second_rater, found, unmatched in rows:
        other = second_rater if first == "the judge" else first
        if found is None:
            lines.append(f"| {s} | {other} | 0 | – | – | – | {unmatched} |")
            continue
        without = found["agreement_without_ties"]
        without = "–" if without is None else f"{without:.0%}"
        lines.append(
            f"| {s} | {other} | {found['n']} | {found['agreement']:.0%} "
            f"| {without} ({found['n_without_ties']}) "
            f"| {_rate(found['kappa'], found['kappa_interval'])} | {unmatched} |"
        )
    for s, r in judge["results"].items():
        if "second_judge" in r:
            other = r["second_judge"]
            lines += [
                "",
                f"Second judge `{second['model']}`, {s}: adjusted win rate "
                f"{_rate(other['adjusted_win_rate'], other['interval'])}, "
                f"{other['n_judged']}/{other['n_pairs']} pairs judged.",
            ]
    for s, first, second_rater, found, _ in rows:
        if found is not None:
            lines += _confusion(s, judge["baseline"], (first, second_rater), found["confusion"])
    return lines


def _confusion(
    system: str, baseline: str, raters: tuple[str, str], confusion: dict[str, Any]
) -> list[str]:
    """A comparison's confusion table: rows the first rater's verdicts, columns the second's."""
    names = {"a": f"{system} better", "b": f"{baseline} better", "tie": "tie"}
    lines = [
        "",
        f"Confusion, {system}: rows {raters[0]}, columns {raters[1]}.",
        "",
        f"| {raters[0]} | " + " | ".join(names.values()) + " |",
        "|---" * 4 + "|",
    ]
    return lines + [
        f"| {names[v]} | " + " | ".join(str(confusion[v][w]) for w in names) + " |" for v in names
    ]


SECTIONS = (Section("judge", render, compute, order=100),)
