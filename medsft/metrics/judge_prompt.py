"""The pairwise judge's prompts: packaged templates and rubrics per language, and their rendering.

A template holds `{question}`, `{answer_1}` and `{answer_2}` (and `{rubric}` when a rubric is
used); it is rendered in one pass, so a placeholder typed inside a question stays text. The
prompt's hash (`JudgePromptText.sha256`) tells reports made with different prompts apart.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from medsft.metrics.verdict import LABELS, LABELS_ZH

Language = Literal["en", "zh"]

LABEL_FOLLOW_UP = (
    "Your reply did not end with a verdict. Reply with exactly one of the following three "
    "sentences and nothing else:\n" + "\n".join(LABELS.values())
)
"""The user turn sent after a reply without a verdict label (the label retry)."""

LABEL_FOLLOW_UP_ZH = (
    "你的回复最后没有给出结论。请只回复以下三句之一，不要写其他内容：\n"
    + "\n".join(LABELS_ZH.values())
)
"""The label retry's user turn for the Chinese prompt."""

TEMPLATE_DIR = Path(__file__).parent / "templates"
DEFAULT_TEMPLATE = TEMPLATE_DIR / "judge_pairwise.txt"
MEDICAL_RUBRIC = TEMPLATE_DIR / "medical_rubric.txt"
DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful, precise and impartial assistant for checking the quality of answers."
)


@dataclass(frozen=True)
class JudgePrompt:
    """The packaged prompt of one language: template, medical rubric, system message, follow-up."""

    template: Path
    rubric: Path
    system_prompt: str
    follow_up: str


PROMPTS: dict[Language, JudgePrompt] = {
    "en": JudgePrompt(DEFAULT_TEMPLATE, MEDICAL_RUBRIC, DEFAULT_SYSTEM_PROMPT, LABEL_FOLLOW_UP),
    "zh": JudgePrompt(
        TEMPLATE_DIR / "judge_pairwise_zh.txt",
        TEMPLATE_DIR / "medical_rubric_zh.txt",
        "你是一名乐于助人、严谨而公正的助手，负责评估回答的质量。",
        LABEL_FOLLOW_UP_ZH,
    ),
}
"""Packaged prompts by language (`ajudge_pairs(language=...)`)."""

_PLACEHOLDER_RE = re.compile(r"\{(question|answer_1|answer_2|rubric)\}")
_REQUIRED_PLACEHOLDERS = ("{question}", "{answer_1}", "{answer_2}")


@dataclass(frozen=True)
class JudgePromptText:
    """The rendered-prompt recipe: template, rubric, system message and follow-up as texts."""

    template: str
    rubric: str
    system: str
    follow_up: str

    @property
    def sha256(self) -> str:
        """Hash of the system message, template and rubric."""
        blob = json.dumps([self.system or None, self.template, self.rubric], ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def messages(self, question: str, first: str, second: str) -> list[dict[str, str]]:
        """The chat messages judging `first` (Assistant 1) against `second` (Assistant 2).

        Args:
            question: the question both answers reply to.
            first: the answer shown as Assistant 1.
            second: the answer shown as Assistant 2.
        """
        user = _render(
            self.template, question=question, answer_1=first, answer_2=second, rubric=self.rubric
        )
        system = [{"role": "system", "content": self.system}] if self.system else []
        return [*system, {"role": "user", "content": user}]


def _read(path: str | os.PathLike[str], what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise FileNotFoundError(f"cannot read the judge {what} {str(path)!r}: {exc}") from exc


def _render(template: str, **values: str) -> str:
    # One pass, so a '{answer_2}' typed inside a question is left as text, not substituted.
    return _PLACEHOLDER_RE.sub(lambda m: values[m[1]], template)


def load_prompt(
    language: Language,
    template: str | os.PathLike[str] | None,
    rubric: bool | str | os.PathLike[str],
    system_prompt: str | None,
) -> JudgePromptText:
    """The prompt texts of one judging run, checked.

    Args:
        language: `en` or `zh`: which packaged prompt (`PROMPTS`) fills what is not given.
        template: template file replacing the packaged one; None for the packaged one.
        rubric: True for the packaged rubric, False for none, or a rubric file.
        system_prompt: system message; None for the packaged one; "" for none.
    """
    if language not in PROMPTS:
        raise ValueError(f"language must be one of {', '.join(PROMPTS)}, got {language!r}")
    packaged = PROMPTS[language]
    template_path = packaged.template if template is None else template
    template_text = _read(template_path, "template")
    missing = [p for p in _REQUIRED_PLACEHOLDERS if p not in template_text]
    if missing:
        raise ValueError(f"judge template {str(template_path)!r} lacks {', '.join(missing)}")
    rubric_text = ""
    if rubric is not False:
        rubric_text = _read(packaged.rubric if rubric is True else rubric, "rubric").strip()
        if "{rubric}" not in template_text:
            raise ValueError(f"judge template {str(template_path)!r} has no {{rubric}} placeholder")
    system = packaged.system_prompt if system_prompt is None else system_prompt
    return JudgePromptText(template_text, rubric_text, system, packaged.follow_up)
