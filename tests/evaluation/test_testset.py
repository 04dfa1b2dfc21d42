"""medsft.evaluation.testset: test sets read through their presets, duplicate questions found and
handled by the setting, and slice values."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from medsft.chat import qa_messages
from medsft.cli import evaluate as evaluate_script
from medsft.evaluation import EvalConfig, evaluate
from medsft.evaluation.answers import answers_system
from medsft.evaluation.config import DataSpec, SystemSpec
from medsft.evaluation.testset import duplicate_summary, load_examples

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_TEST = ROOT / "data" / "sample" / "test_zh_med.json"

ROWS = [
    ["感冒发烧怎么办？", "多休息，多喝水。"],
    ["高血压能喝咖啡吗？", "适量可以。"],
    ["感冒发烧怎么办？", "体温高时服退烧药。"],  # the first question again, another reference
    ["孩子咳嗽一周要紧吗？", "伴发热应就医。"],
    ["感冒发烧怎么办？", "多休息，多喝水。"],
]


@pytest.fixture
def test_file(tmp_path: Path) -> Path:
    path = tmp_path / "test.json"
    path.write_text(json.dumps(ROWS, ensure_ascii=False), encoding="utf-8")
    return path


def test_drop_keeps_the_first_counts_the_rest_and_keeps_row_positions(test_file, caplog):
    with caplog.at_level(logging.WARNING):
        examples = load_examples(DataSpec(source=str(test_file)))
    assert [ex.question for ex in examples] == [
        "感冒发烧怎么办？",
        "高血压能喝咖啡吗？",
        "孩子咳嗽一周要紧吗？",
    ]
    assert [ex.index for ex in examples] == [0, 1, 2]
    assert [ex.row_position for ex in examples] == [0, 1, 3]
    assert examples[0].dropped_duplicates == 2 and examples[0].reference == "多休息，多喝水。"
    assert duplicate_summary(examples, "drop") == {
        "policy": "drop",
        "found": 2,
        "dropped": 2,
        "kept": 0,
    }
    assert "2 duplicate question(s) dropped" in caplog.text and "repeats" in caplog.text


def test_keep_scores_each_and_marks_the_repeats(test_file):
    examples = load_examples(DataSpec(source=str(test_file), duplicates="keep"))
    assert len(examples) == 5
    assert [ex.duplicate_of for ex in examples] == [None, None, 0, None, 0]
    assert duplicate_summary(examples, "keep")["kept"] == 2


def test_error_names_the_repeated_rows(test_file):
    with pytest.raises(ValueError, match=r"test_set: 2 duplicate question\(s\)") as err:
        load_examples(DataSpec(source=str(test_file), duplicates="error"))
    assert "test.json" in str(err.value) and "test_set.duplicates: drop" in str(err.value)


def test_no_duplicates_changes_nothing(tmp_path):
    path = tmp_path / "unique.json"
    path.write_text(json.dumps(ROWS[:2], ensure_ascii=False), encoding="utf-8")
    examples = load_examples(DataSpec(source=str(path), duplicates="error"))
    assert [ex.row_position for ex in examples] == [0, 1]
    assert duplicate_summary(examples, "error")["found"] == 0


def test_answers_aligned_by_row_order_skip_the_dropped_rows(test_file, tmp_path):
    answers = tmp_path / "answers.jsonl"
    answers.write_text(
        "".join(json.dumps({"answer": f"answer to row {i}"}) + "\n" for i in range(5)), "utf-8"
    )
    examples = load_examples(DataSpec(source=str(test_file)))
    spec = SystemSpec(name="file", path=str(answers), question_column=None)
    assert answers_system(spec, examples).answers == [
        "answer to row 0",
        "answer to row 1",
        "answer to row 3",
    ]


def test_the_report_says_how_many_were_dropped(test_file, tmp_path):
    answers = tmp_path / "answers.jsonl"
    answers.write_text(
        "".join(
            json.dumps({"question": q, "answer": r}, ensure_ascii=False) + "\n" for q, r in ROWS
        ),
        "utf-8",
    )
    out = tmp_path / "out"
    report = evaluate_script.main(
        [
            "--systems",
            json.dumps([{"name": "file", "path": str(answers)}]),
            "--test_set.source",
            str(test_file),
            "--output_dir",
            str(out),
            "--scoring.n_resamples",
            "0",
            "--runtime.progress",
            "false",
            "--judge.enabled",
            "false",
        ]
    )
    assert report["test_set"]["n"] == 3 and report["test_set"]["duplicates"]["dropped"] == 2
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "3 questions; 2 repeated question(s) dropped (`test_set.duplicates: drop`)" in md


def test_course_test_set_maps_question_and_reference():
    examples = load_examples(DataSpec(source=str(SAMPLE_TEST), preset="course"))
    raw = json.loads(SAMPLE_TEST.read_text(encoding="utf-8"))
    assert len(examples) == len(raw) == 12
    assert [(e.question, e.reference) for e in examples] == [(q, r.strip()) for q, r in raw]
    assert examples[0].prompt == [{"role": "user", "content": raw[0][0]}]
    assert load_examples(DataSpec(source=str(SAMPLE_TEST), limit=3))[-1].index == 2


def test_row_without_reference_names_file_and_row(tmp_path):
    bad = tmp_path / "test.json"
    bad.write_text(json.dumps([["问题一", "答案一"], ["问题二"]], ensure_ascii=False))
    with pytest.raises(ValueError, match=r"test\.json: item 1.*'1'.*missing"):
        load_examples(DataSpec(source=str(bad)))
    jsonl = tmp_path / "test.jsonl"
    jsonl.write_text('{"question": "q1", "answer": "a1"}\n{"question": "q2", "answer": ""}\n')
    with pytest.raises(ValueError, match=r"test\.jsonl:2.*'answer'.*empty"):
        load_examples(DataSpec(source=str(jsonl), preset="huatuo"))


def test_reasoning_references_keep_their_think_apart():
    examples = load_examples(
        DataSpec(source=str(ROOT / "data/sample/reasoning.jsonl"), preset="reasoning")
    )
    assert all(e.reference_think and "<think>" not in e.reference for e in examples)
    assert examples[0].conversation[-1]["content"].startswith("<think>\n")
    # The answer turn is formatted as training formats it (medsft.chat.qa_messages).
    ex = examples[0]
    expected = qa_messages(ex.question, ex.reference, think=ex.reference_think)[-1]
    assert ex.conversation == [*ex.prompt, expected]


def test_real_course_set_reads(shared_data):
    source = shared_data / "course_a3_testsets" / "zh_med.json"
    examples = load_examples(DataSpec(source=str(source), preset="course"))
    assert len(examples) == 20 and all(e.question and e.reference for e in examples)


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
