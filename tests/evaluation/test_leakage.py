"""Leakage check: longest overlap of each test item with the training data, and the flags."""

from __future__ import annotations

import json
import random
from difflib import SequenceMatcher
from pathlib import Path

import pytest

from medsft.evaluation import (
    DataSpec,
    EvalConfig,
    JudgeSettings,
    ScoringSettings,
    SystemSpec,
    evaluate,
    load_examples,
)
from medsft.evaluation.config import LeakageSettings
from medsft.evaluation.leakage import check_leakage
from medsft.leakage import main

ROOT = Path(__file__).resolve().parents[2]
TEST = ROOT / "data" / "sample" / "test_zh_med.json"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


def _longest(a: str, b: str) -> int:
    a, b = a.replace(" ", ""), b.replace(" ", "")
    return SequenceMatcher(None, a, b, autojunk=False).find_longest_match().size


def test_overlaps_match_a_brute_force_and_flags_follow_the_threshold(tmp_path):
    examples = load_examples(DataSpec(source=str(TEST)))
    q0, q1, q2 = (ex.question for ex in examples[:3])
    rng = random.Random(0)
    filler = "".join(rng.choice("天地玄黄宇宙洪荒日月盈昃辰宿列张") for _ in range(40))
    train = [
        {"question": " " + q0 + " ", "answer": "无关的回答。"},  # verbatim (spaces aside)
        {"question": filler + q1[: int(len(q1) * 0.7)] + filler, "answer": "另一个回答。"},
        {"question": filler, "answer": q2[:5] + filler},  # 5 < seed_length: not counted
        {"question": "Completely unrelated English text here.", "answer": "Nothing."},
    ]
    path = write_jsonl(tmp_path / "train.jsonl", train)
    settings = LeakageSettings(train_set=DataSpec(source=str(path), preset="huatuo"))
    leak = check_leakage(examples, settings, progress=False)
    assert leak["train_rows"] == 4 and leak["unit"] == "char"
    texts = ["\n".join([r["question"], r["answer"]]) for r in train]
    for ex, item in zip(examples, leak["items"], strict=True):
        brute = max(_longest(ex.question, t) for t in texts)
        assert item["question_overlap"] == (brute if brute >= 8 else 0), ex.question
    items = leak["items"]
    assert items[0]["exact_duplicate"].endswith("train.jsonl:1") and items[0]["flagged"]
    assert items[1]["question_match"].endswith("train.jsonl:2") and items[1]["flagged"]
    assert items[1]["exact_duplicate"] is None
    assert items[2]["question_overlap"] == 0 and not items[2]["flagged"]
    assert leak["flagged"] == 2 and leak["exact_duplicates"] == 1
    strict = LeakageSettings(train_set=settings.train_set, threshold=0.9)
    assert check_leakage(examples, strict, progress=False)["flagged"] == 1


def test_words_for_english_and_the_command_line(tmp_path):
    test = write_jsonl(tmp_path / "test.jsonl", [
        {"Question": "What are the early symptoms of type 2 diabetes in adults?", "Answer": "x y"},
        {"Question": "How is asthma treated?", "Answer": "Inhalers."},
    ])  # fmt: skip
    train = write_jsonl(tmp_path / "train.jsonl", [
        {"Question": "Tell me: what ARE the early symptoms of type 2 diabetes, doctor?",
         "Answer": "Thirst."},
    ])  # fmt: skip
    out = tmp_path / "leak.json"
    leak = main(["--test_set.source", str(test), "--test_set.preset", "medquad",
                 "--leakage.train_set.source", str(train), "--leakage.train_set.preset", "medquad",
                 "--leakage.seed_length", "4", "--output", str(out)])  # fmt: skip
    assert leak["unit"] == "word"
    first = leak["items"][0]
    assert first["question_overlap"] == 9 and first["question_share"] == pytest.approx(9 / 11, 1e-3)
    assert first["flagged"] and not leak["items"][1]["flagged"]
    assert json.loads(out.read_text())["flagged"] == 1
    assert "**1 flagged**" in out.with_suffix(".md").read_text()


def test_evaluate_reports_leakage(tmp_path):
    answers = tmp_path / "a.jsonl"
    examples = load_examples(DataSpec(source=str(TEST)))
    write_jsonl(answers, [{"question": ex.question, "answer": "好的。"} for ex in examples])
    train = write_jsonl(tmp_path / "train.jsonl", [{"question": examples[3].question,
                                                     "answer": "回答。"}])  # fmt: skip
    config = EvalConfig(
        systems=[SystemSpec("file", str(answers))],
        test_set=DataSpec(source=str(TEST)),
        leakage=LeakageSettings(train_set=DataSpec(source=str(train), preset="huatuo")),
        output_dir=str(tmp_path / "eval"),
        scoring=ScoringSettings(n_resamples=0, paired=False, examples=0),
        judge=JudgeSettings(enabled=False),
    )
    report = evaluate(config)
    assert report["leakage"]["flagged"] == 1 and report["leakage"]["items"][3]["flagged"]
    assert "## Leakage check" in (tmp_path / "eval" / "report.md").read_text(encoding="utf-8")
