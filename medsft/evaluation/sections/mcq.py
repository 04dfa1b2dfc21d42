"""Multiple-choice accuracy (`mcq_set`): per system and method, per subject, paired tests."""

from __future__ import annotations

from typing import Any

from medsft.evaluation.report import Evaluation, Section, fmt


def compute(run: Evaluation) -> dict[str, Any] | None:
    """report.json's `mcq` (medsft.evaluation.mcq.mcq_report) and mcq.png; None without `mcq_set`."""
    if run.mcq is None:
        return None
    from medsft.evaluation.mcq import mcq_report
    from medsft.evaluation.plots import plot_mcq

    mcq = mcq_report(run.mcq, run.mcq_runs, run.config)
    if plot_mcq(mcq, run.out_dir / "mcq.png"):
        mcq["plot"] = "mcq.png"
    return mcq


def render(report: dict[str, Any]) -> list[str]:
    """Accuracy tables, the paired tests, the plot and the first question's prompt."""
    mcq = report.get("mcq")
    if not mcq:
        return []
    results = mcq["results"]
    lines = [
        "",
        "## Multiple choice",
        "",
        f"`{mcq['source']}`: {mcq['n']} questions ({mcq['multi_answer']} with several answers, "
        f"scored as exact set match), {len(mcq['subjects'])} subject(s), {mcq['shots']}-shot; "
        f"chance {mcq['chance']:.1f}%. Methods: `loglik` = the likeliest option letter after the "
        "prompt (one forward pass, no chat template); `generate` = the letters extracted from "
        "the answer generated with the chat template (unparseable answers count as wrong).",
        "",
        "| system / method | accuracy % (95% CI) | unparseable |",
        "|---|---|---|",
    ]
    for name, r in results.items():
        unparsed = r["unparseable"] if r["method"] == "generate" else "–"
        lines.append(f"| {name} | {fmt(r['accuracy'], 1)} | {unparsed} |")
    lines += [
        "",
        "### Accuracy per subject (%, 95% CI)",
        "",
        "| subject | n | " + " | ".join(results) + " |",
        "|---|---|" + "---|" * len(results),
    ]
    for subject, n in mcq["subjects"].items():
        cells = [fmt(r["subjects"][subject], 1) for r in results.values()]
        lines.append(f"| {subject} | {n} | " + " | ".join(cells) + " |")
    if mcq["paired"]:
        lines += [
            "",
            "Paired bootstrap tests of accuracy (A − B, points; two-sided p): "
            + "; ".join(
                f"{t['a']} − {t['b']}: {t['delta']:+.1f} (p {t['p_value']:.3f})"
                for t in mcq["paired"]
            )
            + ".",
        ]
    if mcq.get("plot"):
        lines += ["", f"![multiple-choice accuracy]({mcq['plot']})"]
    fence = "````"
    ran = {r["method"] for r in results.values()}
    if "loglik" in ran:
        lines += [
            "",
            "Prompt of the first question (`loglik`; the model's next token is scored):",
            "",
            f"{fence}text",
            mcq["prompt_example"],
            fence,
        ]
    if "generate" in ran:
        lines += [
            "",
            "Prompt of the first question (`generate`; sent zero-shot as the user message of the "
            "chat template, and letters read from cues like 答案是 B / 答案：A、D / answer is C):",
            "",
            f"{fence}text",
            mcq["chat_prompt_example"],
            fence,
        ]
    return lines


SECTIONS = (Section("mcq", render, compute, order=80),)
