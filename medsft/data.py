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

from medsft.chat import IGNORE_INDEX, EmptySupervision, MultiTurn, qa_messages, render_conversation
from medsft.flops import causal_pairs
from medsft.loss import supervised_positions

log = logging.getLogger(__name__)

ROLES = ("question", "answer", "think", "system", "messages", "input", "id")
COLUMN_PRESETS: dict[str, dict[str, str]] = {
    "huatuo": {"question": "question", "answer": "answer", "id": "id"},
    "course": {"question": "0", "answer": "1"},
    "alpaca": {"question": "instruction", "input": "input", "answer": "output"},
    "messages": {"messages": "messages", "id": "id"},
    "reasoning": {"question": "question", "think": "think", "answer": "answer"},
    "medquad": {"question": "Question", "answer": "Answer", "id": "qid"},
}
LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")


class InvalidExample(ValueError):
    """A row that cannot become a training example; the message names file, line and field."""

    def __init__(self, where: str, field: str, problem: str):
        super().__init__(f"{where}: field {field!r}: {problem}")
        self.where, self.field, self.problem = where, field, problem


@dataclass
class Row:
    """One raw record and where it came from (for error messages)."""

    index: int
    where: str
    data: Any


@dataclass
class StreamStats:
    """What one pass over a shard read, skipped and dropped."""

    rows: int = 0
    examples: int = 0
    other_split: int = 0
    invalid: Counter = field(default_factory=Counter)
    truncated_away: int = 0

    def summary(self) -> str:
        invalid = ", ".join(f"{k}: {v}" for k, v in sorted(self.invalid.items())) or "none"
        return (
            f"{self.rows} rows read, {self.examples} examples, {self.other_split} in the other "
            f"split, {sum(self.invalid.values())} invalid skipped ({invalid}), "
            f"{self.truncated_away} dropped with no supervised token after truncation"
        )


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
    """A path or glob on disk rather than a hub dataset id."""
    return source.endswith(LOCAL_SUFFIXES) or os.path.exists(source) or glob.has_magic(source)


def local_files(source: str) -> list[str]:
    """Files named by a path, a directory or a glob, sorted so every process agrees."""
    if os.path.isdir(source):
        files = [str(p) for p in Path(source).rglob("*") if p.suffix in LOCAL_SUFFIXES]
    else:
        files = glob.glob(source, recursive=True)
    if not files:
        raise FileNotFoundError(f"no data files match {source!r} (looked for {LOCAL_SUFFIXES})")
    unsupported = [f for f in files if not f.endswith(LOCAL_SUFFIXES)]
    if unsupported:
        raise ValueError(f"unsupported file type {unsupported[0]!r}; use one of {LOCAL_SUFFIXES}")
    return sorted(files)


def _json_records(path: str) -> Iterator[tuple[str, Callable[[], Any]]]:
    # utf-8-sig: files saved by Excel or Notepad start with a byte-order mark.
    with open(path, encoding="utf-8-sig") as f:
        first = f.read(1)
        while first.isspace():
            first = f.read(1)
        f.seek(0)
        if first == "[":  # a JSON array (the course format); JSONL otherwise
            try:
                items = json.load(f)
            except json.JSONDecodeError as err:
                raise InvalidExample(
                    f"{path}:{err.lineno}", "<json>", f"malformed JSON: {err.msg}"
                ) from None
            for i, item in enumerate(items):
                yield f"{path}: item {i}", (lambda item=item: item)
            return
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                # Parsed only by the shard it belongs to: other ranks and workers skip it unread.
                yield (
                    f"{path}:{lineno}",
                    (lambda line=line, lineno=lineno: _parse_line(path, lineno, line)),
                )


def _parse_line(path: str, lineno: int, line: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as err:
        # Returned, not raised: skip_invalid decides whether it stops the run.
        return InvalidExample(
            f"{path}:{lineno}", "<json>", f"malformed JSON line: {err.msg} at column {err.colno}"
        )


def _file_records(path: str) -> Iterator[tuple[str, Callable[[], Any]]]:
    """(where, load) for each record of a file; `load()` returns the parsed record."""
    if path.endswith((".jsonl", ".json")):
        yield from _json_records(path)
    elif path.endswith(".csv"):
        with open(path, encoding="utf-8-sig", newline="") as f:
            # Line 1 is the header; csv knows the line where each record ends.
            reader = csv.DictReader(f)
            for record in reader:
                yield f"{path}:{reader.line_num}", (lambda record=record: record)
    else:
        import pyarrow.parquet as pq

        row = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            for record in batch.to_pylist():
                yield f"{path}: row {row}", (lambda record=record: record)
                row += 1


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
                row.where, column, f"{state} (role {role!r}); map it with columns.{role}"
            )
        return None
    if role != "messages" and role != "id" and not isinstance(value, str):
        raise InvalidExample(
            row.where, column, f"expected a string, got {type(value).__name__}: {value!r:.60}"
        )
    return value


def to_messages(row: Row, columns: dict[str, str], system_prompt: str | None) -> tuple[list, str]:
    """A raw row -> (chat messages, split key). Raises InvalidExample."""
    if isinstance(row.data, InvalidExample):
        raise row.data
    if "messages" in columns:
        messages = _get(row, columns["messages"], "messages", required=True)
        if not isinstance(messages, list):
            raise InvalidExample(row.where, columns["messages"], "expected a list of messages")
        for i, m in enumerate(messages):
            name = f"{columns['messages']}[{i}]"
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise InvalidExample(row.where, name, "each message needs a 'role' and a 'content'")
            if m["role"] not in ("system", "user", "assistant", "tool"):
                raise InvalidExample(
                    row.where, f"{name}.role",
                    f"unknown role {m['role']!r}; use system, user or assistant "
                    "(convert ShareGPT's human/gpt first)",
                )  # fmt: skip
            if not isinstance(m.get("content"), str) or not m["content"].strip():
                raise InvalidExample(row.where, f"{name}.content", "missing, empty or not a string")
        if not any(m["role"] == "assistant" for m in messages):
            raise InvalidExample(
                row.where, columns["messages"], "no assistant message to supervise"
            )
        messages = [{"role": m["role"], "content": m["content"]} for m in messages]
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
        self._passes = 0

    def _shard(self) -> tuple[int, int, int | None]:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        shard = self.rank * workers + worker
        return shard, self.world_size * workers, info.seed if info else None

    def examples(self, shard: int = 0, num_shards: int = 1) -> Iterator[dict[str, Any]]:
        """Rendered examples of a shard in source order (no shuffling)."""
        dm, stats = self.dm, self.stats
        want_val = self.split == "val"
        source = dm.val_source if want_val and dm.val_source else dm.source
        content = dm.column_map.get("messages") or dm.column_map["answer"]
        for row in read_rows(
            source, split=dm.split, subset=dm.subset, shard=shard, num_shards=num_shards
        ):
            stats.rows += 1
            try:
                messages, key = to_messages(row, dm.column_map, dm.system_prompt)
                if dm.val_source is None and in_validation(key, dm.val_fraction) != want_val:
                    stats.other_split += 1
                    continue
                try:
                    sequences = render_conversation(
                        messages, dm.tokenizer, max_length=dm.max_length,
                        enable_thinking=dm.enable_thinking, multi_turn=dm.multi_turn,
                    )  # fmt: skip
                except EmptySupervision:
                    stats.truncated_away += 1
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
                yield {**seq, "index": row.index, "meta": meta}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        shard, num_shards, worker_seed = self._shard()
        self.stats = StreamStats()
        self._passes += 1
        stream = self.examples(shard, num_shards)
        if self.split == "train":
            # Worker seeds change every epoch and follow seed_everything; without workers, count passes.
            seed = worker_seed if worker_seed is not None else self._passes
            rng = random.Random(hash((self.dm.seed, seed, shard)))
            stream = _shuffled(stream, self.dm.shuffle_buffer, rng)
            if self.dm.packing:
                stream = _packed(stream, self.dm.max_length, rng)
            elif self.dm.group_by_length:
                stream = _grouped(stream, self.dm.batch_size, rng)
        yield from stream
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
    batch = {
        "input_ids": input_ids,
        "labels": labels,
        "attention_mask": attention_mask,
        "positions": positions,
        "targets": targets,
        # Query-key pairs attention computes for these examples (packed ones count apart), for
        # the model FLOPs of the step (medsft.flops): a host integer, no sync.
        "attention_pairs": causal_pairs(
            n for ex in examples for n in ex.get("lengths", [len(ex["input_ids"])])
        ),
        "index": [ex.get("index") for ex in examples],
        "meta": [ex.get("meta", {}) for ex in examples],
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


class SFTDataModule(LightningDataModule):
    """Streams chat-formatted SFT data from the hub or local files (see the module docstring)."""

    def __init__(
        self,
        source: str = "FreedomIntelligence/Huatuo26M-Lite",
        tokenizer: str = "qwen3",
        preset: Literal[
            "huatuo", "course", "alpaca", "messages", "reasoning", "medquad"
        ] = "huatuo",
        columns: dict[str, str] | None = None,
        split: str = "train",
        subset: str | None = None,
        val_source: str | None = None,
        val_fraction: float = 0.02,
        system_prompt: str | None = None,
        max_length: int = 1024,
        enable_thinking: bool = False,
        multi_turn: MultiTurn = "auto",
        batch_size: int = 4,
        num_workers: int = 0,
        shuffle_buffer: int = 1000,
        group_by_length: bool = False,
        packing: bool = False,
        pad_to_multiple_of: int = 8,
        skip_invalid: bool = False,
        seed: int = 0,
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
            enable_thinking: Qwen3 thinking mode, as it will be used at inference; true for
                reasoning (think) data.
            multi_turn: `auto`, `joint`, `split` or `last` (see medsft.chat.render_conversation).
            batch_size: examples per micro-batch, per rank.
            num_workers: dataloader worker processes per rank.
            shuffle_buffer: size of the streaming shuffle buffer (1 = no shuffling).
            group_by_length: batch examples of similar length together (less padding).
            packing: training rows of whole examples packed best-fit up to `max_length` tokens,
                each example attending only to itself (position ids restart per example):
                almost no padding. `batch_size` then counts packed rows.
            pad_to_multiple_of: pad batch length to a multiple of this (tensor-core friendly).
            skip_invalid: skip and count bad rows instead of stopping with an error.
            seed: shuffling seed.
        """
        super().__init__()
        # The tokenizer is the model's (linked in train.py), already in the module's hparams.
        self.save_hyperparameters(ignore=["tokenizer"])
        self.column_map = column_map(preset, columns)
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if packing and group_by_length:
            raise ValueError(
                "packing fills rows to max_length, so group_by_length has nothing to do: "
                "set one of them"
            )
        if max_length < 8 or batch_size < 1 or num_workers < 0:
            raise ValueError("max_length must be >= 8, batch_size >= 1 and num_workers >= 0")
        self.source = source
        self.tokenizer_name = tokenizer
        self.split = split
        self.subset = subset
        self.val_source = val_source
        self.val_fraction = val_fraction
        self.system_prompt = system_prompt
        self.max_length = max_length
        self.enable_thinking = enable_thinking
        self.multi_turn = multi_turn
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.shuffle_buffer = shuffle_buffer
        self.group_by_length = group_by_length
        self.packing = packing
        self.pad_to_multiple_of = pad_to_multiple_of
        self.skip_invalid = skip_invalid
        self.seed = seed
        self._tokenizer = None
        self.train_set: SFTStream | None = None
        self.val_set: SFTStream | None = None

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
        rank, world = self._rank()
        self.train_set = SFTStream(self, "train", rank, world)
        self.val_set = SFTStream(self, "val", rank, world)

    def _loader(self, dataset: SFTStream) -> DataLoader:
        pad = self.tokenizer.pad_token_id
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            collate_fn=lambda b: collate(b, pad, pad_to_multiple_of=self.pad_to_multiple_of),
            persistent_workers=False,
            multiprocessing_context="fork" if self.num_workers and os.name == "posix" else None,
        )

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
