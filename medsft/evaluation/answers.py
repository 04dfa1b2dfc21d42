"""Systems whose answers come from a file (a GPT baseline, a course's output), aligned with the test set.

Accepted rows: objects with the system's `question_column` / `answer_column` (/ `think_column`),
in JSONL, JSON, CSV or Parquet; or, in a JSON list, `[question, reference, answer]` triples (the
course's output format) and `[question, answer]` pairs. Answers are matched to test questions by
question text, or by row order with `question_column: null`.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass

from medsft.data import InvalidExample, Row, read_rows
from medsft.errors import InputError
from medsft.evaluation.config import SystemSpec
from medsft.evaluation.systems import SystemOutput
from medsft.evaluation.testset import Example
from medsft.model.generate import split_think


@dataclass
class AnswerRow:
    """One answer read from a file."""

    where: str
    question: str | None
    answer: str
    think: str | None = None


def answers_system(spec: SystemSpec, examples: list[Example]) -> SystemOutput:
    """The file's answers to the test questions, in test-set order."""
    if not os.path.exists(spec.path):
        raise FileNotFoundError(f"system {spec.name!r}: answers file {spec.path!r} does not exist")
    rows = [_answer_row(spec, row) for row in read_rows(spec.path)]
    answers, thinks = [], []
    for row in _align(spec, rows, examples):
        think, answer = (row.think, row.answer) if row.think else split_think(row.answer)
        answers.append(answer)
        thinks.append(think)
    return SystemOutput(spec.name, "answers", spec.path, answers, thinks)


def _answer_row(spec: SystemSpec, row: Row) -> AnswerRow:
    data = row.data
    if isinstance(data, InvalidExample):
        raise InputError(f"system {spec.name!r}: {data}")
    if isinstance(data, list):
        return _list_row(spec, row.where, data)
    if not isinstance(data, dict):
        raise InputError(
            f"system {spec.name!r}: {row.where}: expected an object with {spec.answer_column!r}, "
            f"a [question, reference, answer] triple or a [question, answer] pair; got "
            f"{type(data).__name__}"
        )
    answer = data.get(spec.answer_column)
    if not isinstance(answer, str):
        raise InputError(
            f"system {spec.name!r}: {row.where}: no string {spec.answer_column!r} column; "
            "set the system's answer_column"
        )
    question = data.get(spec.question_column) if spec.question_column else None
    if spec.question_column and not isinstance(question, str):
        raise InputError(
            f"system {spec.name!r}: {row.where}: no string {spec.question_column!r} column; "
            "set question_column, or question_column: null to align answers by row order"
        )
    think = data.get(spec.think_column) if spec.think_column else None
    return AnswerRow(row.where, question, answer, think)


def _list_row(spec: SystemSpec, where: str, data: list) -> AnswerRow:
    if len(data) not in (2, 3) or not all(isinstance(x, str) for x in data):
        raise InputError(
            f"system {spec.name!r}: {where}: a list row must be [question, reference, answer] "
            f"or [question, answer] strings; got {len(data)} item(s)"
        )
    return AnswerRow(where, data[0], data[-1])


def _align(spec: SystemSpec, rows: list[AnswerRow], examples: list[Example]) -> list[AnswerRow]:
    if spec.question_column is None:
        if len(rows) <= max(ex.row_position for ex in examples):
            raise InputError(
                f"system {spec.name!r}: {spec.path} has {len(rows)} answers for {len(examples)} "
                "questions (aligned by row order)"
            )
        # By row position in the test file (dropped duplicate questions leave gaps).
        return [rows[ex.row_position] for ex in examples]
    by_question: dict[str, list[AnswerRow]] = defaultdict(list)
    for row in rows:
        by_question[(row.question or "").strip()].append(row)
    aligned = []
    for ex in examples:
        matches = by_question.get(ex.question.strip())
        if not matches:
            raise InputError(
                f"system {spec.name!r}: {spec.path} has no answer to test question {ex.index} "
                f"({ex.where}): {ex.question[:60]!r}; answer every test question, or set "
                "question_column: null to align by row order"
            )
        aligned.append(matches.pop(0) if len(matches) > 1 else matches[0])
    return aligned
