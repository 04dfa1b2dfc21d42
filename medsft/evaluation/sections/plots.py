"""metrics.png (medsft.evaluation.plots.plot_metrics), and the list of every plot written."""

from __future__ import annotations

from typing import Any

from medsft.evaluation.report import Evaluation, Section


def compute(run: Evaluation) -> list[str]:
    """Draw metrics.png; report.json's `plots`: it and the training curves drawn before it."""
    from medsft.evaluation.plots import plot_metrics

    plot_metrics(run.report, run.out_dir / "metrics.png")
    training = (run.report.get("training") or {}).values()
    return ["metrics.png", *(t["plot"] for t in training if "plot" in t)]


def render(report: dict[str, Any]) -> list[str]:
    """metrics.png, shown."""
    return ["", "## Plots", "", "![metrics](metrics.png)", ""]


SECTIONS = (Section("plots", render, compute, order=130),)
