"""Leakage check: how much of each test item appears in the training data.

    python -m medsft.cli.leakage --leakage.train_set.source FreedomIntelligence/Huatuo26M-Lite \\
        --leakage.train_set.preset huatuo --leakage.train_set.split train \\
        --test_set.source data/sample/test_zh_med.json
    python evaluate.py --config configs/eval.yaml --leakage.train_set.source data/train.jsonl

Texts are compared normalised (`normalise`): Unicode NFKC (full-width ？，ＡＢ１ become ?,AB1),
lower case, punctuation, symbols and whitespace dropped, and greetings and polite openings and
closings (医生您好，请问 / 你好 / 谢谢 / Hi doctor, ...) cut from both ends, so a copy with another
question mark or a polite prefix is the same text. Then, for every test item, each rule that fires
is named in the item's `rules`:

- `exact`: the question equals a training question (a user message), both normalised;
- `near`: the question and a training question differ only in light tokens (`LIGHT`: particles,
  pronouns, modal and question words such as 能 / 可以 / 吗 / 呢, never a negation, number or
  name), share other tokens, and are at least `NEAR_SIMILARITY` alike (difflib's ratio):
  糖尿病人能吃西瓜吗 and 糖尿病人可以吃西瓜吗 are one question, 甲亢的早期症状是什么 and
  肺癌的早期症状是什么 two;
- `contained`: a short question (under `min_length` tokens, at least `seed_length`), whole,
  inside one training question; short questions are matched whole only, never by a part;
- `question run` / `reference run`: the question's or reference's longest run of tokens shared
  with one training conversation (characters for Chinese, words otherwise) is both at least
  `threshold` of the item and at least `min_length` tokens (13 characters or 8 words by default):
  a share alone would flag short questions that merely share a stock phrase (的早期症状是什么 is 8
  of a 10-character question's characters).

An item is flagged when any rule fires. The training set is read once, streamed (a hub id works),
with a progress bar; memory holds the test set's indexes only.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import replace
from difflib import SequenceMatcher
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
NEAR_SIMILARITY = 0.6
"""Least difflib ratio of two normalised questions for the `near` rule, which also needs them to
differ in `LIGHT` tokens only and to share at least `NEAR_CONTENT` other tokens: 如何 -> 怎么
twice and a 呢 in a 16-character question is 0.73, 什么是X -> X是什么 is about 0.7."""
NEAR_CONTENT = 2
"""Least number of shared tokens outside `LIGHT` for the `near` rule (怎么办 vs 怎么办呢 is
nothing but light words)."""
LIGHT = {
    "char": frozenset(
        "的地得了着过吗呢吧啊呀哦嘛么啦哈我你您他她它们这那此能可以会要想应该需请问谢是在有一下点些个"
        "什怎样如何为啥哪和与及或也都就还又且而但所因很太挺比较更最"
    ),
    "word": frozenset(
        [
            "a",
            "an",
            "the",
            "is",
            "are",
            "was",
            "were",
            "be",
            "been",
            "do",
            "does",
            "did",
            "can",
            "could",
            "should",
            "would",
            "will",
            "may",
            "might",
            "must",
            "i",
            "my",
            "me",
            "you",
            "your",
            "it",
            "its",
            "this",
            "that",
            "these",
            "those",
            "what",
            "which",
            "how",
            "why",
            "when",
            "who",
            "there",
            "here",
            "please",
            "to",
            "of",
            "for",
            "in",
            "on",
            "at",
            "with",
            "and",
            "or",
            "about",
            "some",
            "any",
            "get",
            "have",
            "has",
            "had",
            "am",
            "really",
            "very",
            "so",
            "just",
            "also",
        ]
    ),
}
"""Tokens whose change leaves a question the same question: particles, pronouns, modal and
question words, connectives, degree adverbs. No negation (不 没 无 别 not), number, or content."""
NEAR_GRAM = {"char": 3, "word": 2}
"""Tokens of the shared n-gram that makes a training question a `near` candidate."""
RULES = ("exact", "near", "contained", "question run", "reference run")
"""The leakage rules, in the order an item lists them."""

OPENINGS = {
    "char": (
        "我想咨询一下",
        "我想问一下",
        "医生您好",
        "医生你好",
        "大夫您好",
        "大夫你好",
        "您好医生",
        "你好医生",
        "您好大夫",
        "你好大夫",
        "想咨询一下",
        "想问一下",
        "咨询一下",
        "请问一下",
        "问一下",
        "请问",
        "您好",
        "你好",
        "医生",
        "大夫",
    ),
    "word": (
        ("dear", "doctor"),
        ("hi", "doctor"),
        ("hello", "doctor"),
        ("hi",),
        ("hello",),
        ("hey",),
        ("dear",),
        ("doctor",),
        ("dr",),
        ("please",),
    ),
}
"""Greetings and polite openings cut from the start of a normalised text, repeatedly (longest
first): they say nothing of what is asked, and a copied question often gains or loses one."""
CLOSINGS = {
    "char": ("谢谢医生", "谢谢大夫", "谢谢您", "谢谢", "多谢"),
    "word": (("thank", "you"), ("thanks",)),
}
"""Thanks cut from the end of a normalised text."""


def normalise(text: str, unit: str) -> list[str]:
    """The tokens leakage compares: characters (Chinese) or words, after NFKC (full-width
    punctuation, digits and letters become half-width), lower case, without punctuation, symbols
    or whitespace, and without greetings, polite openings and thanks at either end.

    Args:
        text: a question, reference or training text.
        unit: `char` or `word`.
    """
    text = unicodedata.normalize("NFKC", text).lower()
    if unit == "char":
        toks: list[Any] = [c for c in text if c.isalnum()]
        return list(_strip("".join(toks), OPENINGS["char"], CLOSINGS["char"]))
    return list(_strip(tuple(re.findall(r"\w+", text)), OPENINGS["word"], CLOSINGS["word"]))


def _strip(toks: Any, openings: tuple, closings: tuple) -> Any:
    """`toks` (a str or a tuple of words) without the given openings and closings, repeatedly."""
    changed = True
    while changed and toks:
        changed = False
        for o in openings:
            if toks[: len(o)] == o and len(toks) > len(o):
                toks, changed = toks[len(o) :], True
                break
        for c in closings:
            if toks[-len(c) :] == c and len(toks) > len(c):
                toks, changed = toks[: -len(c)], True
                break
    return toks


def tokens(text: str, unit: str) -> list[str]:
    """The normalised tokens of `text` (see `normalise`)."""
    return normalise(text, unit)


class OverlapIndex:
    """Longest shared token run of each test text with any training text streamed past it."""

    def __init__(self, texts: list[list[str]], seed_length: int) -> None:
        self.k = seed_length
        self.texts = texts
        self.seeds: dict[tuple[str, ...], list[tuple[int, int]]] = defaultdict(list)
        for i, toks in enumerate(self.texts):
            for p in range(len(toks) - self.k + 1):
                self.seeds[tuple(toks[p : p + self.k])].append((i, p))
        self.best = [0] * len(texts)
        self.where: list[str | None] = [None] * len(texts)

    def add(self, train: list[str], where: str) -> None:
        """Compare one training text's tokens with every test text."""
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


class NearIndex:
    """The training question most like each test question (difflib's ratio) among those that
    differ from it in `light` tokens only and are at least `NEAR_SIMILARITY` alike; candidates
    share an n-gram and have compatible lengths."""

    def __init__(self, questions: list[list[str]], gram: int, light: frozenset[str]) -> None:
        self.questions, self.gram, self.light = questions, gram, light
        self.grams: dict[tuple[str, ...], list[int]] = defaultdict(list)
        for i, q in enumerate(questions):
            for g in {tuple(q[p : p + gram]) for p in range(len(q) - gram + 1)}:
                self.grams[g].append(i)
        self.best: list[tuple[float, str] | None] = [None] * len(questions)
        # ratio = 2 M / (a + b) >= s needs min / max >= s / (2 - s).
        self.length_ratio = NEAR_SIMILARITY / (2 - NEAR_SIMILARITY)

    def add(self, train: list[str], where: str) -> None:
        """Compare one training question's tokens with every test question."""
        seen: set[int] = set()
        for p in range(len(train) - self.gram + 1):
            seen.update(self.grams.get(tuple(train[p : p + self.gram]), ()))
        for i in seen:
            q = self.questions[i]
            if min(len(q), len(train)) < self.length_ratio * max(len(q), len(train)):
                continue
            matcher = SequenceMatcher(None, q, train, autojunk=False)
            if matcher.quick_ratio() < NEAR_SIMILARITY:
                continue
            ratio = matcher.ratio()
            best = self.best[i]
            if ratio < NEAR_SIMILARITY or (best is not None and ratio <= best[0]):
                continue
            opcodes = matcher.get_opcodes()
            changed = [
                t
                for op, i1, i2, j1, j2 in opcodes
                if op != "equal"
                for t in (*q[i1:i2], *train[j1:j2])
            ]
            content = sum(
                t not in self.light
                for op, i1, i2, _, _ in opcodes
                if op == "equal"
                for t in q[i1:i2]
            )
            if content >= NEAR_CONTENT and all(t in self.light for t in changed):
                self.best[i] = (ratio, where)


def _training_texts(spec: DataSpec, what: str) -> Iterator[tuple[str, list[str], list[str]]]:
    """(where, the conversation's messages, its user messages) of every training row, streamed."""
    check_local_source(spec.source, f"{what}.source")
    skipped: list[InvalidExample] = []
    # The training rows as they were trained on, but without a system prompt: it is no overlap.
    conversations = iter_conversations(replace(spec, system_prompt=None), skipped=skipped.append)
    try:
        for conversation in islice(conversations, spec.limit):
            messages = [m["content"] for m in conversation.messages]
            users = [m["content"] for m in conversation.messages if m["role"] == "user"]
            yield conversation.row.where, messages, users
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
    """report.json's `leakage`: per test item its overlaps with the training data, the rules
    that fired (the module docstring) and whether it is flagged."""
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
    asked = [normalise(ex.question, unit) for ex in examples]
    questions = OverlapIndex(asked, settings.seed_length)
    references = OverlapIndex(
        [normalise(ex.reference, unit) for ex in examples], settings.seed_length
    )
    near = NearIndex(asked, NEAR_GRAM[unit], LIGHT[unit])
    wanted: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for ex, q in zip(examples, asked, strict=True):
        wanted[tuple(q)].append(ex.index)
    duplicates: dict[int, str] = {}
    rows = 0
    bar: Iterable = tqdm(
        _training_texts(settings.train_set, what),
        desc="leakage check",
        unit="row",
        disable=not progress,
    )
    # Short questions, matched whole inside training questions (`contained`): as text, with a
    # separator between words so that no word matches part of another.
    sep = "" if unit == "char" else " "
    short = {
        ex.index: sep.join(q)
        for ex, q in zip(examples, asked, strict=True)
        if settings.seed_length <= len(q) < min_length
    }
    contained: dict[int, str] = {}
    for where, messages, users in bar:
        rows += 1
        text = [t for m in messages for t in normalise(m, unit)]
        questions.add(text, where)
        references.add(text, where)
        for u in users:
            u_tokens = normalise(u, unit)
            for i in wanted.get(tuple(u_tokens), ()):
                duplicates.setdefault(i, where)
            near.add(u_tokens, where)
            joined = f"{sep}{sep.join(u_tokens)}{sep}"
            for i, q in short.items():
                if i not in contained and f"{sep}{q}{sep}" in joined:
                    contained[i] = where
    items = []
    for ex in examples:
        i = ex.index
        q_len, r_len = len(questions.texts[i]), len(references.texts[i])
        q_share = questions.best[i] / q_len if q_len else 0.0
        r_share = references.best[i] / r_len if r_len else 0.0
        similar = near.best[i]
        fired = {
            "exact": i in duplicates,
            "near": i not in duplicates and similar is not None,
            "contained": i in contained and i not in duplicates,
            "question run": q_share >= settings.threshold and questions.best[i] >= min_length,
            "reference run": r_share >= settings.threshold and references.best[i] >= min_length,
        }
        rules = [rule for rule in RULES if fired[rule]]
        items.append(
            {
                "index": i,
                "question": ex.question,
                "where": ex.where,
                "question_tokens": q_len,
                "question_overlap": questions.best[i],
                "question_share": round(q_share, 3),
                "question_match": questions.where[i],
                "reference_overlap": references.best[i],
                "reference_share": round(r_share, 3),
                "reference_match": references.where[i],
                "exact_duplicate": duplicates.get(i),
                "contained_in": contained.get(i),
                "near_duplicate": None
                if similar is None
                else {"similarity": round(similar[0], 3), "where": similar[1]},
                "rules": rules,
                "flagged": bool(rules),
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
        "near_similarity": NEAR_SIMILARITY,
        "n": len(items),
        "flagged": len(flagged),
        "exact_duplicates": len(duplicates),
        "by_rule": {rule: sum(rule in it["rules"] for it in items) for rule in RULES},
        "show": settings.show,
        "items": items,
    }


def render_leakage(leak: dict[str, Any]) -> list[str]:
    """report.md's leakage section."""
    unit = "characters" if leak["unit"] == "char" else "words"
    by_rule = leak.get("by_rule") or {}
    fired = ", ".join(f"{rule} {n}" for rule, n in by_rule.items() if n)
    lines = [
        "",
        "## Leakage check",
        "",
        f"{leak['n']} test items against {leak['train_rows']} training rows of "
        f"`{leak['train_source']}`: **{leak['flagged']} flagged**"
        + (f" (by rule: {fired})" if fired else "")
        + ". Texts are compared without punctuation, case, width or greetings (医生您好，请问 / "
        "你好 / 谢谢). Rules: `exact`, the question is a training question; `near`, at least "
        f"{leak.get('near_similarity', NEAR_SIMILARITY):.0%} alike one; `contained`, a question "
        f"shorter than {leak['min_length']} {unit} lies whole inside a training row; `question "
        f"run` / `reference run`, at least {leak['threshold']:.0%} of the item's {unit}, and at "
        f"least {leak['min_length']} {unit}, in one run shared with a training row. Runs shorter "
        f"than {leak['seed_length']} {unit} are not counted.",
    ]
    shown = sorted(
        (it for it in leak["items"] if it["flagged"]),
        key=lambda it: -max(it["question_share"], it["reference_share"]),
    )
    if shown:
        lines += [
            "",
            "| # | question | rules | question overlap | reference overlap | duplicate of | "
            "training row |",
            "|---|---|---|---|---|---|---|",
        ]
        for it in shown[: leak["show"]]:
            q = it["question"].replace("|", "\\|").replace("\n", " ")
            near = it.get("near_duplicate") or {}
            duplicate = it["exact_duplicate"] or near.get("where")
            lines.append(
                f"| {it['index']} | {q[:60]} | {', '.join(it.get('rules', []))} | "
                f"{it['question_overlap']} ({it['question_share']:.0%}) | "
                f"{it['reference_overlap']} ({it['reference_share']:.0%}) | {duplicate or '–'} | "
                f"{it['question_match'] or it['reference_match'] or '–'} |"
            )
    return lines
