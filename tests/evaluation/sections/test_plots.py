"""medsft.evaluation.sections.plots: metrics.png and the list of plots."""

from __future__ import annotations

from medsft.evaluation.sections.plots import compute, render
from tests.helpers import sample_run


def test_metrics_png_is_drawn_and_listed_with_the_training_plots(tmp_path):
    run = sample_run([1], tmp_path)
    run.report["training"] = {"short": {"plot": "training_short.png"}, "other": {}}
    assert compute(run) == ["metrics.png", "training_short.png"]
    assert (tmp_path / "metrics.png").stat().st_size > 10_000
    assert "![metrics](metrics.png)" in render(run.report)
