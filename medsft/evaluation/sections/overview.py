"""The header, the systems, answer length, and a few questions with every answer side by side."""

from __future__ import annotations

from typing import Any

from medsft.evaluation.report import Evaluation, Section, cell
from medsft.evaluation.scoring import LENGTH_RATIO_FLAG


def render_header(report: dict[str, Any]) -> list[str]:
    """The title, the test set and where the files are."""
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
    notes = "".join(f"; **{cell(note)}**" for note in gen.get("notes", []))
    return how + (
        f"; {finish['stop']} stopped at end of turn, {finish['length']} hit max_new_tokens"
        f" (mean {gen['mean_new_tokens']} tokens){notes}"
    )


def render_systems(report: dict[str, Any]) -> list[str]:
    """Each system: its kind, source, answers and how they were generated."""
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


def render_lengths(report: dict[str, Any]) -> list[str]:
    """Answer length per system, flagged where it differs from the baseline's by over 2x."""
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


def examples_shown(run: Evaluation) -> list[dict[str, Any]]:
    """`scoring.examples` questions spread over the test set, with the reference and every
    system's answer."""
    examples, k = run.examples, run.config.scoring.examples
    n = len(examples)
    if k <= 0:
        indices: list[int] = []
    elif k >= n:
        indices = list(range(n))
    else:
        indices = sorted({round(i * (n - 1) / max(k - 1, 1)) for i in range(k)})
    return [
        {
            "index": i,
            "question": examples[i].question,
            "reference": examples[i].reference,
            "answers": {o.name: o.answers[i] for o in run.outputs},
        }
        for i in indices
    ]


def render_examples(report: dict[str, Any]) -> list[str]:
    """The questions of `examples_shown`, the reference and every system's answer in a table."""
    systems = [s["name"] for s in report["systems"]]
    lines = ["## Examples", ""]
    for ex in report["examples"]:
        lines += [
            f"### Q{ex['index']}: {cell(ex['question'], 200)}",
            "",
            "| | answer |",
            "|---|---|",
            f"| reference | {cell(ex['reference'])} |",
        ]
        lines += [f"| {s} | {cell(ex['answers'][s])} |" for s in systems]
        lines.append("")
    return lines


SECTIONS = (
    Section("header", render_header, order=10),
    Section("systems", render_systems, order=20),
    Section("length", render_lengths, order=30),
    Section("examples", render_examples, examples_shown, order=140),
)
