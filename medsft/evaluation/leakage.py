"""Leakage check: how much of each test item appears in the training data.

    python -m medsft.cli.leakage --leakage.train_set.source FreedomIntelligence/Huatuo26M-Lite \\
        --leakage.train_set.preset huatuo --leakage.train_set.split train \\
        --test_set.source data/sample/test_zh_med.json
    python evaluate.py --config configs/eval.yaml --leakage.train_set.source data/train.jsonl

For every test question and reference: the longest run of tokens it shares with any training
conversation (characters for Chinese, words otherwise), as a count and as a share of the item, the
training row holding it, and whether the question occurs verbatim (after whitespace and case
normalisation) as a training question. An item is flagged when it is an exact duplicate, or when
its question's or reference's run is both at least `threshold` of it and at least `min_length`
tokens (13 characters or 8 words by default): a share alone flags short questions that merely
share a stock phrase (的早期症状是什么 is 8 of a 10-character question's characters). The training set is read once, streamed (a hub id works), with a progress
bar; memory holds the test set's n-gram index only.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import replace
from itertools import islice
from typing import Any

from medsft.data.schema import iter_conversations
from medsft.data.sources import InvalidExample, check_local_source
from medsft.errors import InputError
from medsft.evaluation.config import DataSpec, LeakageSettings
from medsft.evaluation.testset import Example

log = logging.getLogger(__name__)

_HAN = re.compile(r"[\u4e00-\u9fff]")
MIN_LENGTH = {"char": 13, "word": 8}
"""The shortest run flagged by default, per unit (`LeakageSettings.min_length`)."""


def tokens(text: str, unit: str) -> list[str]:
    """Characters (spaces dropped) or lower-cased words."""
    if unit == "char":
        return [c for c in text if not c.isspace()]
    return re.findall(r"\w+", text.lower())


def _normalise(text: str) -> str:
    return re.sub(r"\s+", "", text).lower()


class OverlapIndex:
    """Longest shared token run of each test text with any training text streamed past it."""

    def __init__(self, texts: list[str], unit: str, seed_length: int) -> None:
        self.unit, self.k = unit, seed_length
        self.texts = [tokens(t, unit) for t in texts]
        self.seeds: dict[tuple[str, ...], list[tuple[int, int]]] = defaultdict(list)
        for i, toks in enumerate(self.texts):
            for p in range(len(toks) - self.k + 1):
                self.seeds[tuple(toks[p : p + self.k])].append((i, p))
        self.best = [0] * len(texts)
        self.where: list[str | None] = [None] * len(texts)

    def add(self, text: str, where: str) -> None:
        """Compare one training text with every test text."""
        train = tokens(text, self.unit)
        k = self.k
        for j in range(len(train) - k + 1):
            hits = self.seeds.get(tuple(train[j : j + k]))
            if not hits:
                continue
            for i, p in hits:
                test = self.texts[i]
                if p > 0 and j > 0 and test[p - 1] == train[j - 1]:
                    continue  # not the start of the run: counted from its first token
                n = k
                while p + n < len(test) and j + n < len(train) and test[p + n] == train[j + n]:
                    n += 1
                if n > self.best[i]:
                    self.best[i], self.where[i] = n, where


def _training_texts(spec: DataSpec, what: str) -> Iterator[tuple[str, str, list[str]]]:
    """(where, whole conversation text, user messages) of every training row, streamed."""
    check_local_source(spec.source, f"{what}.source")
    skipped: list[InvalidExample] = []
    # The training rows as they were trained on, but without a system prompt: it is no overlap.
    conversations = iter_conversations(replace(spec, system_prompt=None), skipped=skipped.append)
    try:
        for conversation in islice(conversations, spec.limit):
            messages = conversation.messages
            users = [m["content"] for m in messages if m["role"] == "user"]
            yield conversation.row.where, "\n".join(m["content"] for m in messages), users
    except InvalidExample as err:
        raise InputError(
            f"{what}: {err}; map the columns with {what}.preset / .columns (or set "
            f"{what}.skip_invalid: true)"
        ) from None
    if skipped:
        log.warning("%s: %d invalid rows skipped", what, len(skipped))


def check_leakage(
    examples: list[Example],
    settings: LeakageSettings,
    *,
    progress: bool = True,
    what: str = "leakage.train_set",
) -> dict[str, Any]:
    """report.json's `leakage`: per test item the longest overlap with the training data."""
    from tqdm.auto import tqdm

    if settings.seed_length < 1 or not 0 < settings.threshold <= 1:
        raise InputError("leakage.seed_length must be >= 1 and leakage.threshold in (0, 1]")
    if settings.min_length is not None and settings.min_length < settings.seed_length:
        raise InputError(
            f"leakage.min_length ({settings.min_length}) must be >= leakage.seed_length "
            f"({settings.seed_length}): shorter runs are not looked for"
        )
    unit = settings.unit
    if unit == "auto":
        unit = "char" if any(_HAN.search(ex.question) for ex in examples) else "word"
    min_length = settings.min_length or max(MIN_LENGTH[unit], settings.seed_length)
    questions = OverlapIndex([ex.question for ex in examples], unit, settings.seed_length)
    references = OverlapIndex([ex.reference for ex in examples], unit, settings.seed_length)
    wanted = {_normalise(ex.question): ex.index for ex in examples}
    duplicates: dict[int, str] = {}
    rows = 0
    bar: Iterable = tqdm(
        _training_texts(settings.train_set, what),
        desc="leakage check",
        unit="row",
        disable=not progress,
    )
    for where, text, users in bar:
        rows += 1
        questions.add(text, where)
        references.add(text, where)
        for u in users:
            if (i := wanted.get(_normalise(u))) is not None:
                duplicates.setdefault(i, where)
    items = []
    for ex in examples:
        i = ex.index
        q_len, r_len = len(questions.texts[i]), len(references.texts[i])
        q_share = questions.best[i] / q_len if q_len else 0.0
        r_share = references.best[i] / r_len if r_len else 0.0
        items.append(
            {
                "index": i,
                "question": ex.question,
                "where": ex.where,
                "question_overlap": questions.best[i],
                "question_share": round(q_share, 3),
                "question_match": questions.where[i],
                "reference_overlap": references.best[i],
                "reference_share": round(r_share, 3),
                "reference_match": references.where[i],
                "exact_duplicate": duplicates.get(i),
                "flagged": i in duplicates
                or any(
                    share >= settings.threshold and run >= min_length
                    for share, run in ((q_share, questions.best[i]), (r_share, references.best[i]))
                ),
            }
        )
    flagged = [it for it in items if it["flagged"]]
    log.info(
        "leakage: %d of %d test items flagged against %d training rows",
        len(flagged),
        len(items),
        rows,
    )
    return {
        "train_source": settings.train_set.source,
        "train_rows": rows,
        "unit": unit,
        "seed_length": settings.seed_length,
        "threshold": settings.threshold,
        "min_length": min_length,
        "n": len(items),
        "flagged": len(flagged),
        "exact_duplicates": len(duplicates),
        "show": settings.show,
        "items": items,
    }


def render_leakage(leak: dict[str, Any]) -> list[str]:
    """report.md's leakage section."""
    unit = "characters" if leak["unit"] == "char" else "words"
    lines = [
        "",
        "## Leakage check",
        "",
        f"{leak['n']} test items against {leak['train_rows']} training rows of "
        f"`{leak['train_source']}`: **{leak['flagged']} flagged** ({leak['exact_duplicates']} "
        f"questions verbatim in the training data; others share at least "
        f"{leak['threshold']:.0%} of their {unit}, and at least {leak['min_length']} {unit}, in "
        f"one run with a training row). Overlaps shorter than {leak['seed_length']} {unit} are "
        "not counted.",
    ]
    shown = sorted(
        (it for it in leak["items"] if it["flagged"]),
        key=lambda it: -max(it["question_share"], it["reference_share"]),
    )
    if shown:
        lines += [
            "",
            "| # | question | question overlap | reference overlap | duplicate of | training row |",
            "|---|---|---|---|---|---|",
        ]
        for it in shown[: leak["show"]]:
            q = it["question"].replace("|", "\\|").replace("\n", " ")
            lines.append(
                f"| {it['index']} | {q[:60]} | {it['question_overlap']} "
                f"({it['question_share']:.0%}) | {it['reference_overlap']} "
                f"({it['reference_share']:.0%}) | {it['exact_duplicate'] or '–'} | "
                f"{it['question_match'] or it['reference_match'] or '–'} |"
            )
    return lines
