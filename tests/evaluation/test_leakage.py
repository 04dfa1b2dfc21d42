"""Leakage check: longest overlap of each test item with the training data, and the flags."""

from __future__ import annotations

import json
import random
import re
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
from medsft.evaluation.leakage import check_leakage, normalise, render_leakage

ROOT = Path(__file__).resolve().parents[2]
TEST = ROOT / "data" / "sample" / "test_zh_med.json"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


def _longest(a: str, b: str) -> int:
    a, b = "".join(normalise(a, "char")), b
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
    texts = [
        "".join(normalise(r["question"], "char") + normalise(r["answer"], "char")) for r in train
    ]
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
    assert "at least 50% of the item's characters, and at least 13 characters" in md
    assert "| exact, contained |" not in md and "| contained |" not in md
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
            {"Question": "What are the symptoms of asthma ?", "Answer": "Wheezing."},
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
    first, second, third = leak["items"]
    # every word of a 6-word question, not in one run of 8 words: no run; but the question is
    # whole inside a training question (gout's and lupus's symptoms), a short copy
    assert first["question_overlap"] == 6 and first["question_share"] == 1.0
    assert first["rules"] == ["contained"]
    assert second["rules"] == ["question run"]
    # a common opening only: "what are the symptoms of" (5 words)
    assert third["question_overlap"] == 5 and not third["flagged"]


def test_normalise_drops_punctuation_width_case_and_greetings():
    assert (
        "".join(normalise("医生您好，请问糖尿病人能吃西瓜吗？谢谢！", "char"))
        == "糖尿病人能吃西瓜吗"
    )
    assert normalise("糖尿病人能吃西瓜吗?", "char") == normalise("糖尿病人能吃西瓜吗", "char")
    assert "".join(normalise("ＨＰＶ阳性，　ＣＴ检查１次", "char")) == "hpv阳性ct检查1次"
    assert normalise("Hi doctor, what is gout? Thank you.", "word") == ["what", "is", "gout"]
    # a text that is only a greeting keeps it
    assert "".join(normalise("你好", "char")) == "你好"


def _planted(question: str, how: str) -> str:
    """A copy of `question` as a training question, changed as `how` says."""
    bare = question.rstrip("？?。")
    return {
        "verbatim": question,
        "full-width ？": bare + "？",
        "ascii ?": bare + "?",
        "polite prefix": "医生您好，请问" + bare + "？",
        "light edit": bare.replace("能", "可以").replace("如何", "怎么") + "呢？",
    }[how]


PLANTINGS = ("verbatim", "full-width ？", "ascii ?", "polite prefix", "light edit")
EXPECTED_RULE = {
    "verbatim": "exact",
    "full-width ？": "exact",
    "ascii ?": "exact",
    "polite prefix": "exact",
    "light edit": "near",
}


def _check_planted(tmp_path, questions: list[str], background: list[dict]) -> dict:
    """Plant each question of the first 10 as a training question in one of the ways (two each);
    the other questions stay unplanted. Every planted copy is flagged by the rule expected,
    nothing else is."""
    planted = {i: PLANTINGS[i % 5] for i in range(10)}
    test = write_jsonl(
        tmp_path / "test.jsonl", [{"question": q, "answer": "请及时就医。"} for q in questions]
    )
    copies = [
        {"question": _planted(questions[i], how), "answer": "好的。"} for i, how in planted.items()
    ]
    train = write_jsonl(tmp_path / "train.jsonl", background + copies)
    examples = load_examples(DataSpec(source=str(test), preset="huatuo"))
    spec = DataSpec(source=str(train), preset="huatuo")
    leak = check_leakage(examples, LeakageSettings(train_set=spec), progress=False)
    for it in leak["items"]:
        how = planted.get(it["index"])
        if how is None:
            assert not it["flagged"], (it["question"], it["rules"])
        else:
            assert EXPECTED_RULE[how] in it["rules"], (how, it["question"], it["rules"])
    assert leak["flagged"] == 10
    return leak


def test_planted_short_and_long_copies_are_flagged_by_the_rule_that_caught_them(tmp_path):
    examples = load_examples(DataSpec(source=str(TEST)))
    short = [
        "糖尿病人能吃西瓜吗",
        "孩子发烧如何退烧",
        "青春期应该如何祛痘",
        "高血压能喝咖啡吗",
        "痛风能吃豆腐吗",
    ]
    questions = short + [ex.question for ex in examples[:5]] + [ex.question for ex in examples[5:]]
    background = [
        {"question": "肺癌的早期症状是什么", "answer": "咳嗽。"},
        {"question": "我妈妈有糖尿病，血糖控制得不好，能吃什么水果", "answer": "少量。"},
    ]
    leak = _check_planted(tmp_path, questions, background)
    assert leak["by_rule"]["exact"] == 8 and leak["by_rule"]["near"] == 2
    md = "\n".join(render_leakage(leak))
    assert "by rule: exact 8, near 2" in md and "| exact |" in md and "| near |" in md


def test_short_copies_of_real_questions_are_flagged_and_nothing_else(shared_data, tmp_path):
    """Real questions: the course's 20 test questions, and the last clause of real Huatuo
    questions (8-12 characters, like HuatuoGPT-II's short questions), against 400 real Huatuo
    rows with copies planted among them."""
    rows = [
        json.loads(line)
        for line in (shared_data / "huatuo26m_lite" / "huatuo26m_lite_qa500.enddonkey.jsonl")
        .read_text(encoding="utf-8")
        .splitlines()
    ]
    clauses = [re.split(r"[，。！!,]", r["question"].rstrip("？?。 "))[-1] for r in rows[:100]]
    short = [c + "？" for c in clauses if 8 <= len(normalise(c, "char")) < 13][:10]
    course = json.loads((shared_data / "course_a3_testsets" / "zh_med.json").read_text("utf-8"))
    questions = short[:5] + [q for q, _ in course[:5]] + short[5:] + [q for q, _ in course[5:]]
    leak = _check_planted(tmp_path, questions, rows[100:])
    assert leak["n"] == 30 and leak["train_rows"] == 410
