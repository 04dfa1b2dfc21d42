"""medsft.evaluation.plots: metrics.png shows every interval there is, and nothing made up."""

from __future__ import annotations

from pathlib import Path

import pytest
from matplotlib.container import ErrorbarContainer

from medsft.evaluation.plots import metrics_figure, plot_metrics, plot_training
from tests.helpers import sample_report

ROOT = Path(__file__).resolve().parents[2]


def _errorbars(ax) -> int:
    return sum(isinstance(c, ErrorbarContainer) for c in ax.containers)


@pytest.mark.parametrize("distinct_orders", [[1, 2], []])
def test_every_metric_with_an_interval_gets_its_error_bar(distinct_orders, tmp_path):
    report = sample_report(distinct_orders)
    names = list(report["metrics"]["short"])
    with_ci = [n for n in names if "low" in report["metrics"]["short"][n]]
    assert len(with_ci) == 7 and len(names) == 7 + len(distinct_orders)
    fig = metrics_figure(report)
    overlap = fig.axes[0]
    # One error-bar set per system, each over all 7 interval metrics, with distinct-n present too.
    assert _errorbars(overlap) == 2
    assert all(len(c.lines[2][0].get_segments()) == 7 for c in overlap.containers
               if isinstance(c, ErrorbarContainer))  # fmt: skip
    titles = [ax.get_title() for ax in fig.axes]
    assert ("Diversity (no CI)" in titles) == bool(distinct_orders)
    assert titles[-1] == "Mean answer length (chars)"
    plot_metrics(report, tmp_path / "metrics.png")
    assert (tmp_path / "metrics.png").stat().st_size > 10_000


def test_judge_panel_draws_no_rate_for_a_system_with_none_judged():
    report = sample_report([1])
    interval = {"low": 0.3, "high": 0.9}
    report["judge"] = {
        "status": "ok", "baseline": "long",
        "results": {"short": {"adjusted_win_rate": 0.6, "interval": interval},
                    "other": {"adjusted_win_rate": None, "interval": None}},
    }  # fmt: skip
    judge = next(ax for ax in metrics_figure(report).axes if ax.get_title().startswith("Adj."))
    bars = [p.get_height() for p in judge.patches]
    assert bars == [0.6, 0.0]  # 'other' has no bar, not a made-up rate
    (errorbar,) = [c for c in judge.containers if isinstance(c, ErrorbarContainer)]
    assert len(errorbar.lines[2][0].get_segments()) == 1


def test_training_plot_needs_a_loss_or_perplexity(tmp_path):
    assert not plot_training("run", {"lr": [(1, 0.1)]}, tmp_path / "t.png")
    assert plot_training("run", {"train/loss": [(1, 2.0), (2, 1.5)]}, tmp_path / "t.png")
    assert (tmp_path / "t.png").exists()
