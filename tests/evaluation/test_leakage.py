"""Leakage check: longest overlap of each test item with the training data, and the flags."""

from __future__ import annotations

import json
import random
from difflib import SequenceMatcher
from pathlib import Path

import pytest

from medsft.cli.leakage import main
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
from medsft.evaluation.leakage import build_parser, check_leakage, render_leakage

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
    test = write_jsonl(
        tmp_path / "test.jsonl",
        [
            {
                "Question": "What are the early symptoms of type 2 diabetes in adults?",
                "Answer": "x y",
            },
            {"Question": "How is asthma treated?", "Answer": "Inhalers."},
        ],
    )
    train = write_jsonl(
        tmp_path / "train.jsonl",
        [
            {
                "Question": "Tell me: what ARE the early symptoms of type 2 diabetes, doctor?",
                "Answer": "Thirst.",
            },
        ],
    )
    out = tmp_path / "leak.json"
    leak = main(
        [
            "--test_set.source",
            str(test),
            "--test_set.preset",
            "medquad",
            "--leakage.train_set.source",
            str(train),
            "--leakage.train_set.preset",
            "medquad",
            "--leakage.seed_length",
            "4",
            "--output",
            str(out),
        ]
    )
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
    train = write_jsonl(
        tmp_path / "train.jsonl", [{"question": examples[3].question, "answer": "回答。"}]
    )
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


def test_stock_phrases_in_short_questions_are_not_flagged_but_planted_copies_are(tmp_path):
    """HuatuoGPT-II-like: 10-13 character questions built on 8-character stock phrases."""
    stock = [
        "糖尿病的早期症状是什么",
        "胃溃疡该怎么治疗比较好",
        "甲亢的早期症状是什么？",
        "痛风该怎么治疗比较好",
    ]
    planted = ["乙肝病毒携带者可以正常结婚生子吗", "孩子发烧三十九度要不要马上去医院"]
    duplicate = "牙龈出血是什么原因"  # 9 characters, verbatim a training question
    test = write_jsonl(
        tmp_path / "test.jsonl",
        [
            {"question": q, "answer": "请及时就医，遵医嘱用药。"}
            for q in [*stock, *planted, duplicate]
        ],
    )
    train = write_jsonl(
        tmp_path / "train.jsonl",
        [
            {"question": "肺癌的早期症状是什么", "answer": "咳嗽、胸痛。"},
            {"question": "我爸爸腰椎间盘突出该怎么治疗比较好", "answer": "卧床休息。"},
            {"question": "医生你好，" + planted[0] + "？谢谢", "answer": "可以。"},
            {"question": "请问", "answer": "这种情况：" + planted[1] + "，要看精神状态。"},
            {"question": duplicate, "answer": "多见于牙周炎。"},
        ],
    )
    examples = load_examples(DataSpec(source=str(test), preset="huatuo"))
    spec = DataSpec(source=str(train), preset="huatuo")
    leak = check_leakage(examples, LeakageSettings(train_set=spec), progress=False)
    flagged = [it["question"] for it in leak["items"] if it["flagged"]]
    assert flagged == [*planted, duplicate] and leak["min_length"] == 13
    assert [it["question_overlap"] for it in leak["items"][:4]] == [8, 8, 8, 8]
    # The share alone (the old rule) flags every stock phrase: the case is not vacuous.
    share_only = check_leakage(
        examples, LeakageSettings(train_set=spec, min_length=8), progress=False
    )
    assert share_only["flagged"] == 7
    md = "\n".join(render_leakage(leak))
    assert "at least 50% of their characters, and at least 13 characters" in md
    with pytest.raises(ValueError, match="min_length .* must be >= leakage.seed_length"):
        check_leakage(examples, LeakageSettings(train_set=spec, min_length=5), progress=False)


def test_english_needs_eight_shared_words_by_default(tmp_path):
    test = write_jsonl(
        tmp_path / "test.jsonl",
        [
            {"Question": "What are the symptoms of gout ?", "Answer": "Pain."},
            {
                "Question": "What are the treatments for Paget's disease of bone in older adults ?",
                "Answer": "Drugs.",
            },
        ],
    )
    train = write_jsonl(
        tmp_path / "train.jsonl",
        [
            {"Question": "What are the symptoms of gout and of lupus ?", "Answer": "x"},
            {
                "Question": "Q: what are the treatments for Paget's disease of bone in older adults?",
                "Answer": "y",
            },
        ],
    )
    settings = LeakageSettings(
        train_set=DataSpec(source=str(train), preset="medquad"), seed_length=4
    )
    leak = check_leakage(
        load_examples(DataSpec(source=str(test), preset="medquad")), settings, progress=False
    )
    assert leak["unit"] == "word" and leak["min_length"] == 8
    first, second = leak["items"]
    # every word of a 6-word question, but a common opening, not a copy
    assert first["question_overlap"] == 6 and first["question_share"] == 1.0
    assert not first["flagged"] and second["flagged"]


def test_the_module_docstrings_commands_parse():
    import shlex

    import medsft.cli.leakage as script
    import medsft.evaluation.leakage as module

    for doc in (module.__doc__, script.__doc__):
        joined = doc.replace("\\\n", " ")
        commands = [
            line.strip() for line in joined.splitlines() if "python -m medsft.cli.leakage" in line
        ]
        assert commands
        for command in commands:
            args = shlex.split(command)[3:]
            if args != ["--help"]:
                build_parser().parse_args(args)  # raises (SystemExit) on an unknown flag


def test_the_training_set_is_read_as_train_py_reads_it_by_default():
    """README: `huatuo` is the default preset; the tool read training files as `course` lists."""
    leak = main(
        [
            "--test_set.source",
            "data/sample/test_zh_med.json",
            "--leakage.train_set.source",
            "data/sample/huatuo_sample.jsonl",
        ]
    )
    assert leak["train_rows"] == 64
