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


def answers_system(
    spec: SystemSpec, examples: list[Example], *, limited: bool = False
) -> SystemOutput:
    """The file's answers to the test questions, in test-set order.

    Args:
        spec: the answers system.
        examples: the test set.
        limited: the test set is the first rows of its file (`test_set.limit`): the file may
            hold answers to the rows after them.

    Raises:
        InputError: the file does not fit the test set (a missing, extra or shifted row, an
            answer to a question the test set does not ask, two different answers to one).
    """
    if not os.path.exists(spec.path):
        raise FileNotFoundError(f"system {spec.name!r}: answers file {spec.path!r} does not exist")
    rows = [_answer_row(spec, row) for row in read_rows(spec.path)]
    answers, thinks = [], []
    for row in _align(spec, rows, examples, limited):
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


def _align(
    spec: SystemSpec, rows: list[AnswerRow], examples: list[Example], limited: bool
) -> list[AnswerRow]:
    """The answer to each test question: by row position (`question_column: null`), else by
    question text. Either way the file must fit the test set exactly: a missing, extra or
    shifted row would pair answers with the wrong questions and still score."""
    # Rows of the test file itself: kept questions and the duplicates dropped after them.
    test_rows = len(examples) + sum(ex.dropped_duplicates for ex in examples)
    if spec.question_column is None:
        fits = len(rows) >= test_rows if limited else len(rows) == test_rows
        if not fits:
            raise InputError(
                f"system {spec.name!r}: {spec.path} has {len(rows)} answers for the test set's "
                f"{test_rows} rows; aligned by row order, one missing or extra row would shift "
                "every answer after it: give one answer per test row, in order, or set "
                "question_column to align by question"
            )
        # By row position in the test file (dropped duplicate questions leave gaps).
        return [rows[ex.row_position] for ex in examples]
    by_question: dict[str, list[AnswerRow]] = defaultdict(list)
    for row in rows:
        by_question[(row.question or "").strip()].append(row)
    asked: dict[str, int] = defaultdict(int)  # test rows asking each question
    for ex in examples:
        asked[ex.question.strip()] += 1 + ex.dropped_duplicates
    if not limited:
        unknown = [matches[0] for q, matches in by_question.items() if q not in asked]
        if unknown:
            raise InputError(
                f"system {spec.name!r}: {unknown[0].where} answers a question the test set does "
                f"not ask ({(unknown[0].question or '')[:60]!r}; {len(unknown)} such row(s)): "
                "is the answers file for this test set? Remove the rows, or point test_set at "
                "the questions they answer"
            )
    aligned = []
    for ex in examples:
        question = ex.question.strip()
        matches = by_question.get(question)
        if not matches:
            raise InputError(
                f"system {spec.name!r}: {spec.path} has no answer to test question {ex.index} "
                f"({ex.where}): {ex.question[:60]!r}; answer every test question, or set "
                "question_column: null to align by row order"
            )
        if len(matches) > asked[question] and len({m.answer for m in matches}) > 1:
            raise InputError(
                f"system {spec.name!r}: {matches[0].where} and {matches[1].where} give different "
                f"answers to test question {ex.index} ({ex.question[:60]!r}), which the test set "
                f"asks {asked[question]} time(s): keep the answer meant, remove the others"
            )
        aligned.append(matches.pop(0) if len(matches) > 1 else matches[0])
    return aligned
