"""Training throughput between two logging steps: tokens/s, padding, the worst step loss and MFU.

The counts stay on the device and are summed there every optimizer step; `read` copies them to
the host once, on logging steps, so ordinary steps never wait for the device.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from medsft.model.flops import FlopCounter, mfu


class Throughput:
    """What the optimizer steps since the last `read` processed, and how fast."""

    def __init__(
        self, flops: FlopCounter | None = None, clock: Callable[[], float] = time.perf_counter
    ):
        """
        Args:
            flops: the model's FLOP counter, for MFU (None: no MFU).
            clock: seconds, monotonic (a fake one in tests).
        """
        self.flops = flops
        self.clock = clock
        # Supervised tokens, real tokens, causal attention pairs, token slots (real + padding).
        self._counts = torch.zeros(4, dtype=torch.float64)
        self._loss_max = torch.zeros((), dtype=torch.float64)
        self._start = clock()

    def restart(self) -> None:
        """Start timing now (training starts; time spent setting up is not training)."""
        self._start = self.clock()

    def add(self, counts: torch.Tensor, loss: torch.Tensor) -> None:
        """One optimizer step, without a host sync.

        Args:
            counts: [supervised tokens, real tokens, causal attention pairs, token slots] of the
                step, on any device.
            loss: the step's mean loss (its largest since the last read is reported).
        """
        self._counts = self._counts.to(counts.device) + counts
        self._loss_max = torch.maximum(self._loss_max.to(loss.device), loss.to(torch.float64))

    def read(self, *, device_name: str | None = None, devices: int = 1) -> dict[str, float]:
        """The figures since the last read (one host sync), then start counting afresh.

        Args:
            device_name: `torch.cuda.get_device_name()` for MFU; None (CPU): no MFU.
            devices: devices working together (data-parallel ranks).

        Returns:
            `loss_max`, `supervised_tokens_per_s`, `tokens_per_s`, `padding_fraction` (token
            slots spent on padding) and, for a GPU in medsft.model.flops' table, `mfu`.
        """
        n_sup, n_all, pairs, slots = self._counts.tolist()
        loss_max = float(self._loss_max)
        now = self.clock()
        elapsed, self._start = now - self._start, now
        self._counts = torch.zeros_like(self._counts)
        self._loss_max = torch.zeros_like(self._loss_max)
        metrics = {
            "loss_max": loss_max,
            "supervised_tokens_per_s": n_sup / elapsed,
            "tokens_per_s": n_all / elapsed,
            "padding_fraction": 1 - n_all / slots if slots else 0.0,
        }
        if device_name is not None and self.flops is not None:
            flops = self.flops.step_flops(int(n_all), int(n_sup), int(pairs))
            if (utilisation := mfu(flops, elapsed, device_name, devices)) is not None:
                metrics["mfu"] = utilisation  # None (not logged) for an unknown GPU
        return metrics
