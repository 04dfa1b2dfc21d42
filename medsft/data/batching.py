"""Examples -> batches: shuffle buffer, length grouping, best-fit packing, and `collate`.

Packing (`packing: true`): shuffled training examples are packed whole, best-fit decreasing, into
rows of up to `max_length` tokens, with position ids restarting per example, so each example
attends only to itself and gets the loss it would get alone, with almost no padding.
`packing: padding_free` packs them into one row per micro-batch of up to `batch_size x
max_length` tokens instead: no row is padded to another's length (see `row_capacity`).

Imports torch (for `collate`), not Lightning.
"""

from __future__ import annotations

import bisect
import math
import random
from collections import Counter
from collections.abc import Iterator
from typing import Any, Literal

import torch

from medsft.chat import IGNORE_INDEX
from medsft.model.flops import causal_pairs
from medsft.model.loss import supervised_positions

Packing = bool | Literal["rows", "padding_free"]
"""`data.packing`: false, true (= `rows`), or `padding_free`."""


def row_capacity(packing: Packing, max_length: int, batch_size: int) -> int:
    """Tokens a packed training row may hold: `max_length`, or a whole micro-batch's worth
    (`batch_size x max_length`) when `padding_free` makes each micro-batch one row."""
    return max_length * (batch_size if packing == "padding_free" else 1)


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
    """A batch's data counters (plain ints: no device copy) for medsft.training.datastats.DataMonitor."""
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
        "counts": dict(sum((Counter(ex.get("counts", {})) for ex in examples), Counter())),
    }


def collate(
    examples: list[dict[str, Any]], pad_token_id: int, *, pad_to_multiple_of: int = 1
) -> dict[str, Any]:
    """Right-pad to the longest example; labels are padded with -100, so padding is never trained.

    Also the loss's supervised `positions` and `targets` (medsft.model.loss.supervised_positions),
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
        # the model FLOPs of the step (medsft.model.flops).
        "attention_pairs": torch.tensor(
            causal_pairs(n for ex in examples for n in ex.get("lengths", [len(ex["input_ids"])]))
        ),
        "index": [ex.get("index") for ex in examples],
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
