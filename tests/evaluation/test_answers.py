"""medsft.evaluation.answers: answer files as objects, course triples and pairs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medsft.evaluation import DataSpec, SystemSpec, infer_kind, load_examples
from medsft.evaluation.answers import answers_system

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_BASELINE = ROOT / "data" / "sample" / "baseline_answers.jsonl"
SAMPLE_TEST = ROOT / "data" / "sample" / "test_zh_med.json"


@pytest.fixture
def examples():
    return load_examples(DataSpec(source=str(SAMPLE_TEST), limit=4))


def _write(path: Path, rows) -> str:
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    return str(path)


def test_course_triples_and_pairs_align_by_question(tmp_path, examples):
    answers = [f"回答{i}" for i in range(len(examples))]
    triples = [[ex.question, ex.reference, a] for ex, a in zip(examples, answers, strict=True)]
    path = _write(tmp_path / "course_output.json", list(reversed(triples)))
    spec = SystemSpec("course", path)
    assert infer_kind(spec) == "answers"
    assert answers_system(spec, examples).answers == answers

    pairs = [
        [ex.question, f"<think>想一想</think>{a}"] for ex, a in zip(examples, answers, strict=True)
    ]
    output = answers_system(SystemSpec("pairs", _write(tmp_path / "pairs.json", pairs)), examples)
    assert output.answers == answers and output.thinks == ["想一想"] * len(examples)

    by_order = [["any question", a] for a in answers]
    spec = SystemSpec("ordered", _write(tmp_path / "ordered.json", by_order), question_column=None)
    assert answers_system(spec, examples).answers == answers


def test_bad_list_rows_and_missing_answers_say_what_is_wrong(tmp_path, examples):
    bad = _write(tmp_path / "bad.json", [[examples[0].question, "ref", "answer", "extra"]])
    with pytest.raises(ValueError, match=r"bad\.json: item 0.*\[question, reference, answer\]"):
        answers_system(SystemSpec("bad", bad), examples)
    numbers = _write(tmp_path / "numbers.json", [[examples[0].question, 42]])
    with pytest.raises(ValueError, match="strings"):
        answers_system(SystemSpec("numbers", numbers), examples)
    partial = [[ex.question, "a"] for ex in examples[:2]]
    with pytest.raises(ValueError, match="no answer to test question 2"):
        answers_system(SystemSpec("partial", _write(tmp_path / "p.json", partial)), examples)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        answers_system(SystemSpec("gone", str(tmp_path / "gone.json")), examples)


def test_answers_file_aligns_by_question(tmp_path):
    examples = load_examples(DataSpec(source=str(SAMPLE_TEST)))
    rows = [json.loads(line) for line in SAMPLE_BASELINE.read_text(encoding="utf-8").splitlines()]
    shuffled = tmp_path / "answers.jsonl"
    shuffled.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in reversed(rows)), encoding="utf-8"
    )
    output = answers_system(SystemSpec("gpt", str(shuffled)), examples)
    assert output.answers == [r["answer"] for r in rows]

    partial = tmp_path / "partial.jsonl"
    partial.write_text(json.dumps(rows[0], ensure_ascii=False) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no answer to test question 1"):
        answers_system(SystemSpec("gpt", str(partial)), examples)


def test_an_answers_file_must_fit_the_test_set_exactly(tmp_path, examples):
    """An extra row aligned by order would shift every answer after it (and still score);
    by question, a row the test set does not ask or two different answers to one question
    stop too. A test set cut by its limit may have answers beyond it."""
    answers = [f"回答{i}" for i in range(len(examples))]
    shifted = _write(tmp_path / "shifted.json", [["extra", "多余"]] + [["q", a] for a in answers])
    spec = SystemSpec("shifted", shifted, question_column=None)
    with pytest.raises(ValueError, match="has 5 answers for the test set's 4 rows"):
        answers_system(spec, examples)
    longer = _write(tmp_path / "longer.json", [["q", a] for a in [*answers, "第五个"]])
    spec = SystemSpec("longer", longer, question_column=None)
    assert answers_system(spec, examples, limited=True).answers == answers

    pairs = [[ex.question, a] for ex, a in zip(examples, answers, strict=True)]
    other = _write(tmp_path / "other.json", [*pairs, ["另一个测试集的问题", "回答"]])
    with pytest.raises(ValueError, match=r"other\.json: item 4 answers a question the test set"):
        answers_system(SystemSpec("other", other), examples)
    assert answers_system(SystemSpec("other", other), examples, limited=True).answers == answers

    twice = _write(tmp_path / "twice.json", [*pairs, [examples[1].question, answers[1]]])
    assert answers_system(SystemSpec("twice", twice), examples).answers == answers  # the same
    conflict = _write(tmp_path / "conflict.json", [*pairs, [examples[1].question, "别的回答"]])
    with pytest.raises(ValueError, match=r"item 1 and .*item 4 give different answers"):
        answers_system(SystemSpec("conflict", conflict), examples)
