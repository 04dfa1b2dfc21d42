"""The test set's overlap with training data (`leakage`; medsft.evaluation.leakage)."""

from __future__ import annotations

from typing import Any

from medsft.evaluation.report import Evaluation, Section


def compute(run: Evaluation) -> dict[str, Any] | None:
    """report.json's `leakage`; None when no `leakage` source is configured."""
    if run.config.leakage is None:
        return None
    from medsft.evaluation.leakage import check_leakage

    return check_leakage(run.examples, run.config.leakage, progress=run.config.runtime.progress)


def render(report: dict[str, Any]) -> list[str]:
    """medsft.evaluation.leakage.render_leakage, when leakage was checked."""
    if not report.get("leakage"):
        return []
    from medsft.evaluation.leakage import render_leakage

    return render_leakage(report["leakage"])


SECTIONS = (Section("leakage", render, compute, order=90),)
