"""SFTStream: rendered examples of one split and one (rank, worker) shard, streamed.

- Train/validation split by a hash of each example's id (or text): the same on every run, worker
  count and world size.
- Sharding: a local file's row i goes to shard i mod (world_size * num_workers), a hub stream is
  split by `datasets` (by file where the file count allows, else by row); either way every row is
  read by exactly one (rank, worker) per epoch, in training and validation alike.
- The training stream is shuffled (and grouped or packed, medsft.data.batching) with a seed of
  (seed, epoch, shard) only; `StreamPosition` records how far each worker got, so a resumed
  epoch replays and drops what was already trained on.
- Bad rows raise an error naming file, line and field, or with `skip_invalid` are skipped and
  counted in `StreamStats`, whose counters ride along to the batches (medsft.training.datastats).
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from torch.utils.data import IterableDataset, get_worker_info

from medsft.chat import AnswerTruncated, EmptySupervision, render_conversation
from medsft.data.augment import augment
from medsft.data.batching import _grouped, _packed, _shuffled, row_capacity
from medsft.data.schema import in_validation, iter_conversations
from medsft.data.sources import InvalidExample

log = logging.getLogger("medsft.data")

DATA_COUNTERS = ("examples", "rows", "invalid", "dropped", "truncated")
"""The data counters carried in batches and logged as `data/*` (medsft.training.datastats)."""


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
        """The counters carried in batches (DATA_COUNTERS), cumulative for this pass."""
        invalid = sum(self.invalid.values())
        return {k: invalid if k == "invalid" else getattr(self, k) for k in DATA_COUNTERS}

    def skip(self, err: InvalidExample) -> None:
        """Count a row skipped as invalid (`skip_invalid`), by kind."""
        self.invalid[err.kind] += 1

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


class SFTStream(IterableDataset):
    """Rendered examples of one split and one (rank, worker) shard, streamed."""

    def __init__(self, dm: Any, split: Literal["train", "val"], rank: int, world_size: int):
        """
        Args:
            dm: the SFTDataModule whose settings and tokenizer render the examples (typed
                loosely: medsft.data.module imports this module).
            split: `train` or `val`.
            rank: this process's rank.
            world_size: the number of ranks.
        """
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
        content = dm.column_map.get("messages") or dm.column_map["answer"]
        last: dict[str, int] = {}

        def skipped(err: InvalidExample) -> None:  # a row read, invalid, skip_invalid set
            stats.rows += 1
            stats.skip(err)

        conversations = iter_conversations(
            dm.data_source(self.split), shard=shard, num_shards=num_shards, skipped=skipped
        )
        for conversation in conversations:
            row, messages, key = conversation.row, conversation.messages, conversation.key
            stats.rows += 1
            if dm.val_source is None and in_validation(key, dm.val_fraction) != want_val:
                stats.other_split += 1
                continue
            variants = [messages]
            if dm.augment is not None and not want_val:  # never the validation split
                variants = augment(messages, key, dm.augment)
                stats.augmented += sum(v is not messages for v in variants)
            try:
                sequences = [
                    seq
                    for variant in variants
                    for seq in render_conversation(
                        variant,
                        dm.tokenizer,
                        max_length=dm.max_length,
                        enable_thinking=dm.enable_thinking,
                        multi_turn=dm.multi_turn,
                        truncation=dm.truncation,
                    )
                ]
            except EmptySupervision:
                stats.truncated_away += 1
                continue
            except AnswerTruncated:
                stats.dropped_truncated += 1
                continue
            except ValueError as err:  # the template cannot render this row exactly
                invalid = InvalidExample(row.where, content, str(err))
                if not dm.skip_invalid:
                    raise invalid from err
                stats.skip(invalid)
                continue
            for seq in sequences:
                stats.examples += 1
                stats.truncated += bool(seq.pop("truncated", False))
                # Counter increments since the previous example ride along to the batch, so a
                # worker's drops and truncations reach the logs as they happen.
                now = stats.counts()
                step = {k: v - last.get(k, 0) for k, v in now.items()}
                last = now
                yield {**seq, "index": row.index, "counts": step}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        shard, num_shards, worker = self._shard()
        self.stats = StreamStats()
        stream = self.examples(shard, num_shards)
        if self.split == "train":
            # Seeded by (seed, epoch, shard) only: the same order on a rerun and after a resume,
            # whatever the process's own random state.
            # A string seed is digested with SHA-512: stable across processes, unlike `hash`.
            rng = random.Random(f"shuffle/{self.dm.seed}/{self.epoch}/{shard}")
            stream = _shuffled(stream, self.dm.shuffle_buffer, rng)
            if self.dm.packing:
                capacity = row_capacity(self.dm.packing, self.dm.max_length, self.dm.batch_size)
                stream = _packed(stream, capacity, rng)
            elif self.dm.group_by_length:
                stream = _grouped(stream, self.dm.batch_size, rng)
        skip = self.skip.get(worker, 0)
        for n, example in enumerate(stream, start=1):
            if n > skip:  # a resumed epoch replays the examples already trained and drops them
                yield {**example, "position": (worker, n)}
        level = logging.WARNING if self.stats.invalid or self.stats.truncated_away else logging.INFO
        log.log(
            level,
            "data %s (rank %d, shard %d/%d): %s",
            self.split,
            self.rank,
            shard,
            num_shards,
            self.stats.summary(),
        )
        if (
            self.stats.examples == 0
            and self.stats.rows > 0
            and self.split == "train"
            and num_shards == 1
        ):
            raise RuntimeError(
                f"no usable training example in {self.dm.source}: {self.stats.summary()}"
            )


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
