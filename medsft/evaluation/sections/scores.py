"""Scores against the references: the metrics table, paired tests, slices, think blocks, and
each score's signature."""

from __future__ import annotations

from typing import Any

from medsft.evaluation.report import Section, cell, fmt
from medsft.evaluation.scoring import has_references


def _notes(metrics: dict[str, dict[str, Any]]) -> str:
    """What the metrics table (medsft.metrics.METRICS) says about the metrics of this report."""
    from medsft.metrics import METRICS

    keys = dict.fromkeys(entry["metric"] for entry in metrics.values())
    return "".join(f"{METRICS[key].note} " for key in keys if METRICS[key].note)


def render_scores(report: dict[str, Any]) -> list[str]:
    """Every text metric and perplexity of every system, with its interval."""
    systems = [s["name"] for s in report["systems"]]
    names = list(report["metrics"][systems[0]])
    has_ppl = any(report["perplexity"].get(s) for s in systems)
    lines = [
        "",
        "## Scores against the references (95% bootstrap intervals)",
        "",
        f"Metric tokenizer: `{report['metric_tokenizer']}`. "
        + _notes(report["metrics"][systems[0]])
        + "Perplexity: token-weighted, of the *reference* answers under each model (lower is better).",
        "",
        "| system | " + " | ".join(names) + (" | PPL (test) | PPL (val)" if has_ppl else "") + " |",
        "|---" * (len(names) + 1 + 2 * has_ppl) + "|",
    ]
    for s in systems:
        row = [fmt(report["metrics"][s][n]) for n in names]
        if has_ppl:
            ppl = report["perplexity"].get(s, {})
            row += [fmt(ppl.get("test")), fmt(ppl.get("val"))]
        lines.append(f"| {s} | " + " | ".join(row) + " |")
    return lines


def render_paired(report: dict[str, Any]) -> list[str]:
    """The paired bootstrap test of every pair of systems on every metric that has one."""
    if not report.get("paired"):
        return []
    lines = [
        "",
        "### Paired bootstrap tests (A − B, two-sided p)",
        "",
        "| A | B | metric | Δ | p |",
        "|---|---|---|---|---|",
    ]
    return lines + [
        f"| {t['a']} | {t['b']} | {t['metric']} | {t['delta']:+.2f} | {t['p_value']:.3f} |"
        for t in report["paired"]
    ]


def render_slices(report: dict[str, Any]) -> list[str]:
    """Scores per value of `test_set.slice_column`, one table per system."""
    slices = report.get("slices")
    if not slices:
        return []
    groups = slices["groups"]
    systems = [s["name"] for s in report["systems"]]
    metrics = report["metrics"][systems[0]]
    names = [n for n, entry in metrics.items() if has_references(entry)]
    lines = [
        "",
        f"### Scores by `{slices['column']}` (95% bootstrap intervals)",
        "",
        "Small slices have wide intervals: compare systems within a slice, and read n.",
    ]
    for system in systems:
        lines += [
            "",
            f"**{system}**",
            "",
            "| " + slices["column"] + " | n | " + " | ".join(names) + " |",
            "|---|---|" + "---|" * len(names),
        ]
        for group, g in groups.items():
            cells = [fmt(g["systems"][system][n]) for n in names]
            lines.append(f"| {cell(group, 60)} | {g['n']} | " + " | ".join(cells) + " |")
    return lines


def render_thinking(report: dict[str, Any]) -> list[str]:
    """How many answers have a think block, and their scores against reference reasoning."""
    think = {s: v for s, v in report["think"].items() if v["with_think"]}
    if not think:
        return []
    lines = [
        "",
        "### Thinking",
        "",
        "| system | answers with a think block | mean chars |",
        "|---|---|---|",
    ]
    lines += [f"| {s} | {v['with_think']} | {v['mean_think_chars']} |" for s, v in think.items()]
    for s, v in think.items():
        if "metrics" in v:
            scored = ", ".join(f"{k} {fmt(e)}" for k, e in v["metrics"].items())
            lines.append(f"\n{s}'s think blocks vs the reference reasoning: {scored}")
    return lines


def render_signatures(report: dict[str, Any]) -> list[str]:
    """How each score was computed: every metric's and perplexity's signature."""
    systems = [s["name"] for s in report["systems"]]
    lines = ["## Signatures", ""]
    lines += [f"- `{e['signature']}`" for e in report["metrics"][systems[0]].values()]
    for s in systems:
        for name, ppl in report["perplexity"].get(s, {}).items():
            lines.append(f"- {s} ({name}): `{ppl['signature']}`")
    return lines


SECTIONS = (
    Section("metrics", render_scores, order=40),
    Section("paired", render_paired, order=50),
    Section("slices", render_slices, order=60),
    Section("think", render_thinking, order=70),
    Section("signatures", render_signatures, order=150),
)
