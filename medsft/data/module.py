"""SFTDataModule: the Lightning integration of medsft.data (loaders, ranks, resume state).

Ranks whose shard ends first step on empty padding batches until all are done (see
`_UntilAllRanksDone`), so data parallelism stays in step and the token-weighted loss (sum/count
over all ranks) is exact. The training stream's position (medsft.data.stream.StreamPosition) is
saved in checkpoints, so a resumed run continues mid-epoch where it stopped.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from typing import Any, Literal

import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader

from medsft.chat import IGNORE_INDEX, MultiTurn, Truncation
from medsft.data.augment import AugmentSettings
from medsft.data.batching import Packing, collate
from medsft.data.schema import DataSource, Preset, column_map
from medsft.data.sources import EmptySource, check_encoding, check_local_source
from medsft.data.stream import SFTStream, StreamPosition
from medsft.errors import ConfigError
from medsft.ranks import all_ranks, trainer_rank

log = logging.getLogger("medsft.data")

SPLIT_CHECK_ROWS = 100_000
"""Rows of a local source whose split keys `SFTDataModule.check_split` reads."""
SPLIT_CHECK_HUB_ROWS = 2_000
"""The same for a hub stream (read over the network)."""


def _check_settings(**args: Any) -> None:
    """SFTDataModule's settings that cannot work, each as the config error naming it, before any
    data is read or model built."""
    from medsft.data.sources import is_local

    checks = [
        (0 <= args["val_fraction"] < 1, "val_fraction", "a share in [0, 1): 0 = none held out"),
        (args["max_length"] >= 8, "max_length", "at least 8 tokens"),
        (args["batch_size"] >= 1, "batch_size", "at least 1"),
        (args["num_workers"] >= 0, "num_workers", ">= 0 (0: read in the training process)"),
        (args["shuffle_buffer"] >= 1, "shuffle_buffer", "at least 1 (1: no shuffling)"),
        (args["pad_to_multiple_of"] >= 1, "pad_to_multiple_of", "at least 1"),
        (
            args["packing"] in (False, True, "rows", "padding_free"),
            "packing",
            "false, true (= rows) or padding_free",
        ),
        (args["truncation"] in ("right", "drop"), "truncation", "right or drop"),
    ]
    for ok, name, wanted in checks:
        if not ok:
            raise ConfigError(f"data.{name} must be {wanted}; got {args[name]!r}")
    if args["packing"] and args["group_by_length"]:
        raise ConfigError(
            "data.packing fills rows to max_length, so data.group_by_length has nothing to "
            "do: set one of them"
        )
    sources = [s for s in (args["source"], args["val_source"]) if s]
    if all(is_local(s) for s in sources):
        local = " and ".join(sources) + (
            " is a local source" if len(sources) == 1 else " are local"
        )
        for name, default in (("split", "train"), ("subset", None)):
            if args[name] != default:
                raise ConfigError(
                    f"data.{name} {args[name]!r} selects part of a hub dataset, but {local}: it "
                    f"would be ignored; remove data.{name}, or point data.source at the data "
                    "you mean"
                )


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


class SFTDataModule(LightningDataModule):
    """Streams chat-formatted SFT data from the hub or local files (layers: see medsft.data)."""

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
        encoding: str = "utf-8",
        seed: int = 0,
        augment: AugmentSettings | None = None,
    ):
        """
        Args:
            source: hub dataset id (streamed) or local file, directory or glob (JSONL, JSON,
                Parquet, CSV).
            tokenizer: hub id, local dir, or `qwen3` (bundled); the training command links it to
                the model's (medsft.cli.train).
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
            encoding: text encoding of local JSON, JSONL and CSV files (`gb18030` for Toyhom's
                CSVs).
            seed: shuffling seed.
            augment: question-side synonym replacement of a share of the training examples
                (medsft.data.augment); null = none. Never applied to the validation split.
        """
        super().__init__()
        # The tokenizer is the model's (medsft.cli.train's SFTCLI links the two): SFTModule's
        # hparams record it already.
        self.save_hyperparameters(ignore=["tokenizer"])
        self.column_map = column_map(preset, columns)
        _check_settings(
            source=source,
            val_source=val_source,
            split=split,
            subset=subset,
            val_fraction=val_fraction,
            max_length=max_length,
            batch_size=batch_size,
            num_workers=num_workers,
            shuffle_buffer=shuffle_buffer,
            pad_to_multiple_of=pad_to_multiple_of,
            packing=packing,
            group_by_length=group_by_length,
            truncation=truncation,
        )
        for name in (source, val_source):
            if name:
                check_local_source(name)  # a missing path fails here, before any model is built
        check_encoding(encoding)
        self.source = source
        self.preset = preset
        self.columns = columns
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
        self.encoding = encoding
        self.seed = seed
        self.augment = augment
        if augment is not None:
            from medsft.data.augment import cilin

            cilin()  # fail now, not in a worker, when the synonym resource is not installed
        self._tokenizer = None
        self.train_set: SFTStream | None = None
        self.val_set: SFTStream | None = None
        self.position = StreamPosition()

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from medsft.model.build import load_tokenizer

            self._tokenizer = load_tokenizer(self.tokenizer_name)
        return self._tokenizer

    def data_source(self, split: Literal["train", "val"] = "train") -> DataSource:
        """What the training or validation split reads, in the vocabulary evaluation shares."""
        val = split == "val" and self.val_source is not None
        return DataSource(
            source=self.val_source if val else self.source,
            preset=self.preset,
            columns=self.columns,
            split=self.split,
            subset=self.subset,
            system_prompt=self.system_prompt,
            skip_invalid=self.skip_invalid,
            encoding=self.encoding,
        )

    @property
    def has_validation(self) -> bool:
        return self.val_source is not None or self.val_fraction > 0

    def _rank(self) -> tuple[int, int]:
        return trainer_rank(self.trainer)

    def setup(self, stage: str | None = None) -> None:
        if stage == "fit":
            self.check_not_empty()
        rank, world = self._rank()
        self.train_set = SFTStream(self, "train", rank, world)
        self.val_set = SFTStream(self, "val", rank, world)

    def check_not_empty(self) -> None:
        """Fail in seconds, naming the source and what was read, if training (or a separate
        validation source) has no usable example; otherwise Lightning loops over empty epochs.
        With `val_fraction` > 0, the held-out share must not be empty either (`check_split`).

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
        if self.val_source is None and self.val_fraction > 0:
            self.check_split()

    def check_split(self) -> None:
        """The hashed `val_fraction` split holds something out, and rows sharing one id are
        reported (the split key is the id, so they all land on one side: 40 rows with one id
        once sent every row to training and logged no val/loss).

        Reads the split keys (no tokenizing) of up to `SPLIT_CHECK_ROWS` rows of a local source,
        `SPLIT_CHECK_HUB_ROWS` of a hub stream (enough: at val_fraction 0.01, 2000 rows hold
        none out with probability 2e-9, unless their ids repeat).

        Raises:
            EmptySource: no row read went to validation.
        """
        from collections import Counter
        from itertools import islice

        from medsft.data.schema import in_validation, iter_conversations
        from medsft.data.sources import is_local

        keys: Counter[str] = Counter()
        limit = SPLIT_CHECK_ROWS if is_local(self.source) else SPLIT_CHECK_HUB_ROWS
        for conversation in islice(
            iter_conversations(self.data_source("train"), skipped=lambda err: None), limit
        ):
            keys[conversation.key] += 1
        shared = [(k, n) for k, n in keys.most_common() if n > 1] if "id" in self.column_map else []
        rows = sum(keys.values())
        if shared:
            key, n = shared[0]
            log.warning(
                "data: %d of %d rows of %s share an id with another row (id %r: %d rows): the "
                "train/val split goes by id, so rows sharing one always land on the same side; "
                "give each row its own id, or map data.columns.id to a column that is unique",
                sum(n for _, n in shared),
                rows,
                self.source,
                key,
                n,
            )
        if not any(in_validation(k, self.val_fraction) for k in keys):
            why = (
                f" ({shared[0][1]} rows share the id {shared[0][0]!r}, and the split goes by id)"
                if shared
                else ""
            )
            raise EmptySource(
                f"data.val_fraction {self.val_fraction} held out none of the {rows} examples "
                f"read from {self.source}{why}: give rows distinct ids (data.columns.id), set "
                "data.val_source, or set data.val_fraction: 0 to train without validation"
            )

    def _loader(self, dataset: SFTStream) -> DataLoader:
        pad = self.tokenizer.pad_token_id
        padding_free = self.packing == "padding_free" and dataset.split == "train"
        return _StreamLoader(
            dataset,
            self._begin_pass,
            # padding_free: each packed row is a whole micro-batch (batching.row_capacity).
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
                state.get("world_size"),
                state.get("num_workers"),
                world,
                self.num_workers,
            )
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
        return all_ranks(done, self.trainer.strategy, self.trainer.world_size)

    def preview(self, n: int = 3) -> list[dict[str, Any]]:
        """The first `n` training examples in source order, for auditing (python -m medsft.cli.chat)."""
        out = []
        for ex in SFTStream(self, "train", 0, 1).examples():
            out.append(ex)
            if len(out) == n:
                break
        return out
