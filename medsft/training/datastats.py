"""Data counters logged as training goes: rows read, invalid, dropped, truncated answers.

Each example carries the counter increments of its shard since the example before it (see
`SFTStream.examples`), and `collate` sums them into `batch["data_counts"]` (plain ints, so
nothing is copied to the device). `DataMonitor` adds them up on every rank and, on logging steps
(`trainer.log_every_n_steps`), sums over ranks and logs TensorBoard scalars `data/*`, with a
warning giving the share when answers are truncated or rows dropped: a run shorter than one pass
over the data reports them too. It also stops a run whose epochs yield no data at all.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from medsft.data.sources import EmptySource
from medsft.data.stream import DATA_COUNTERS as COUNTERS

log = logging.getLogger("medsft.data")

# An epoch may legitimately be empty once (resumed at its very end); two in a row is no data.
EMPTY_EPOCHS = 2


class DataMonitor(Callback):
    """Logs `data/*` counts and shares, warns on truncation and drops, stops data-less runs."""

    def __init__(self) -> None:
        self.totals: Counter = Counter()
        self._logged_step = -1
        self._warned: dict[str, int] = {}
        self._batches = 0
        self._empty_epochs = 0

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._batches = 0

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        counts = batch.get("data_counts") if isinstance(batch, dict) else None
        if counts:
            self.totals.update(counts)
        if isinstance(batch, dict) and not batch.get("padding"):
            self._batches += 1
        step = trainer.global_step
        if step != self._logged_step and step % trainer.log_every_n_steps == 0:
            self._logged_step = step
            self._log(trainer, step)

    def _reduced(self, trainer: Trainer, values: list[float]) -> list[float]:
        if trainer.world_size == 1:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=trainer.strategy.root_device)
        return trainer.strategy.reduce(tensor, reduce_op="sum").tolist()

    def _log(self, trainer: Trainer, step: int) -> None:
        values = self._reduced(trainer, [self.totals[k] for k in COUNTERS])
        totals = dict(zip(COUNTERS, values, strict=True))
        if not trainer.is_global_zero:
            return
        metrics = {f"data/{k}": v for k, v in totals.items()}
        metrics["data/truncated_share"] = totals["truncated"] / max(1, totals["examples"])
        metrics["data/dropped_share"] = totals["dropped"] / max(1, totals["rows"])
        if trainer.logger is not None:
            # At the step index Lightning gives this step's train/* metrics (one less than the
            # steps taken): a resume purges events from its checkpoint's step on, which would
            # otherwise drop the counters logged with that very checkpoint.
            trainer.logger.log_metrics(metrics, step=step - 1)
        dm = trainer.datamodule
        max_length = getattr(dm, "max_length", "?")
        self._warn(
            "truncated",
            totals["truncated"],
            totals["examples"],
            "examples",
            f"had their answer cut at max_length={max_length} (no end-of-turn token to learn "
            "to stop); raise data.max_length or set data.truncation: drop",
        )
        self._warn(
            "dropped",
            totals["dropped"],
            totals["rows"],
            "rows read",
            f"were dropped: the answer does not fit in max_length={max_length} (or nothing of it "
            "is left after the prompt); raise data.max_length",
        )

    def _warn(self, key: str, count: float, total: float, of: str, what: str) -> None:
        """Warn the first time, then each time the count doubles: visible, never a flood."""
        if count and count >= 2 * self._warned.get(key, 0):
            self._warned[key] = int(count)
            log.warning(
                "data: %d of %d %s so far (%.1f%%) %s",
                count,
                total,
                of,
                100 * count / max(1, total),
                what,
            )

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        (batches,) = self._reduced(trainer, [float(self._batches)])
        self._empty_epochs = self._empty_epochs + 1 if batches == 0 else 0
        if self._empty_epochs >= EMPTY_EPOCHS:
            source = getattr(trainer.datamodule, "source", "the training data")
            raise EmptySource(
                f"{EMPTY_EPOCHS} training epochs in a row had no batch on any rank: no usable "
                f"example in {source} (see the data summary logged above)"
            )

    def state_dict(self) -> dict[str, Any]:
        return {"totals": dict(self.totals), "warned": dict(self._warned)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.totals = Counter(state_dict.get("totals", {}))
        self._warned = dict(state_dict.get("warned", {}))
