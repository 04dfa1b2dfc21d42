"""Assistant-only supervision, checked by decoding the supervised spans with the real tokenizer."""

import pytest

from medsft.chat import (
    IGNORE_INDEX,
    ChatTemplateError,
    EmptySupervision,
    HistoryMismatch,
    qa_messages,
    render,
    render_conversation,
    split_think,
)

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def spans(example, tok):
    """Decoded runs of consecutive supervised tokens."""
    out, run = [], []
    for i, label in enumerate(example["labels"]):
        if label != IGNORE_INDEX:
            assert label == example["input_ids"][i], "a label must be the token at its position"
            run.append(label)
        elif run:
            out.append(tok.decode(run))
            run = []
    if run:
        out.append(tok.decode(run))
    return out


def prompt_ids(tok, messages, enable_thinking):
    text = tok.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, enable_thinking=enable_thinking
    )
    return tok(text, add_special_tokens=False)["input_ids"]


@pytest.fixture
def chatml(qwen3_tokenizer):
    import copy

    tok = copy.deepcopy(qwen3_tokenizer)
    tok.chat_template = CHATML
    return tok


def test_single_turn_supervises_answer_and_end_of_turn(qwen3_tokenizer):
    tok = qwen3_tokenizer
    messages = qa_messages("感冒了怎么办？", "多喝水，注意休息。", system="你是医生。")
    ex = render(messages, tok)
    assert len(ex["input_ids"]) == len(ex["labels"])
    assert spans(ex, tok) == ["多喝水，注意休息。<|im_end|>"]
    # The inference prompt, empty think block included, is exactly the unsupervised prefix.
    prompt = prompt_ids(tok, messages[:-1], enable_thinking=False)
    assert ex["input_ids"][: len(prompt)] == prompt
    assert all(label == IGNORE_INDEX for label in ex["labels"][: len(prompt)])
    assert ex["labels"][len(prompt)] != IGNORE_INDEX
    assert "<think>\n\n</think>" in tok.decode(prompt)


def test_end_of_turn_is_supervised_although_pad_differs(qwen3_tokenizer):
    tok = qwen3_tokenizer
    assert tok.pad_token_id != tok.convert_tokens_to_ids("<|im_end|>")
    ex = render(qa_messages("q", "a"), tok)
    supervised = [
        t for t, label in zip(ex["input_ids"], ex["labels"], strict=True) if label != IGNORE_INDEX
    ]
    assert supervised[-1] == tok.convert_tokens_to_ids("<|im_end|>")


def test_thinking_mode_supervises_the_think_block(qwen3_tokenizer):
    tok = qwen3_tokenizer
    messages = qa_messages("头晕是什么原因？", "可能是低血糖。", think="用户头晕，先考虑常见原因。")
    ex = render(messages, tok, enable_thinking=True)
    assert spans(ex, tok) == [
        "<think>\n用户头晕，先考虑常见原因。\n</think>\n\n可能是低血糖。<|im_end|>"
    ]
    prompt = prompt_ids(tok, messages[:-1], enable_thinking=True)
    assert ex["input_ids"][: len(prompt)] == prompt


def test_thinking_mode_without_reasoning_supervises_an_empty_think_block(qwen3_tokenizer):
    ex = render(qa_messages("q", "答"), qwen3_tokenizer, enable_thinking=True)
    assert spans(ex, qwen3_tokenizer) == ["<think>\n\n</think>\n\n答<|im_end|>"]


def test_reasoning_data_without_thinking_mode_is_refused(qwen3_tokenizer):
    messages = qa_messages("q", "a", think="reasoning")
    with pytest.raises(ChatTemplateError, match="enable_thinking"):
        render(messages, qwen3_tokenizer, enable_thinking=False)


def test_chatml_multi_turn_supervises_every_assistant_turn(chatml):
    messages = [
        {"role": "system", "content": "你是医生。"},
        {"role": "user", "content": "我咳嗽。"},
        {"role": "assistant", "content": "咳了多久？"},
        {"role": "user", "content": "三天。"},
        {"role": "assistant", "content": "多喝水，观察。"},
    ]
    ex = render(messages, chatml)
    assert spans(ex, chatml) == ["咳了多久？<|im_end|>", "多喝水，观察。<|im_end|>"]
    last = render(messages, chatml, assistant_turns="last")
    assert spans(last, chatml) == ["多喝水，观察。<|im_end|>"]
    assert last["input_ids"] == ex["input_ids"]
    assert len(render_conversation(messages, chatml, multi_turn="auto")) == 1


def test_qwen3_multi_turn_splits_into_exact_sequences(qwen3_tokenizer):
    tok = qwen3_tokenizer
    messages = [
        {"role": "user", "content": "我咳嗽。"},
        {"role": "assistant", "content": "咳了多久？"},
        {"role": "user", "content": "三天。"},
        {"role": "assistant", "content": "多喝水，观察。"},
    ]
    with pytest.raises(HistoryMismatch):
        render(messages, tok)
    with pytest.raises(HistoryMismatch):
        render_conversation(messages, tok, multi_turn="joint")
    sequences = render_conversation(messages, tok, multi_turn="auto")
    assert [spans(s, tok) for s in sequences] == [
        ["咳了多久？<|im_end|>"],
        ["多喝水，观察。<|im_end|>"],
    ]
    for seq, turn in zip(sequences, (1, 3), strict=True):
        prompt = prompt_ids(tok, messages[:turn], enable_thinking=False)
        assert seq["input_ids"][: len(prompt)] == prompt
    assert len(render_conversation(messages, tok, multi_turn="last")) == 1


def test_prefix_mismatch_raises_with_the_example(chatml):
    # A template whose generation prompt names a role the rendered turns never use.
    chatml.chat_template = CHATML.replace("assistant\n{% endif %}", "bot\n{% endif %}")
    assert chatml.chat_template != CHATML
    with pytest.raises(ChatTemplateError, match="not a prefix") as err:
        render(qa_messages("头痛", "休息"), chatml)
    assert "头痛" in str(err.value)


def test_truncation_keeps_labels_aligned_and_drops_empty(qwen3_tokenizer):
    tok = qwen3_tokenizer
    messages = qa_messages("问题", "这是一个比较长的回答，" * 10)
    full = render(messages, tok)
    prompt_len = full["labels"].index(
        next(label for label in full["labels"] if label != IGNORE_INDEX)
    )
    cut = render(messages, tok, max_length=prompt_len + 3)
    assert len(cut["input_ids"]) == len(cut["labels"]) == prompt_len + 3
    assert cut["labels"] == full["labels"][: prompt_len + 3]
    assert sum(label != IGNORE_INDEX for label in cut["labels"]) == 3
    with pytest.raises(EmptySupervision):
        render(messages, tok, max_length=prompt_len)


def test_bad_messages_are_rejected(qwen3_tokenizer):
    with pytest.raises(ValueError, match="no assistant"):
        render([{"role": "user", "content": "hi"}], qwen3_tokenizer)
    with pytest.raises(TypeError, match="content must be a string"):
        render(
            [{"role": "user", "content": 3}, {"role": "assistant", "content": "a"}], qwen3_tokenizer
        )


@pytest.mark.parametrize(
    ("text", "think", "answer"),
    [
        ("<think>\n考虑病因。\n</think>\n\n多休息。", "考虑病因。", "多休息。"),
        ("<think>\n\n</think>\n\n多休息。", "", "多休息。"),
        ("多休息。", None, "多休息。"),
        ("考虑病因。\n</think>\n\n多休息。", "考虑病因。", "多休息。"),  # prompt opened it
        ("<think>\n考虑病因，还没想完", "考虑病因，还没想完", ""),  # ran out of tokens
        ("  多休息。\n", None, "多休息。"),
    ],
)
def test_split_think(text, think, answer):
    assert split_think(text) == (think, answer)
