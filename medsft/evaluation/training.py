"""Training curves of run systems, read from their TensorBoard logs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

Scalars = dict[str, list[tuple[int, float]]]


def training_scalars(run_dir: Path) -> Scalars:
    """Scalars logged to TensorBoard in a run directory: {tag: [(step, value), ...]}."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    candidates = [run_dir, run_dir.parent]
    event_dir = next((d for d in candidates if list(d.glob("events.out.tfevents.*"))), None)
    if event_dir is None:
        return {}
    accumulator = EventAccumulator(str(event_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {
        tag: [(event.step, float(event.value)) for event in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }


def training_summary(run_dir: Path, scalars: Scalars) -> dict[str, Any]:
    """Last and lowest value of each scalar, for report.json."""
    return {
        "run_dir": str(run_dir),
        "scalars": {
            tag: {"last": points[-1][1], "min": min(v for _, v in points), "steps": len(points)}
            for tag, points in scalars.items()
            if points
        },
    }
