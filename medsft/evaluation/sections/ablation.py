"""The ablation table: run systems' hyperparameters beside their headline scores."""

from __future__ import annotations

from typing import Any

from medsft.evaluation.report import Evaluation, Section


def compute(run: Evaluation) -> dict[str, Any] | None:
    """report.json's `ablation` (medsft.evaluation.ablation.ablation)."""
    from medsft.evaluation.ablation import ablation

    return ablation(run.outputs, run.report, run.out_dir)


def render(report: dict[str, Any]) -> list[str]:
    """medsft.evaluation.ablation.render_ablation."""
    from medsft.evaluation.ablation import render_ablation

    return render_ablation(report.get("ablation"))


SECTIONS = (Section("ablation", render, compute, order=110),)
