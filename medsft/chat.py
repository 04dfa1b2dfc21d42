"""Chat messages -> `input_ids` + `labels`, supervising exactly what the model generates.

The rule: for every supervised assistant turn, the labelled tokens decode to the text the model
produces at inference after the prompt that
`apply_chat_template(history, add_generation_prompt=True, enable_thinking=...)` gives, up to and
including the end-of-turn token `<|im_end|>` (so the model learns to stop). Everything else
(system, user, role headers, the newline after `<|im_end|>`) is -100.

We get there by rendering, not by template markers: Qwen3's stock template has no
`{% generation %}` blocks, so `return_assistant_tokens_mask` would give an all-zero mask. For each
assistant turn we render the inference prompt P and the conversation with that turn as the last
message F; the turn's completion is F[len(P):] up to `<|im_end|>`. If F does not start with P the
template and the data disagree (e.g. reasoning data with `enable_thinking=False`, whose inference
prompt already closes an empty think block) and we raise rather than mis-mask.

The empty think block. With `enable_thinking=False`, Qwen3's generation prompt ends in
`<think>\\n\\n</think>\\n\\n`: the *template* writes it at inference, the model never generates it.
So it sits on the prompt side of the mask (label -100), and the model is trained to produce the
answer directly after it, exactly as at inference. With `enable_thinking=True` the model generates
the whole `<think>...</think>` block itself, so it is supervised (empty, for data without
reasoning).

Multi-turn. Qwen3 re-renders earlier assistant turns without their think blocks, so an earlier
turn's inference context is not a prefix of the whole conversation. `render` raises
`HistoryMismatch` in that case; `render_conversation(..., multi_turn="auto")` then renders one
sequence per assistant turn, each exact. A ChatML template without that rewriting renders the whole
conversation as one sequence with every assistant turn supervised.

Audit the mask on your own config:

    python -m medsft.cli.chat --config configs/demo.yaml --n 3

(the command-line tool lives in medsft.cli.chat: it needs the datamodule, which imports this).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

IGNORE_INDEX = -100
END_OF_TURN = "<|im_end|>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"

Message = dict[str, str]
MESSAGE_ROLES = ("system", "user", "assistant", "tool")
"""The message roles a conversation may hold (ShareGPT's human/gpt must be converted first)."""
MultiTurn = Literal["auto", "joint", "split", "last"]
Truncation = Literal["right", "drop"]


class ChatTemplateError(ValueError):
    """The chat template renders an example in a way that cannot be masked exactly."""


class HistoryMismatch(ChatTemplateError):
    """An earlier assistant turn is rendered differently in history than when it is generated."""


class EmptySupervision(ValueError):
    """No supervised token is left (e.g. after truncation): the example must be dropped."""


class AnswerTruncated(ValueError):
    """`truncation="drop"`: max_length would cut a supervised answer, so the example is dropped."""


def qa_messages(
    question: str,
    answer: str,
    *,
    think: str | None = None,
    system: str | None = None,
) -> list[Message]:
    """Build a single-turn conversation.

    Args:
        question: the user's message.
        answer: the assistant's final answer.
        think: reasoning text, rendered inside `<think>...</think>` before the answer.
        system: optional system prompt.
    """
    content = (
        answer if think is None else f"<think>\n{think.strip()}\n</think>\n\n{answer.lstrip()}"
    )
    messages = [] if system is None else [{"role": "system", "content": system}]
    return [
        *messages,
        {"role": "user", "content": question},
        {"role": "assistant", "content": content},
    ]


def split_think(text: str) -> tuple[str | None, str]:
    """(think, answer) of a reply: the `<think>...</think>` block apart from the answer.

    A reply whose prompt already opened the block (some templates end the generation prompt
    with `<think>`) has only the closing tag; a reply cut off while thinking has only the
    opening one, and its answer is empty. An empty block (`<think>\\n\\n</think>`) gives think ''.
    """
    start = text.find(THINK_OPEN)
    end = text.find(THINK_CLOSE)
    if end >= 0 and (start < 0 or start > end):  # opened by the prompt
        return text[:end].strip(), text[end + len(THINK_CLOSE) :].strip()
    if start < 0:
        return None, text.strip()
    if end < 0:  # ran out of tokens while thinking
        return text[start + len(THINK_OPEN) :].strip(), ""
    return text[start + len(THINK_OPEN) : end].strip(), text[end + len(THINK_CLOSE) :].strip()


def _template(tokenizer: Any, messages: Sequence[Message], **kwargs: Any) -> str:
    return tokenizer.apply_chat_template(list(messages), tokenize=False, **kwargs)


def _encode(tokenizer: Any, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _describe(messages: Sequence[Message]) -> str:
    lines = [f"  {m['role']}: {m['content'][:120]!r}" for m in messages]
    return "\n".join(lines)


def completion_text(
    messages: Sequence[Message], turn: int, tokenizer: Any, *, enable_thinking: bool = False
) -> tuple[str, str]:
    """The inference prompt before assistant message `turn` and what the model generates there.

    Returns (prompt, completion), the completion ending with the end-of-turn token.
    """
    prompt = _template(
        tokenizer, messages[:turn], add_generation_prompt=True, enable_thinking=enable_thinking
    )
    through = _template(tokenizer, messages[: turn + 1], enable_thinking=enable_thinking)
    if not through.startswith(prompt):
        hint = ""
        if "</think>" in messages[turn]["content"] and not enable_thinking:
            hint = (
                "\nThis example has reasoning (<think>) but enable_thinking=False, whose inference "
                "prompt already closes an empty think block. Set enable_thinking: true for "
                "reasoning data."
            )
        raise ChatTemplateError(
            f"the generation prompt is not a prefix of the rendered assistant turn {turn}; "
            f"refusing to guess the mask.{hint}\nprompt ends with: {prompt[-80:]!r}\n"
            f"rendering has:   {through[len(prompt) - 80 : len(prompt) + 40]!r}\n"
            f"example:\n{_describe(messages)}"
        )
    rest = through[len(prompt) :]
    end = rest.find(END_OF_TURN)
    if end < 0:
        raise ChatTemplateError(
            f"no {END_OF_TURN} after assistant turn {turn}: this template is not ChatML-like.\n"
            f"example:\n{_describe(messages)}"
        )
    return prompt, rest[: end + len(END_OF_TURN)]


def _validate(messages: Sequence[Message]) -> list[int]:
    if not messages:
        raise ValueError("empty conversation")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError(f"message {i} must be a dict with 'role' and 'content', got {m!r}")
        if m["role"] not in MESSAGE_ROLES:
            raise ValueError(f"message {i} has unknown role {m['role']!r}")
        if not isinstance(m["content"], str):
            raise TypeError(
                f"message {i} content must be a string, got {type(m['content']).__name__}"
            )
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if not turns:
        raise ValueError(f"no assistant message to supervise:\n{_describe(messages)}")
    if turns[0] == 0:
        raise ValueError("the conversation starts with an assistant message; it needs a prompt")
    return turns


def render(
    messages: Sequence[Message],
    tokenizer: Any,
    *,
    max_length: int | None = None,
    enable_thinking: bool = False,
    assistant_turns: Literal["all", "last"] = "all",
    truncation: Truncation = "right",
) -> dict[str, Any]:
    """Render a conversation to `input_ids` and `labels` (same length, -100 = not supervised).

    Also `truncated`: whether max_length cut supervised tokens, so that an answer lost its end
    (and its `<|im_end|>`: the model is not taught to stop there).

    Args:
        messages: `[{"role": ..., "content": ...}, ...]`; assistant content may start with a
            `<think>...</think>` block.
        tokenizer: a Hugging Face tokenizer with a ChatML-style chat template (Qwen3's or plain).
        max_length: truncate on the right to this many tokens.
        enable_thinking: the Qwen3 thinking switch, as at inference.
        assistant_turns: supervise every assistant turn, or only the last one.
        truncation: `right`: cut at max_length (and report it in `truncated`); `drop`: raise
            AnswerTruncated instead of cutting a supervised token.

    Raises:
        ChatTemplateError: the template's prompt is not a prefix of its rendering of a turn.
        HistoryMismatch: an earlier turn renders differently in history (use `render_conversation`).
        EmptySupervision: truncation left no supervised token.
        AnswerTruncated: `truncation="drop"` and max_length cuts a supervised token.
    """
    turns = _validate(messages)
    # Nothing after the last supervised turn is ever trained on.
    messages = list(messages[: turns[-1] + 1])
    if assistant_turns == "last":
        turns = turns[-1:]
    full = _template(tokenizer, messages, enable_thinking=enable_thinking)

    spans: list[tuple[int, int]] = []
    for turn in turns:
        prompt, completion = completion_text(
            messages, turn, tokenizer, enable_thinking=enable_thinking
        )
        if not full.startswith(prompt + completion, 0):
            raise HistoryMismatch(
                f"assistant turn {turn} is rendered differently inside the conversation than when "
                "it is generated (Qwen3 drops think blocks from history). Render one sequence per "
                f"turn (multi_turn: split or auto) or supervise the last turn only.\n"
                f"example:\n{_describe(messages)}"
            )
        spans.append((len(prompt), len(prompt) + len(completion)))

    input_ids: list[int] = []
    labels: list[int] = []
    cursor = 0
    for start, end in spans:
        context = _encode(tokenizer, full[cursor:start])
        target = _encode(tokenizer, full[start:end])
        input_ids += context + target
        labels += [IGNORE_INDEX] * len(context) + target
        cursor = end
    if len(spans) > 1:
        # Pieces are tokenized apart; check the last prompt tokenizes as it will at inference.
        prompt_ids = _encode(tokenizer, full[: spans[-1][0]])
        n_target = len(_encode(tokenizer, full[spans[-1][0] : spans[-1][1]]))
        if input_ids[: len(input_ids) - n_target] != prompt_ids:
            raise ChatTemplateError(
                f"token boundary mismatch between turns.\nexample:\n{_describe(messages)}"
            )
    tail = _encode(tokenizer, full[cursor:])
    input_ids += tail
    labels += [IGNORE_INDEX] * len(tail)

    truncated = False
    if max_length is not None and len(input_ids) > max_length:
        truncated = any(label != IGNORE_INDEX for label in labels[max_length:])
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    if all(label == IGNORE_INDEX for label in labels):
        raise EmptySupervision(
            f"no supervised token left within max_length={max_length} "
            f"(prompt is {spans[0][0]} characters long)"
        )
    if truncated and truncation == "drop":
        raise AnswerTruncated(f"the answer does not fit within max_length={max_length}")
    return {"input_ids": input_ids, "labels": labels, "truncated": truncated}


def render_conversation(
    messages: Sequence[Message],
    tokenizer: Any,
    *,
    max_length: int | None = None,
    enable_thinking: bool = False,
    multi_turn: MultiTurn = "auto",
    truncation: Truncation = "right",
) -> list[dict[str, Any]]:
    """Render a conversation to one or more training sequences.

    Args:
        multi_turn: `joint`: one sequence, every assistant turn supervised (raises
            HistoryMismatch where the template rewrites history); `split`: one sequence per
            assistant turn, each supervising its last turn; `last`: only the last turn;
            `auto`: `joint` where exact, else `split`.
        Other arguments as in `render`.

    Truncated-away turns (and with `truncation="drop"`, cut ones) are left out; EmptySupervision
    or AnswerTruncated is raised only when no sequence is left.
    """
    kwargs = dict(max_length=max_length, enable_thinking=enable_thinking, truncation=truncation)
    if multi_turn == "last":
        return [render(messages, tokenizer, assistant_turns="last", **kwargs)]
    if multi_turn in ("joint", "auto"):
        try:
            return [render(messages, tokenizer, **kwargs)]
        except HistoryMismatch:
            if multi_turn == "joint":
                raise
    elif multi_turn != "split":
        raise ValueError(f"multi_turn must be auto, joint, split or last, got {multi_turn!r}")
    out, cut = [], 0
    for turn in _validate(messages):
        try:
            out.append(render(messages[: turn + 1], tokenizer, assistant_turns="last", **kwargs))
        except EmptySupervision:
            continue
        except AnswerTruncated:
            cut += 1
    if not out:
        error = AnswerTruncated if cut else EmptySupervision
        raise error(f"no assistant turn fits within max_length={max_length}")
    return out


def highlight(example: dict[str, list[int]], tokenizer: Any, *, color: bool = True) -> str:
    """Decode an example with its supervised spans marked, for auditing the mask."""
    open_, close = ("\x1b[42;30m", "\x1b[0m") if color else ("[[", "]]")
    parts: list[str] = []
    ids, labels = example["input_ids"], example["labels"]
    i = 0
    while i < len(ids):
        supervised = labels[i] != IGNORE_INDEX
        j = i
        while j < len(ids) and (labels[j] != IGNORE_INDEX) == supervised:
            j += 1
        text = tokenizer.decode(ids[i:j])
        parts.append(f"{open_}{text}{close}" if supervised else text)
        i = j
    return "".join(parts)
