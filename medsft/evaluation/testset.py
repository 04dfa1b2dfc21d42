"""Test questions with their reference answers, read with training's column mapping."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from itertools import islice
from typing import Any

from medsft.cache import digest
from medsft.chat import Message, qa_messages
from medsft.data.schema import iter_conversations
from medsft.data.sources import InvalidExample, Row, check_local_source
from medsft.errors import InputError
from medsft.evaluation.config import DataSpec
from medsft.model.generate import split_think

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
    position: int | None = None
    """0-based position among the rows read (differs from `index` after dropped duplicates);
    None: the same as `index`."""
    duplicate_of: int | None = None
    """Kept duplicate (`duplicates: keep`): the index of the first row asking this question."""
    dropped_duplicates: int = 0
    """Later rows asking this question that were dropped (`duplicates: drop`)."""

    @property
    def row_position(self) -> int:
        """0-based position of this question's row among the rows read."""
        return self.index if self.position is None else self.position

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
        raise InputError(
            f"{what}.slice_column: {row.where}: no value in column {column!r}; every row needs "
            "one (or set slice_column: null)"
        )
    return str(value).strip()


def load_examples(spec: DataSpec, *, what: str = "test_set") -> list[Example]:
    """Read a test set: question = the last user message, reference = the last assistant one.

    Raises ValueError naming the file and line of a row without a question or reference.
    """
    if spec.limit is not None and spec.limit < 1:
        raise InputError(f"{what}.limit must be >= 1 or null, got {spec.limit}")
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
                raise InputError(
                    f"{what}: {row.where}: no user message before the reference answer"
                )
            think, reference = split_think(messages[last]["content"])
            examples.append(
                Example(
                    len(examples),
                    row.where,
                    prompt,
                    users[-1]["content"],
                    reference,
                    think,
                    _group(row, spec.slice_column, what),
                )
            )
    except InvalidExample as err:
        raise InputError(
            f"{what}: {err}. Every row needs a question and a reference answer; fix the row, "
            f"map the right columns with {what}.preset / {what}.columns, or set "
            f"{what}.skip_invalid: true"
        ) from None
    if skipped:
        log.warning(
            "%s: %d invalid rows skipped (%s)",
            what,
            len(skipped),
            ", ".join(sorted({err.kind for err in skipped})),
        )
    if not examples:
        raise InputError(f"{what}: no rows in {spec.source!r}")
    return _handle_duplicates(examples, spec.duplicates, what)


def _handle_duplicates(examples: list[Example], policy: str, what: str) -> list[Example]:
    """Apply `<what>.duplicates` to rows whose prompt (the conversation up to the answer)
    repeats an earlier row's."""
    first: dict[str, Example] = {}
    repeats: list[tuple[Example, Example]] = []
    for ex in examples:
        original = first.setdefault(digest(ex.prompt), ex)
        if original is not ex:
            repeats.append((ex, original))
    if not repeats:
        return examples
    named = "; ".join(f"{ex.where} repeats {orig.where}" for ex, orig in repeats[:3])
    named += f"; and {len(repeats) - 3} more" if len(repeats) > 3 else ""
    if policy == "error":
        raise InputError(
            f"{what}: {len(repeats)} duplicate question(s): {named}. Remove them, or set "
            f"{what}.duplicates: drop (keep the first) or keep (score each)"
        )
    if policy == "keep":
        log.warning("%s: %d duplicate question(s) kept (%s)", what, len(repeats), named)
        original = {id(ex): orig.index for ex, orig in repeats}
        return [
            replace(ex, duplicate_of=original[id(ex)]) if id(ex) in original else ex
            for ex in examples
        ]
    log.warning("%s: %d duplicate question(s) dropped (%s)", what, len(repeats), named)
    dropped = {id(ex) for ex, _ in repeats}
    counts: dict[int, int] = {}
    for _, orig in repeats:
        counts[id(orig)] = counts.get(id(orig), 0) + 1
    kept = [ex for ex in examples if id(ex) not in dropped]
    return [
        replace(ex, index=i, position=ex.index, dropped_duplicates=counts.get(id(ex), 0))
        for i, ex in enumerate(kept)
    ]


def duplicate_summary(examples: list[Example], policy: str) -> dict[str, Any]:
    """report.json's account of duplicate questions: the policy and the rows it concerned.

    Args:
        examples: the loaded examples (`load_examples`).
        policy: the set's `duplicates` setting.
    """
    dropped = sum(ex.dropped_duplicates for ex in examples)
    kept = sum(ex.duplicate_of is not None for ex in examples)
    return {"policy": policy, "found": dropped + kept, "dropped": dropped, "kept": kept}
