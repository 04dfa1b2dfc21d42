"""medsft.evaluation.plots: metrics.png shows every interval there is, and nothing made up;
Chinese labels are set in a font that has their glyphs."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from matplotlib.container import ErrorbarContainer

from medsft.evaluation import plots
from medsft.evaluation.plots import metrics_figure, plot_metrics, plot_training
from medsft.evaluation.scoring import has_references
from tests.helpers import sample_report

ROOT = Path(__file__).resolve().parents[2]


def _errorbars(ax) -> int:
    return sum(isinstance(c, ErrorbarContainer) for c in ax.containers)


@pytest.mark.parametrize("distinct_orders", [[1, 2], []])
def test_every_metric_with_an_interval_gets_its_error_bar(distinct_orders, tmp_path):
    report = sample_report(distinct_orders)
    metrics = report["metrics"]["short"]
    with_ci = [n for n in metrics if "low" in metrics[n]]
    # The metrics table decides which scores have an interval: those against the references.
    assert with_ci == [n for n, entry in metrics.items() if has_references(entry)]
    assert len(metrics) - len(with_ci) == len(distinct_orders)
    fig = metrics_figure(report)
    overlap = fig.axes[0]
    # One error-bar set per system, each over every interval metric, with distinct-n present too.
    assert _errorbars(overlap) == 2
    assert all(
        len(c.lines[2][0].get_segments()) == len(with_ci)
        for c in overlap.containers
        if isinstance(c, ErrorbarContainer)
    )
    titles = [ax.get_title() for ax in fig.axes]
    assert ("Diversity (no CI)" in titles) == bool(distinct_orders)
    assert titles[-1] == "Mean answer length (chars)"
    plot_metrics(report, tmp_path / "metrics.png")
    assert (tmp_path / "metrics.png").stat().st_size > 10_000


def test_judge_panel_draws_no_rate_for_a_system_with_none_judged():
    report = sample_report([1])
    interval = {"low": 0.3, "high": 0.9}
    report["judge"] = {
        "status": "ok",
        "baseline": "long",
        "results": {
            "short": {"adjusted_win_rate": 0.6, "interval": interval},
            "other": {"adjusted_win_rate": None, "interval": None},
        },
    }
    judge = next(ax for ax in metrics_figure(report).axes if ax.get_title().startswith("Adj."))
    bars = [p.get_height() for p in judge.patches]
    assert bars == [0.6, 0.0]  # 'other' has no bar, not a made-up rate
    (errorbar,) = [c for c in judge.containers if isinstance(c, ErrorbarContainer)]
    assert len(errorbar.lines[2][0].get_segments()) == 1


def test_training_plot_needs_a_loss_or_perplexity(tmp_path):
    assert not plot_training("run", {"lr": [(1, 0.1)]}, tmp_path / "t.png")
    assert plot_training("run", {"train/loss": [(1, 2.0), (2, 1.5)]}, tmp_path / "t.png")
    assert (tmp_path / "t.png").exists()


def _mcq(subjects: list[str]) -> dict:
    entry = {"n": 4, "score": 50.0, "low": 25.0, "high": 75.0}
    return {
        "source": "cmmlu",
        "n": 4 * len(subjects),
        "chance": 25.0,
        "subjects": dict.fromkeys(subjects, 4),
        "results": {"base/loglik": {"accuracy": entry, "subjects": dict.fromkeys(subjects, entry)}},
    }


@pytest.fixture
def saved_figures(monkeypatch) -> list:
    """The figures plot_mcq saves, kept for inspection."""
    figures = []
    save = plots.save_cjk

    def keep(fig, path):
        figures.append(fig)
        save(fig, path)

    monkeypatch.setattr(plots, "save_cjk", keep)
    return figures


def test_chinese_labels_are_set_in_a_font_that_has_their_glyphs(tmp_path, saved_figures, caplog):
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    plots.cjk_font.cache_clear()
    cjk = plots.cjk_font()
    assert cjk is not None  # installed, or shipped by noto-cjk-sans-otc (the dev/cjk extras)
    assert plots.plot_mcq(_mcq(["解剖学", "临床知识", "中医中药"]), tmp_path / "mcq.png")
    texts = [
        t
        for t in saved_figures[0].findobj(lambda o: hasattr(o, "get_text"))
        if re.search(r"[\u4e00-\u9fff]", t.get_text())
    ]
    assert {t.get_text().split("\n")[0] for t in texts} == {"解剖学", "临床知识", "中医中药"}
    for text in texts:
        path = font_manager.findfont(text.get_fontproperties(), fallback_to_default=False)
        charmap = FT2Font(path).get_charmap()
        missing = [c for c in text.get_text() if not c.isspace() and ord(c) not in charmap]
        assert not missing, (path, missing)
    assert "no CJK font" not in caplog.text


def test_without_a_cjk_font_one_line_says_so(tmp_path, monkeypatch, caplog):
    plots.cjk_font.cache_clear()
    monkeypatch.setattr(plots, "CJK_FONTS", ())
    monkeypatch.setitem(sys.modules, "noto_cjk_sans_otc", None)  # not installed
    try:
        # matplotlib's own missing-glyph warnings are not silenced either
        with pytest.warns(UserWarning, match="Glyph .* missing from font"):
            assert plots.plot_mcq(_mcq(["内科"]), tmp_path / "mcq.png")
        assert plots.plot_mcq(_mcq(["anatomy"]), tmp_path / "en.png")  # nothing to warn about
    finally:
        plots.cjk_font.cache_clear()
    warnings = [r for r in caplog.records if "no CJK font" in r.getMessage()]
    assert len(warnings) == 1 and "\n" not in warnings[0].getMessage()
    assert (
        warnings[0].getMessage().startswith("mcq.png: ")
        and "medsft[cjk]" in warnings[0].getMessage()
    )
