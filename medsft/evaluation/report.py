"""report.md from report.json's content, one function per section."""

from __future__ import annotations

from typing import Any

from medsft.evaluation.scoring import LENGTH_RATIO_FLAG


def render_markdown(report: dict[str, Any]) -> str:
    """report.md from report.json's content."""
    sections = [
        _header,
        _systems,
        _lengths,
        _scores,
        _paired,
        _slices,
        _thinking,
        _mcq,
        _leakage,
        _judge,
        _ablation,
        _training,
        _plots,
        _examples,
        _signatures,
    ]
    lines: list[str] = []
    for section in sections:
        lines += section(report)
    return "\n".join(lines) + "\n"


def _fmt(entry: dict[str, Any] | None, digits: int = 2) -> str:
    if not entry or entry.get("score") is None:
        return "–"
    text = f"{entry['score']:.{digits}f}"
    if "low" in entry:
        text += f" [{entry['low']:.{digits}f}, {entry['high']:.{digits}f}]"
    return text


VOCAB_F1_MODE_NOTE = {
    "set": "vocab-F1 (set): F1 of the token types a prediction shares with its reference, each "
    "counted once (`scoring.vocab_f1_mode: multiset` counts repeats, which equals ROUGE-1 F1).",
    "multiset": "vocab-F1 (multiset): token counts, SQuAD-style; with the same tokens this equals "
    "ROUGE-1 F1 (`scoring.vocab_f1_mode: set` counts each token type once instead).",
}
"""What report.md says about the vocab-F1 column, per overlap mode."""


def _vocab_f1_mode(report: dict[str, Any]) -> str | None:
    """The vocab-F1 overlap mode of this report, read from its signature (None: not scored)."""
    metrics = next(iter(report["metrics"].values()), {})
    entry = metrics.get("vocab-F1")
    if not entry:
        return None
    return "set" if "|overlap:set|" in entry["signature"] else "multiset"


def _label(name: str, vocab_mode: str | None) -> str:
    return f"{name} ({vocab_mode})" if name == "vocab-F1" and vocab_mode else name


def _cell(text: str | None, limit: int = 300) -> str:
    if text is None:
        return "–"
    text = text.strip()
    text = text if len(text) <= limit else text[:limit] + "…"
    return text.replace("|", "\\|").replace("\n", "<br>") or "*(empty)*"


def _header(report: dict[str, Any]) -> list[str]:
    test = report["test_set"]
    generated = [s for s in report["systems"] if s.get("generation")]
    where = "; answers of model systems in `generations/<system>.jsonl`" if generated else ""
    duplicates = test.get("duplicates") or {}
    repeated = ""
    if duplicates.get("found"):
        how = "dropped" if duplicates["dropped"] else "kept, each scored"
        repeated = (
            f"; {duplicates['found']} repeated question(s) {how} "
            f"(`test_set.duplicates: {duplicates['policy']}`)"
        )
    return [
        "# Evaluation report",
        "",
        f"Test set: `{test['source']}` (preset `{test['preset']}`, {test['n']} questions"
        f"{repeated}). "
        f"Generated {report['created']} by medsft {report['medsft_version']}; resolved config in "
        f"`config.yaml`{where}; every score and answer in `report.json`.",
        "",
    ]


def _generation_cell(gen: dict[str, Any]) -> str:
    if not gen:
        return "from file"
    if gen.get("endpoint") and gen.get("generated"):
        how = f"{gen['generated']} asked of {gen['endpoint']} in {gen['seconds']:.1f} s"
    elif gen.get("generated"):
        how = (
            f"{gen['generated']} generated in {gen['seconds']:.1f} s, "
            f"{gen['tokens_per_second']:.1f} tok/s ({gen['world_size']} device(s))"
        )
    else:
        how = f"{gen['reused']} reused from a previous run"
    finish = gen["finish_reasons"]
    # Endpoint systems' notes (a partial status, sampling with no visible effect): one line each.
    notes = "".join(f"; **{_cell(note)}**" for note in gen.get("notes", []))
    return how + (
        f"; {finish['stop']} stopped at end of turn, {finish['length']} hit max_new_tokens"
        f" (mean {gen['mean_new_tokens']} tokens){notes}"
    )


def _systems(report: dict[str, Any]) -> list[str]:
    lines = [
        "## Systems",
        "",
        "| system | kind | source | answers | generation |",
        "|---|---|---|---|---|",
    ]
    for s in report["systems"]:
        empty = sum(not a.strip() for a in s["answers"])
        lines.append(
            f"| {s['name']} | {s['kind']} | `{s['source']}` | {len(s['answers'])}"
            f"{f' ({empty} empty)' if empty else ''} | {_generation_cell(s.get('generation'))} |"
        )
    return lines


def _lengths(report: dict[str, Any]) -> list[str]:
    lengths = report["length"]
    baseline = report["judge"].get("baseline")
    tokenizer = lengths["reference"]["tokenizer"]
    lines = [
        "",
        "## Answer length",
        "",
        f"Characters, and tokens of the metric tokenizer (`{tokenizer}`). BLEU's brevity penalty "
        "and LLM judges both reward or punish length: read every score beside it.",
        "",
        "| system | mean chars | median chars | mean tokens | median tokens | hit max_new_tokens"
        + (f" | vs {baseline} |" if baseline else " |"),
        "|---" * (6 + bool(baseline)) + "|",
    ]
    flagged = []
    for name, v in lengths.items():
        cut = "–" if v["hit_max_new_tokens"] is None else f"{v['hit_max_new_tokens']:.0%}"
        row = (
            f"| {name} | {v['mean_chars']} | {v['median_chars']} | {v['mean_tokens']} | "
            f"{v['median_tokens']} | {cut} |"
        )
        if baseline:
            ratio = v.get("ratio_to_baseline")
            flag = " ⚠" if v.get("length_flag") else ""
            row += f" {'–' if ratio is None else f'{ratio:.2f}×'}{flag} |"
            if v.get("length_flag") and name != "reference":
                flagged.append(name)
        lines.append(row)
    if flagged:
        lines += [
            "",
            f"⚠ Mean length differs from {baseline}'s by more than "
            f"{LENGTH_RATIO_FLAG:g}×: {', '.join(flagged)}. Compare their BLEU and judge "
            "results with care (AlpacaEval's length-controlled win rate exists for this).",
        ]
    return lines


def _scores(report: dict[str, Any]) -> list[str]:
    systems = [s["name"] for s in report["systems"]]
    names = list(report["metrics"][systems[0]])
    has_ppl = any(report["perplexity"].get(s) for s in systems)
    vocab = _vocab_f1_mode(report)
    lines = [
        "",
        "## Scores against the references (95% bootstrap intervals)",
        "",
        f"Metric tokenizer: `{report['metric_tokenizer']}`. "
        + (f"{VOCAB_F1_MODE_NOTE[vocab]} " if vocab else "")
        + "Perplexity: token-weighted, of the *reference* answers under each model (lower is better)."
        + (
            " Distinct-n measures diversity, not agreement, and has no interval."
            if any(n.startswith("distinct") for n in names)
            else ""
        ),
        "",
        "| system | "
        + " | ".join(_label(n, vocab) for n in names)
        + (" | PPL (test) | PPL (val)" if has_ppl else "")
        + " |",
        "|---" * (len(names) + 1 + 2 * has_ppl) + "|",
    ]
    for s in systems:
        row = [_fmt(report["metrics"][s][n]) for n in names]
        if has_ppl:
            ppl = report["perplexity"].get(s, {})
            row += [_fmt(ppl.get("test")), _fmt(ppl.get("val"))]
        lines.append(f"| {s} | " + " | ".join(row) + " |")
    return lines


def _paired(report: dict[str, Any]) -> list[str]:
    if not report.get("paired"):
        return []
    lines = [
        "",
        "### Paired bootstrap tests (A − B, two-sided p)",
        "",
        "| A | B | metric | Δ | p |",
        "|---|---|---|---|---|",
    ]
    vocab = _vocab_f1_mode(report)
    return lines + [
        f"| {t['a']} | {t['b']} | {_label(t['metric'], vocab)} | {t['delta']:+.2f} | "
        f"{t['p_value']:.3f} |"
        for t in report["paired"]
    ]


def _slices(report: dict[str, Any]) -> list[str]:
    slices = report.get("slices")
    if not slices:
        return []
    groups = slices["groups"]
    systems = [s["name"] for s in report["systems"]]
    names = [n for n in report["metrics"][systems[0]] if not n.startswith("distinct")]
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
            "| "
            + slices["column"]
            + " | n | "
            + " | ".join(_label(n, _vocab_f1_mode(report)) for n in names)
            + " |",
            "|---|---|" + "---|" * len(names),
        ]
        for group, g in groups.items():
            cells = [_fmt(g["systems"][system][n]) for n in names]
            lines.append(f"| {_cell(group, 60)} | {g['n']} | " + " | ".join(cells) + " |")
    return lines


def _thinking(report: dict[str, Any]) -> list[str]:
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
            scored = ", ".join(f"{k} {_fmt(e)}" for k, e in v["metrics"].items())
            lines.append(f"\n{s}'s think blocks vs the reference reasoning: {scored}")
    return lines


def _mcq(report: dict[str, Any]) -> list[str]:
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
        lines.append(f"| {name} | {_fmt(r['accuracy'], 1)} | {unparsed} |")
    lines += [
        "",
        "### Accuracy per subject (%, 95% CI)",
        "",
        "| subject | n | " + " | ".join(results) + " |",
        "|---|---|" + "---|" * len(results),
    ]
    for subject, n in mcq["subjects"].items():
        cells = [_fmt(r["subjects"][subject], 1) for r in results.values()]
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
    lines += [
        "",
        "Prompt of the first question (`loglik`; the model's next token is scored):",
        "",
        f"{fence}text",
        mcq["prompt_example"],
        fence,
    ]
    if "generate" in mcq["methods"]:
        lines += [
            "",
            "`generate` sends the zero-shot prompt as the user message of the chat "
            "template, and reads letters from cues like 答案是 B / 答案：A、D / answer is C.",
        ]
    return lines


def _leakage(report: dict[str, Any]) -> list[str]:
    from medsft.evaluation.leakage import render_leakage

    return render_leakage(report["leakage"]) if report.get("leakage") else []


def _ablation(report: dict[str, Any]) -> list[str]:
    from medsft.evaluation.ablation import render_ablation

    return render_ablation(report.get("ablation"))


def _judge(report: dict[str, Any]) -> list[str]:
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


def _rate(value: float | None, interval: dict[str, Any] | None) -> str:
    if value is None:
        return "–"
    text = f"{value:.2f}"
    return text + (f" [{interval['low']:.2f}, {interval['high']:.2f}]" if interval else "")


def _training(report: dict[str, Any]) -> list[str]:
    if not report.get("training"):
        return []
    lines = ["", "## Training", ""]
    for s, t in report["training"].items():
        finals = ", ".join(
            f"{tag} {v['last']:.4g} (min {v['min']:.4g})"
            for tag, v in t["scalars"].items()
            if tag.endswith(("loss", "ppl"))
        )
        lines += [f"**{s}** (`{t['run_dir']}`): {finals or 'no scalars logged'}.", ""]
        if t.get("plot"):
            lines += [f"![training curves of {s}]({t['plot']})", ""]
    return lines


def _plots(report: dict[str, Any]) -> list[str]:
    return ["", "## Plots", "", "![metrics](metrics.png)", ""]


def _examples(report: dict[str, Any]) -> list[str]:
    systems = [s["name"] for s in report["systems"]]
    lines = ["## Examples", ""]
    for ex in report["examples"]:
        lines += [
            f"### Q{ex['index']}: {_cell(ex['question'], 200)}",
            "",
            "| | answer |",
            "|---|---|",
            f"| reference | {_cell(ex['reference'])} |",
        ]
        lines += [f"| {s} | {_cell(ex['answers'][s])} |" for s in systems]
        lines.append("")
    return lines


def _signatures(report: dict[str, Any]) -> list[str]:
    systems = [s["name"] for s in report["systems"]]
    lines = ["## Signatures", ""]
    lines += [f"- `{e['signature']}`" for e in report["metrics"][systems[0]].values()]
    for s in systems:
        for name, ppl in report["perplexity"].get(s, {}).items():
            lines.append(f"- {s} ({name}): `{ppl['signature']}`")
    return lines
