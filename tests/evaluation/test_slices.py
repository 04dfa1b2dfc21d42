"""test_set.slice_column: every metric broken down by a column, with counts and intervals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medsft.evaluation import (
    DataSpec,
    EvalConfig,
    JudgeSettings,
    RuntimeSettings,
    ScoringSettings,
    SystemSpec,
    evaluate,
)

ROOT = Path(__file__).resolve().parents[2]
HUATUO = ROOT / "data" / "sample" / "huatuo_sample.jsonl"


def test_metrics_by_department_with_counts_and_intervals(tmp_path):
    rows = [json.loads(line) for line in HUATUO.read_text(encoding="utf-8").splitlines()][:24]
    # A system that answers 内科 questions with the reference and the others with nonsense.
    answers = tmp_path / "answers.jsonl"
    answers.write_text(
        "".join(
            json.dumps(
                {
                    "question": r["question"],
                    "answer": r["answer"] if r["label"] == "内科" else "不知道。",
                },
                ensure_ascii=False,
            )
            + "\n"
            for r in rows
        ),
        encoding="utf-8",
    )
    config = EvalConfig(
        systems=[SystemSpec("half", str(answers))],
        test_set=DataSpec(source=str(HUATUO), preset="huatuo", limit=24, slice_column="label"),
        output_dir=str(tmp_path / "eval"),
        scoring=ScoringSettings(n_resamples=100, examples=0),
        judge=JudgeSettings(enabled=False),
        runtime=RuntimeSettings(accelerator="cpu", progress=False),
    )
    report = evaluate(config)
    groups = report["slices"]["groups"]
    counts = {label: sum(r["label"] == label for r in rows) for label in {r["label"] for r in rows}}
    assert {g: v["n"] for g, v in groups.items()} == counts
    internal = groups["内科"]["systems"]["half"]
    assert internal["BLEU-4"]["score"] == pytest.approx(100)
    assert internal["BLEU-4"]["low"] == pytest.approx(100)
    for label, g in groups.items():
        if label != "内科":
            assert g["systems"]["half"]["ROUGE-L"]["score"] < 20
    overall = report["metrics"]["half"]["BLEU-4"]["score"]
    assert 0 < overall < 100
    md = (tmp_path / "eval" / "report.md").read_text(encoding="utf-8")
    assert "### Scores by `label`" in md
    assert f"| 内科 | {counts['内科']} | 100.00 [100.00, 100.00]" in md


def test_rows_without_the_slice_column_name_file_and_line(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(
        '{"question": "q", "answer": "a", "dept": "x"}\n{"question": "q2", "answer": "a2"}\n',
        encoding="utf-8",
    )
    config = EvalConfig(
        systems=[SystemSpec("m", "random:tiny")],
        test_set=DataSpec(source=str(path), preset="huatuo", slice_column="dept"),
    )
    with pytest.raises(ValueError, match=r"slice_column: .*t.jsonl:2: no value in column 'dept'"):
        evaluate(config)
