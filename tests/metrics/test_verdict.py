"""medsft.metrics.verdict: only an explicit final verdict counts, in English and Chinese."""

from __future__ import annotations

import pytest

from medsft.metrics.verdict import LABELS, LABELS_ZH, parse_verdict, reasons

BETTER, WORSE, EQUAL = LABELS["better"], LABELS["worse"], LABELS["equal"]
BETTER_ZH, WORSE_ZH, EQUAL_ZH = LABELS_ZH["better"], LABELS_ZH["worse"], LABELS_ZH["equal"]


@pytest.mark.parametrize(
    ("reply", "label"),
    [
        (BETTER, "better"),
        (f"Reasons.\n**{BETTER}**", "better"),
        (f'Reasons.\n"{WORSE}."', "worse"),
        (f"  \n{EQUAL}  \n\n", "equal"),
        ("**Assistant 1** is better than **Assistant 2**", "better"),
        ("assistant 1 IS WORSE THAN assistant 2", "worse"),
        (f"> Final verdict: `{EQUAL}`", "equal"),
        (f"Therefore, {BETTER}.", "better"),
        (f"My verdict is {WORSE}", "worse"),
        ("回答1更好。\n\nAssistant 1 is better than Assistant 2。", "better"),
        ("理由如上。\n**助手1更好**", "better"),
        ("助手 1 更差。", "worse"),
        ("结论：两者相当", "equal"),
        ("综上所述，助手1更好。", "better"),
        ("助手12更好", None),
        ("助手2更好", None),
        ("Assistant 2 is better than Assistant 1", None),
        ("Assistant 1 is better than Assistant 23", None),
        ("Both answers are fine.", None),
        ("", None),
    ],
)
def test_explicit_verdicts_are_read(reply: str, label: str | None) -> None:
    assert parse_verdict(reply) == label


@pytest.mark.parametrize(
    "reply",
    [
        # The case: the words of a label, negated.
        f"I would not say {BETTER}",
        f"I would not say {BETTER}.",
        f"It is wrong to conclude that {WORSE}.",
        f"Nobody could claim {EQUAL}",
        f"The reasons above.\nI cannot say {BETTER}",
        # A question, not a decision.
        f"{BETTER}?",
        f"Is it true that {BETTER}?",
        # The label followed by more words.
        f"{BETTER} in style, but not in accuracy.",
        f"{BETTER} only if the dose is right",
        # Quoting the choices instead of picking one.
        f'I must answer "{BETTER}" or "{WORSE}"',
        f"Possible verdicts:\n- {BETTER}\n- {WORSE}\n- {EQUAL}",
        f"{BETTER}\n{WORSE}",
        # A negation just before the separator.
        f"My verdict is not:\n{BETTER}",
        f"结论不是：{BETTER_ZH}",
        f"The answer is NOT: **{EQUAL}**",
        # A verdict given, then revised into a negation: no final verdict stands.
        f"{BETTER}.\n\nOn reflection, I would not say {BETTER}",
        # Chinese: negation, question, qualification, choices, revision.
        f"不能说{BETTER_ZH}",
        f"我不认为{EQUAL_ZH}",
        f"并非{WORSE_ZH}",
        f"{BETTER_ZH}吗？",
        f"{BETTER_ZH}的说法不成立",
        f"请从以下选择：\n{BETTER_ZH}\n{WORSE_ZH}",
        f"{BETTER_ZH}还是{WORSE_ZH}",
        f"最初认为{BETTER_ZH}。\n但是很难说{WORSE_ZH}",
    ],
)
def test_a_label_that_is_not_an_explicit_final_verdict_is_no_verdict(reply: str) -> None:
    assert parse_verdict(reply) is None


@pytest.mark.parametrize(
    ("reply", "label"),
    [
        (f"I first thought {BETTER}, but on reflection:\n{WORSE}", "worse"),
        (f"At first glance {BETTER}. Correction: {EQUAL}", "equal"),
        (f"It is not the case that {BETTER}.\n\nFinal verdict: {WORSE}", "worse"),
        (f'Options: "{BETTER}", "{WORSE}", "{EQUAL}".\nMy decision: {BETTER}', "better"),
        (f"{BETTER}\n但再想想：{WORSE_ZH}", "worse"),
        (f"我不认为{BETTER_ZH}。\n\n最终结论：{EQUAL_ZH}", "equal"),
        (f"有人会说{WORSE_ZH}，但综合来看：\n**{BETTER_ZH}**", "better"),
    ],
)
def test_the_revised_final_verdict_wins(reply: str, label: str) -> None:
    assert parse_verdict(reply) == label


def test_reasons_drop_the_final_verdict_and_markup() -> None:
    assert reasons(f"A is precise; B is vague.\n\n**{BETTER}**") == "A is precise; B is vague."
    assert reasons("no label here") == "no label here"
    negated = f"I would not say {BETTER}"
    assert reasons(negated) == negated  # no verdict: the whole reply is kept
