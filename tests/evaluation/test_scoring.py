"""medsft.evaluation.scoring: metrics, distinct-n off, answer length and its flag, scores by slice."""

from __future__ import annotations

import json
import subprocess
import sys
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
from medsft.evaluation.scoring import flag_lengths, length_summary, score_texts

ROOT = Path(__file__).resolve().parents[2]
HUATUO = ROOT / "data" / "sample" / "huatuo_sample.jsonl"
REFS = ["发热时多喝水，体温超过38.5度可服用退烧药。", "高血压患者应限制咖啡因的摄入。"]


def test_distinct_orders_empty_turns_distinct_off():
    preds = ["多喝水。", "少喝咖啡。"]
    on = score_texts(preds, REFS, ScoringSettings(n_resamples=20), "zh")
    off = score_texts(preds, REFS, ScoringSettings(n_resamples=20, distinct_orders=[]), "zh")
    assert {"distinct-1", "distinct-2"} <= set(on) and not any("distinct" in n for n in off)
    assert {n: e["score"] for n, e in off.items()} == {
        n: e["score"] for n, e in on.items() if "distinct" not in n
    }


def test_length_in_characters_and_tokens_and_the_cut_off_share():
    summary = length_summary(["一二三", " abc def \n", "一二三四五六七"], "zh", cut_off=1)
    assert summary["mean_chars"] == round((3 + 7 + 7) / 3, 1) and summary["median_chars"] == 7
    assert summary["mean_tokens"] == round((3 + 2 + 7) / 3, 1) and summary["median_tokens"] == 3
    assert summary["hit_max_new_tokens"] == pytest.approx(1 / 3)
    assert length_summary(["a"], "13a")["hit_max_new_tokens"] is None


def test_systems_beyond_twice_or_half_the_baseline_length_are_flagged():
    lengths = {
        name: {"mean_chars": chars}
        for name, chars in [
            ("reference", 500),
            ("gpt", 100),
            ("long", 201),
            ("ok", 199),
            ("short", 49),
            ("empty", 0),
        ]
    }
    flag_lengths(lengths, "gpt")
    flags = {name: v["length_flag"] for name, v in lengths.items()}
    assert flags == {
        "reference": False,
        "gpt": False,
        "long": True,
        "ok": False,
        "short": True,
        "empty": True,
    }
    assert lengths["long"]["ratio_to_baseline"] == 2.01
    no_baseline = {"a": {"mean_chars": 1}}
    flag_lengths(no_baseline, None)
    assert no_baseline == {"a": {"mean_chars": 1}}


def test_vocab_f1_is_set_mode_by_default_so_no_column_repeats_rouge_1():
    # Repeated tokens: set and multiset overlaps differ, and multiset equals ROUGE-1 F1.
    preds = ["多喝水多喝水多喝水，退烧药。", "咖啡咖啡咖啡因。"]
    default = score_texts(preds, REFS, ScoringSettings(n_resamples=0), "zh")
    assert "|overlap:set|" in default["vocab-F1"]["signature"]
    assert default["vocab-F1"]["per_sample"] != default["ROUGE-1"]["per_sample"]
    multiset = ScoringSettings(n_resamples=0, vocab_f1_mode="multiset")
    repeated = score_texts(preds, REFS, multiset, "zh")
    # The multiset count has its own name: vocab-F1 means one thing in every report.
    assert "vocab-F1" not in repeated and "|overlap:multiset|" in repeated["token-F1"]["signature"]
    assert repeated["token-F1"]["per_sample"] == repeated["ROUGE-1"]["per_sample"]


def test_scoring_and_the_report_import_neither_torch_nor_lightning():
    code = (
        "import sys\n"
        "import medsft.metrics, medsft.metrics.judge, medsft.evaluation.scoring\n"
        "import medsft.evaluation.report, medsft.evaluation.judging\n"
        "medsft.evaluation.report.sections()\n"
        "print(sorted(m for m in ('torch', 'lightning', 'transformers') if m in sys.modules))"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


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
