"""Reading a pairwise judge's verdict from its reply: only an explicit, final verdict counts.

The judge prompts ask the reply to end with one of three sentences (`LABELS`, or `LABELS_ZH` for
the Chinese prompt). A label found somewhere in the text is not yet a verdict: "I would not say
Assistant 1 is better than Assistant 2" holds the words of a label and means the opposite. The
last label of the reply is the verdict only when

- nothing but markup or closing punctuation follows it (not a question mark: "... better than
  Assistant 2?" asks, it does not decide; nor more words: "助手1更好的说法不成立");
- it opens its clause: it starts the reply or a line, follows a colon or a sentence end
  (`Final verdict:`, `结论：`, `... on reflection:`), or follows a concluding word such as
  `therefore`, `my verdict is`, `因此`, `综上` (so a negation or a quote just before it, "not say",
  "并非", "or", is never read as a verdict), and no negation ends the text before it ("My verdict
  is not:", "结论不是：");
- it is not the last line of a list of different labels (a reply echoing the choices).

A reply without such a verdict gets the judge's label retry, then counts as an error: a guessed
verdict would be a silent error in the win rate.
"""

from __future__ import annotations

import re
from typing import Literal

Label = Literal["better", "worse", "equal"]

LABELS: dict[Label, str] = {
    "better": "Assistant 1 is better than Assistant 2",
    "worse": "Assistant 1 is worse than Assistant 2",
    "equal": "Assistant 1 is equal to Assistant 2",
}
"""The three verdict sentences the English judge prompt asks the reply to end with."""

LABELS_ZH: dict[Label, str] = {"better": "助手1更好", "worse": "助手1更差", "equal": "两者相当"}
"""The three verdicts of the Chinese judge prompt. `parse_verdict` recognises both sets in any
reply (markup and spaces between the words allowed), whichever prompt asked."""

# Markdown, quotes and any spacing may sit between the words of a label.
_GAP = r"[\W_]*"
_LABEL_RE = re.compile(
    rf"\bassistant{_GAP}1{_GAP}is{_GAP}(?P<en>better|worse|equal){_GAP}(?:than|to){_GAP}"
    rf"assistant{_GAP}2(?!\d)"
    rf"|助手{_GAP}1(?!\d){_GAP}更(?P<zh>好|差)|两者{_GAP}相当",
    re.IGNORECASE,
)
_ZH_LABEL: dict[str, Label] = {"好": "better", "差": "worse"}

# After the verdict: markup, closing quotes and sentence ends only; no word, no question mark.
_TAIL_RE = re.compile(r"[^\w?？]*")
# Markup that may open the verdict's clause: list markers, emphasis, quotes, brackets.
_OPENING_MARKUP_RE = re.compile(r"[ \t*_`\"'“”‘’「『【\[(（<>#\-•]*$")
_CLAUSE_END = ("\n", ":", "：", ".", "。", "!", "！", "?", "？", ";", "；")
# Words that conclude: "Therefore, Assistant 1 is ...", "综上，助手1更好".
_LEAD_RE = re.compile(
    r"(?:\b(?:therefore|thus|hence|so|overall|in\s+conclusion|finally)"
    r"|\b(?:verdict|judgement|judgment|conclusion|decision)(?:\s+is)?"
    r"|结论(?:是|为)?|判断(?:是|为)?|因此|所以|综上(?:所述)?|总之|总的来说|最终(?:结论)?(?:是|为)?)"
    r"[\s,，]*$",
    re.IGNORECASE,
)


# A negation right before the separator: "My verdict is not:\n<label>", "结论不是：<label>".
_NEGATED_RE = re.compile(
    r"(?:\bnot|\bnever|n't|不是|并非|并不|没有|不)[\s:：*_`\"'“”]*$", re.IGNORECASE
)


def _label(match: re.Match[str]) -> Label:
    if match["en"]:
        return match["en"].lower()  # type: ignore[return-value]
    return _ZH_LABEL[match["zh"]] if match["zh"] else "equal"


def _opens_clause(reply: str, match: re.Match[str]) -> bool:
    """Whether the label at `match` starts its clause (see the module docstring)."""
    before = _OPENING_MARKUP_RE.sub("", reply[: match.start()])
    if _NEGATED_RE.search(before):
        return False
    return not before or before.endswith(_CLAUSE_END) or _LEAD_RE.search(before) is not None


def _starts_line(reply: str, match: re.Match[str]) -> bool:
    before = _OPENING_MARKUP_RE.sub("", reply[: match.start()])
    return not before or before.endswith("\n")


def final_verdict(reply: str) -> re.Match[str] | None:
    """The match of the reply's explicit final verdict label, or None (module docstring)."""
    matches = list(_LABEL_RE.finditer(reply or ""))
    if not matches:
        return None
    last = matches[-1]
    if not _TAIL_RE.fullmatch(reply[last.end() :]) or not _opens_clause(reply, last):
        return None
    if len(matches) > 1 and _starts_line(reply, last):
        previous = matches[-2]
        between = reply[previous.end() : last.start()]
        listed = "\n" in between and not re.search(r"\w", between)
        if listed and _starts_line(reply, previous) and _label(previous) != _label(last):
            return None  # the reply lists the choices; it does not pick one
    return last


def parse_verdict(reply: str) -> Label | None:
    """The reply's explicit final verdict ('better', 'worse' or 'equal'), or None.

    Only a label that ends the reply and opens its clause counts (see the module docstring):
    `parse_verdict("I would not say Assistant 1 is better than Assistant 2")` is None.

    Args:
        reply: the judge's raw reply; markdown, quotes and whitespace around the label are fine.
    """
    match = final_verdict(reply)
    return None if match is None else _label(match)


def reasons(reply: str) -> str:
    """The judge's explanation: the reply before its final verdict, tidied of markup.

    Args:
        reply: the judge's raw reply (the whole reply when it has no explicit verdict).
    """
    match = final_verdict(reply)
    head = reply[: match.start()] if match else reply
    return head.rstrip(" \t\n*_`\"'“”>#:").strip()
