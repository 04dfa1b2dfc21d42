"""A synthetic evaluation written out as evaluate.py writes it: report.json's dict (scored by the
real scorer), report.md, metrics.png, generations/<system>.jsonl, judge_<system>.json and
report.html, for any number of questions and systems, in seconds.

The texts are the demo test set's questions and references, varied per case; verdicts, cut and
empty answers, inconsistent pairs and leakage hits are spread deterministically over the cases so
that every flag and filter of the case browser has something to find. Used by
tests/evaluation/test_html.py and benchmarks/html_report.py (1,000 questions x 4 systems).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEMO_TEST_SET = ROOT / "data" / "sample" / "test_zh_med_labelled.jsonl"
LABELS = ("better", "worse", "equal")


class _Order:
    """One order's judgement, as medsft.metrics.judge_client.JudgeOrder carries it."""

    def __init__(self, label: str | None, raw: str | None, error: str | None = None) -> None:
        self.label, self.raw, self.cached, self.error = label, raw, False, error


def synthetic_evaluation(
    out_dir: Path,
    n: int = 40,
    systems: tuple[str, ...] = ("base", "finetuned", "gpt"),
    *,
    baseline: str = "gpt",
    judged: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Write a whole evaluation's outputs into `out_dir` and return report.json's dict (with
    `questions`, what the case browser got, under `_questions`; not written to report.json).

    Args:
        out_dir: the output folder.
        n: test questions.
        systems: system names; the baseline is an answer file, the others model systems.
        baseline: the judge's baseline (one of `systems`).
        judged: judge every other system against the baseline (verdicts and reasons).
        seed: varies answers, verdicts and flags.
    """
    from medsft.evaluation import EvalConfig, ScoringSettings
    from medsft.evaluation.html import case_question, write_html
    from medsft.evaluation.plots import plot_metrics
    from medsft.evaluation.report import Evaluation
    from medsft.evaluation.run import score, write_report
    from medsft.evaluation.sections.overview import examples_shown
    from medsft.evaluation.systems import SystemOutput
    from medsft.evaluation.testset import Example

    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    rows = [json.loads(line) for line in DEMO_TEST_SET.read_text(encoding="utf-8").splitlines()]
    examples = []
    for i in range(n):
        row = rows[i % len(rows)]
        question = row["question"] if i < len(rows) else f"{row['question']}（病例 {i}）"
        examples.append(
            Example(
                index=i,
                where=f"{DEMO_TEST_SET.name}:{i % len(rows) + 1}",
                prompt=[{"role": "user", "content": question}],
                question=question,
                reference=row["reference"],
                reference_think=None,
                group=row["department"],
            )
        )
    outputs = []
    for k, name in enumerate(systems):
        answers, finish = [], []
        for ex in examples:
            sentences = [s for s in ex.reference.replace("\n", "").split("。") if s]
            rng.shuffle(sentences)
            answer = "。".join(sentences[: 1 + (ex.index + k) % len(sentences)]) + "。"
            cut = ex.index % 7 == 3 and k == 0
            empty = ex.index % 11 == 5 and k == 1
            answers.append("" if empty else answer[:40] if cut else answer)
            finish.append("length" if cut else "stop")
        kind = "answers" if name == baseline else "model"
        generation: dict[str, Any] = {}
        if kind == "model":
            generation = {
                "generated": n,
                "seconds": 1.0,
                "tokens_per_second": 100.0,
                "world_size": 1,
                "finish_reasons": {"stop": finish.count("stop"), "length": finish.count("length")},
                "mean_new_tokens": 64.0,
            }
            gen_dir = out_dir / "generations"
            gen_dir.mkdir(exist_ok=True)
            (gen_dir / f"{name}.jsonl").write_text(
                "".join(
                    json.dumps(
                        {"key": f"{name}-{i}", "index": i, "answer": a, "finish_reason": f},
                        ensure_ascii=False,
                    )
                    + "\n"
                    for i, (a, f) in enumerate(zip(answers, finish, strict=True))
                ),
                encoding="utf-8",
            )
        outputs.append(
            SystemOutput(name, kind, f"{name}-source", answers, [None] * n, generation=generation)
        )
    scoring = ScoringSettings(n_resamples=0, paired=False, perplexity=False, examples=2)
    config = EvalConfig(scoring=scoring, baseline=baseline)
    config.test_set.slice_column = "department"
    report = score(outputs, examples, None, config)
    report["test_set"]["source"] = str(DEMO_TEST_SET.relative_to(ROOT))
    report["judge"] = {"status": "skipped", "reason": "judge off", "baseline": baseline}
    if judged:
        report["judge"] = _judge(outputs, examples, baseline, out_dir, rng)
    report["leakage"] = _leakage(examples)
    report.update(training={}, ablation=None, plots=["metrics.png"])
    run = Evaluation(config, examples, outputs, None, [], out_dir, report)
    report["examples"] = examples_shown(run)
    plot_metrics(report, out_dir / "metrics.png")
    write_report(report, out_dir)
    questions = [case_question(ex) for ex in examples]
    write_html(report, questions, out_dir)
    return {**report, "_questions": questions}


def _judge(outputs, examples, baseline, out_dir, rng) -> dict[str, Any]:
    from medsft.metrics.judge_result import JudgeResult, JudgeUsage, pair_record

    base = next(o for o in outputs if o.name == baseline)
    results = {}
    for o in outputs:
        if o.name == baseline:
            continue
        records = []
        for ex in examples:
            i = ex.index
            if i % 13 == 9:
                ab = ba = _Order(None, None, "HTTP 500 after 5 retries")
            else:
                label_ab = LABELS[(i + len(o.name)) % 3]
                # Mostly the mirror verdict (consistent), every fifth pair a disagreement.
                mirror = {"better": "worse", "worse": "better", "equal": "equal"}[label_ab]
                label_ba = LABELS[(LABELS.index(mirror) + 1) % 3] if i % 5 == 2 else mirror
                ab = _Order(
                    label_ab,
                    f"理由：第一个回答{rng.choice(['更完整', '更简短', '更准确'])}。\n\nAssistant 1 is {label_ab}",
                )
                ba = _Order(
                    label_ba,
                    f"理由：第二个回答{rng.choice(['有遗漏', '更清楚', '相当'])}。\n\nAssistant 1 is {label_ba}",
                )
            records.append(
                pair_record(i, ex.question, o.answers[i] or "(no answer)", base.answers[i], ab, ba)
            )
        result = JudgeResult("judge-model", None, records, JudgeUsage(), None, "sha")
        (out_dir / f"judge_{o.name}.json").write_text(
            json.dumps(result.to_dict(include_records=True), ensure_ascii=False), encoding="utf-8"
        )
        results[o.name] = result.to_dict(include_records=False)
    return {
        "status": "ok",
        "baseline": baseline,
        "model": "judge-model",
        "endpoint": "http://127.0.0.1:8000/v1",
        "language": "zh",
        "results": results,
    }


def _leakage(examples) -> dict[str, Any]:
    items = [
        {
            "index": ex.index,
            "question": ex.question,
            "where": ex.where,
            "question_overlap": 14 if ex.index % 17 == 4 else 3,
            "question_share": 0.9 if ex.index % 17 == 4 else 0.1,
            "question_match": "train.jsonl:7" if ex.index % 17 == 4 else None,
            "reference_overlap": 3,
            "reference_share": 0.05,
            "reference_match": None,
            "exact_duplicate": None,
            "flagged": ex.index % 17 == 4,
        }
        for ex in examples
    ]
    flagged = sum(it["flagged"] for it in items)
    return {
        "train_source": "train.jsonl",
        "train_rows": 100,
        "unit": "char",
        "seed_length": 8,
        "threshold": 0.5,
        "min_length": 13,
        "n": len(items),
        "flagged": flagged,
        "exact_duplicates": 0,
        "show": 5,
        "items": items,
    }
