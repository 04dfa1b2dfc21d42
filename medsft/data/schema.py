"""Rows -> chat messages: column presets, the role -> column mapping, and the train/val split key.

`DataSource` names a source and how its rows map to roles, for training (`SFTDataModule`) and
evaluation (`DataSpec`) alike; `iter_conversations` reads it (medsft.data.sources) and turns each
row into chat messages with `to_messages`, raising or skipping invalid rows as `skip_invalid` says.

Imports neither torch nor Lightning.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Literal

from medsft.chat import MESSAGE_ROLES, Message, qa_messages
from medsft.data.sources import InvalidExample, Row, read_rows

ROLES = ("question", "answer", "think", "system", "messages", "input", "id")


@dataclass(frozen=True)
class ColumnPreset:
    """How one kind of dataset's rows map to chat roles: an entry of `PRESETS`."""

    columns: dict[str, str]
    """Role -> column name (roles: `ROLES`)."""
    summary: str
    """The rows it reads, as README's Data table says it (a test holds the two equal)."""
    transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    """A row's record rewritten before its columns are read (Toyhom's title and ask become one
    question); a record that is not an object is left to the column checks."""


_PUNCTUATION = re.compile(r"[\W_]+")


def title_and_ask(record: dict[str, Any]) -> dict[str, Any]:
    """Toyhom's question in `ask`: the title, a newline, the ask; only the ask when it already
    says the title (titles are mostly the ask's first sentence, cut), only the title when the ask
    is empty or a part of it. Punctuation and spaces are ignored when comparing."""
    title, ask = record.get("title"), record.get("ask")
    if not isinstance(title, str) or not isinstance(ask, str):
        return record  # a missing or non-text field is named by the column checks
    core_title, core_ask = _PUNCTUATION.sub("", title), _PUNCTUATION.sub("", ask)
    if not core_title or core_title in core_ask:
        return record
    if core_ask in core_title:  # empty, or a piece of the title
        return {**record, "ask": title.strip()}
    return {**record, "ask": f"{title.strip()}\n{ask.strip()}"}


PRESETS: dict[str, ColumnPreset] = {
    "huatuo": ColumnPreset(
        {"question": "question", "answer": "answer", "id": "id"}, "`question`, `answer`, `id`"
    ),
    "course": ColumnPreset(
        {"question": "0", "answer": "1"}, "a JSON list of `[question, reference]`"
    ),
    "alpaca": ColumnPreset(
        {"question": "instruction", "input": "input", "answer": "output"},
        "`instruction`, `input`, `output`",
    ),
    "messages": ColumnPreset(
        {"messages": "messages", "id": "id"}, "`messages: [{role, content}, ...]`"
    ),
    "sharegpt": ColumnPreset(
        {"messages": "conversations", "id": "id"},
        "`conversations: [{from, value}, ...]` (MedicalGPT's and most open SFT sets)",
    ),
    "reasoning": ColumnPreset(
        {"question": "question", "think": "think", "answer": "answer"},
        "`question`, `think`, `answer` (set `data.enable_thinking: true`)",
    ),
    "medquad": ColumnPreset(
        {"question": "Question", "answer": "Answer", "id": "qid"}, "`Question`, `Answer`, `qid`"
    ),
    "toyhom": ColumnPreset(
        {"question": "ask", "answer": "answer"},
        "`department`, `title`, `ask`, `answer` (Toyhom's Chinese-medical-dialogue-data CSVs; "
        "set `data.encoding: gb18030`): the question is the title and the ask, or the ask alone "
        "when it already says the title",
        transform=title_and_ask,
    ),
}
"""Column presets by name, for training and evaluation configs alike: the one list. A new preset
is one entry here (and its row in README's Data table)."""

Preset = Literal[tuple(PRESETS)]  # type: ignore[valid-type]  # the names of PRESETS, for configs
COLUMN_PRESETS: dict[str, dict[str, str]] = {name: p.columns for name, p in PRESETS.items()}
"""Role -> column name of each preset (`PRESETS`' columns)."""
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
}
"""ShareGPT's `from` -> chat role (MedicalGPT's and most open SFT sets use human/gpt)."""


def column_map(preset: str, columns: dict[str, str] | None = None) -> dict[str, str]:
    """Role -> column name: a preset with `columns` entries on top (training and evaluation)."""
    if preset not in COLUMN_PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(COLUMN_PRESETS)}")
    columns = columns or {}
    unknown = set(columns) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown column roles {sorted(unknown)}; roles are {', '.join(ROLES)}")
    mapping = {**COLUMN_PRESETS[preset], **columns}
    if "messages" in columns:  # a messages column replaces the preset's question/answer
        for role in ("question", "answer"):
            if role not in columns:
                mapping.pop(role, None)
    return mapping


@dataclass
class DataSource:
    """A data source and how its rows become conversations: the one vocabulary of training's
    `data:` section (SFTDataModule's arguments of these names) and evaluation's data sets
    (medsft.evaluation.config.DataSpec)."""

    source: str = "FreedomIntelligence/Huatuo26M-Lite"
    """Hub dataset id (streamed) or local file, directory or glob (JSONL, JSON, Parquet, CSV)."""
    preset: Preset = "huatuo"
    """Column preset, a name of medsft.data.schema.PRESETS (README's Data table); `columns`
    entries override it."""
    columns: dict[str, str] | None = None
    """Role -> column name, for roles question, answer, think, system, messages, input (Alpaca's,
    appended to the question) and id (the split key)."""
    split: str = "train"
    """Hub split to read."""
    subset: str | None = None
    """Hub dataset configuration name."""
    system_prompt: str | None = None
    """System message for rows without one."""
    skip_invalid: bool = False
    """Skip and count bad rows instead of stopping with an error naming file, line and field."""
    encoding: str = "utf-8"
    """Text encoding of local JSON, JSONL and CSV files (`gb18030` for Toyhom's CSVs); any
    ASCII-compatible codec Python knows."""

    def column_map(self) -> dict[str, str]:
        """Role -> column name (see `column_map`); raises ValueError on an unknown preset or role."""
        return column_map(self.preset, self.columns)


@dataclass
class Conversation:
    """One row as chat messages."""

    row: Row
    """The raw row and where it came from."""
    messages: list[Message]
    key: str
    """The split key: the row's id, else its text (see `in_validation`)."""


def iter_conversations(
    source: DataSource,
    *,
    shard: int = 0,
    num_shards: int = 1,
    skipped: Callable[[InvalidExample], None] | None = None,
) -> Iterator[Conversation]:
    """The conversations of one shard of a source, in source order (medsft.data.sources.read_rows).

    Args:
        source: what to read and how its columns map to roles.
        shard: which shard of `num_shards` (disjoint, covering the source).
        num_shards: how many shards the source is read in.
        skipped: called with each invalid row's error when `source.skip_invalid` is set.

    Raises:
        InvalidExample: a row that is no conversation (unless `source.skip_invalid`).
        ValueError: an unknown preset or column role.
    """
    columns = source.column_map()
    transform = PRESETS[source.preset].transform
    rows = read_rows(
        source.source,
        split=source.split,
        subset=source.subset,
        shard=shard,
        num_shards=num_shards,
        encoding=source.encoding,
    )
    for row in rows:
        if transform is not None and isinstance(row.data, dict):
            row = replace(row, data=transform(row.data))
        try:
            messages, key = to_messages(row, columns, source.system_prompt)
        except InvalidExample as err:
            if not source.skip_invalid:
                raise
            if skipped is not None:
                skipped(err)
            continue
        yield Conversation(row, messages, key)


def _get(row: Row, column: str, role: str, *, required: bool) -> Any:
    data = row.data
    if isinstance(data, list):  # rows like the course format: [question, reference]
        pos = int(column) if column.isdigit() else None
        value = data[pos] if pos is not None and pos < len(data) else None
    elif isinstance(data, dict):
        value = data.get(column)
    else:
        raise InvalidExample(
            row.where, column, f"expected an object or a list, got {type(data).__name__}"
        )
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            state = "missing" if value is None else "empty"
            raise InvalidExample(
                row.where,
                column,
                f"{state} (role {role!r}); map it with columns.{role}{_preset_hint(data)}",
            )
        return None
    if role != "messages" and role != "id" and not isinstance(value, str):
        raise InvalidExample(
            row.where, column, f"expected a string, got {type(value).__name__}: {value!r:.60}"
        )
    if isinstance(value, str):
        _check_unicode(row.where, column, value)
    return value


def _check_unicode(where: str, column: str, text: str) -> None:
    # JSON's "\ud800" escapes decode to lone surrogates, which no tokenizer or hash can encode.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise InvalidExample(
            where, column, f"not valid Unicode (a lone surrogate); \\u{ord(text[err.start]):04x}"
        ) from None


def _preset_hint(data: Any) -> str:
    """' (preset X fits this row)' for the presets whose columns a row has, else ''."""
    if not isinstance(data, dict):
        return ""
    fits = [
        name
        for name, cols in COLUMN_PRESETS.items()
        if all(c in data for role, c in cols.items() if role != "id")
    ]
    return f"; this row's columns fit preset {' or '.join(fits)}" if fits else ""


def _message(where: str, name: str, m: Any) -> dict[str, str]:
    """One chat message: {role, content} (preset messages) or ShareGPT's {from, value}."""
    if isinstance(m, dict) and "role" not in m and "from" in m:
        role = m["from"]
        role = SHAREGPT_ROLES.get(role, role) if isinstance(role, str) else role
        role_key, content = "from", m.get("value")
        known = ", ".join(SHAREGPT_ROLES)
    elif isinstance(m, dict) and "role" in m:
        role, role_key, content = m["role"], "role", m.get("content")
        known = "system, user or assistant (ShareGPT's human/gpt go in 'from'; preset sharegpt)"
    else:
        raise InvalidExample(
            where,
            name,
            "unknown message shape: use {'role', 'content'} (preset messages) or "
            "ShareGPT's {'from', 'value'} (preset sharegpt)",
        )
    if not isinstance(role, str) or role not in MESSAGE_ROLES:
        raise InvalidExample(where, f"{name}.{role_key}", f"unknown role {role!r}; use {known}")
    text_key = "content" if role_key == "role" else "value"
    if not isinstance(content, str) or not content.strip():
        raise InvalidExample(where, f"{name}.{text_key}", "missing, empty or not a string")
    _check_unicode(where, f"{name}.{text_key}", content)
    return {"role": role, "content": content}


def to_messages(row: Row, columns: dict[str, str], system_prompt: str | None) -> tuple[list, str]:
    """A raw row -> (chat messages, split key). Raises InvalidExample."""
    if isinstance(row.data, InvalidExample):
        raise row.data
    if "messages" in columns:
        messages = _get(row, columns["messages"], "messages", required=True)
        if not isinstance(messages, list):
            raise InvalidExample(row.where, columns["messages"], "expected a list of messages")
        messages = [
            _message(row.where, f"{columns['messages']}[{i}]", m) for i, m in enumerate(messages)
        ]
        if not any(m["role"] == "assistant" for m in messages):
            raise InvalidExample(
                row.where, columns["messages"], "no assistant message to supervise"
            )
        if system_prompt and messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": system_prompt})
        text = json.dumps(messages, ensure_ascii=False)
    else:
        for role in ("question", "answer"):
            if role not in columns:
                raise ValueError(f"columns must map {role!r} (or 'messages'); got {columns}")
        question = _get(row, columns["question"], "question", required=True)
        if "input" in columns and (extra := _get(row, columns["input"], "input", required=False)):
            question = f"{question}\n\n{extra}"
        answer = _get(row, columns["answer"], "answer", required=True)
        think = _get(row, columns["think"], "think", required=True) if "think" in columns else None
        system = (
            _get(row, columns["system"], "system", required=False) if "system" in columns else None
        )
        messages = qa_messages(question, answer, think=think, system=system or system_prompt)
        text = question + "\x00" + answer
    key = _get(row, columns["id"], "id", required=False) if "id" in columns else None
    return messages, str(key) if key is not None else text


def unit_hash(*parts: object) -> float:
    """A number in [0, 1) from a blake2b digest of `parts`: the same in every process, worker
    and run (unlike Python's `hash`, salted per process)."""
    text = "\x00".join(map(str, parts)).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big") / 2**64


def in_validation(key: str, fraction: float) -> bool:
    """Deterministic split by a hash of the key, independent of process, worker and seed."""
    return unit_hash(key) < fraction
