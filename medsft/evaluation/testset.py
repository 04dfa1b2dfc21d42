"""Test questions with their reference answers, read with training's column mapping."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from itertools import islice

from medsft.chat import Message, qa_messages
from medsft.data.schema import iter_conversations
from medsft.data.sources import InvalidExample, Row, check_local_source
from medsft.evaluation.config import DataSpec
from medsft.generate import split_think

log = logging.getLogger(__name__)


@dataclass
class Example:
    """One test question."""

    index: int
    where: str
    """File and line (or hub row), for messages."""
    prompt: list[Message]
    """The conversation up to the answer to generate (system, history, question)."""
    question: str
    """The last user message."""
    reference: str
    """The reference answer, without any think block."""
    reference_think: str | None
    group: str | None = None
    """The row's value in `slice_column`, when one is named."""

    @property
    def conversation(self) -> list[Message]:
        """Prompt plus the reference answer (think block as in training), for perplexity."""
        # qa_messages formats the answer turn; the prompt keeps any system message and history.
        answer = qa_messages(self.question, self.reference, think=self.reference_think)[-1]
        return [*self.prompt, answer]


def _group(row: Row, column: str | None, what: str) -> str | None:
    if column is None:
        return None
    value = row.data.get(column) if isinstance(row.data, dict) else None
    if value is None or str(value).strip() == "":
        raise ValueError(
            f"{what}.slice_column: {row.where}: no value in column {column!r}; every row needs "
            "one (or set slice_column: null)"
        )
    return str(value).strip()


def load_examples(spec: DataSpec, *, what: str = "test_set") -> list[Example]:
    """Read a test set: question = the last user message, reference = the last assistant one.

    Raises ValueError naming the file and line of a row without a question or reference.
    """
    if spec.limit is not None and spec.limit < 1:
        raise ValueError(f"{what}.limit must be >= 1 or null, got {spec.limit}")
    check_local_source(spec.source, f"{what}.source")
    examples: list[Example] = []
    skipped: list[InvalidExample] = []
    try:
        for conversation in islice(iter_conversations(spec, skipped=skipped.append), spec.limit):
            row, messages = conversation.row, conversation.messages
            last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
            prompt = messages[:last]
            users = [m for m in prompt if m["role"] == "user"]
            if not users:
                raise ValueError(
                    f"{what}: {row.where}: no user message before the reference answer"
                )
            think, reference = split_think(messages[last]["content"])
            examples.append(
                Example(len(examples), row.where, prompt, users[-1]["content"], reference, think,
                        _group(row, spec.slice_column, what))
            )  # fmt: skip
    except InvalidExample as err:
        raise ValueError(
            f"{what}: {err}. Every row needs a question and a reference answer; fix the row, "
            f"map the right columns with {what}.preset / {what}.columns, or set "
            f"{what}.skip_invalid: true"
        ) from None
    if skipped:
        log.warning("%s: %d invalid rows skipped (%s)", what, len(skipped),
                    ", ".join(sorted({err.kind for err in skipped})))  # fmt: skip
    if not examples:
        raise ValueError(f"{what}: no rows in {spec.source!r}")
    return examples
