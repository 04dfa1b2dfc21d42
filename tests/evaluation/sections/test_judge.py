"""medsft.evaluation.sections.judge: the judge's results, or why there are none."""

from __future__ import annotations

from medsft.evaluation.report import render_markdown
from medsft.evaluation.sections.judge import compute
from tests.helpers import sample_report, sample_run


def test_failed_judge_says_why_and_shows_no_rates():
    report = sample_report([])
    report["judge"] = {
        "status": "failed",
        "baseline": "long",
        "reason": "judge endpoint down",
        "results": {},
    }
    md = render_markdown(report)
    assert "**Failed**: judge endpoint down" in md and "adjusted win rate" not in md
    assert "distinct" not in md


def test_a_judge_without_endpoint_is_skipped_with_its_reason(monkeypatch, tmp_path):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    judge = compute(sample_run([], tmp_path))
    assert judge["status"] == "skipped" and judge["baseline"] == "long"
    assert "no judge endpoint configured" in judge["reason"]
    assert not any(tmp_path.iterdir())  # nothing asked, nothing written


def test_a_report_from_before_the_length_note_keeps_its_none_line():
    report = sample_report([])
    result = {
        "adjusted_win_rate": 0.5,
        "interval": None,
        "length_controlled_win_rate": None,
        "length_controlled": {"estimate": None, "interval": None, "reason": "too few pairs"},
        "consistency_rate": 1.0,
        "counts": {"win": 1, "tie": 0, "loss": 1},
        "n_errors": 0,
        "n_judged": 2,
        "n_pairs": 2,
        "usage": {"requests": 4, "total_tokens": 10, "cached_judgements": 0},
    }
    report["judge"] = {
        "status": "ok",
        "baseline": "long",
        "model": "m",
        "endpoint": "OpenAI",
        "language": "en",
        "results": {"short": result},
    }
    md = render_markdown(report)
    assert "Length-controlled rate of short: none, too few pairs." in md
    assert "Length, short:" not in md and "Position bias" not in md and "### Agreement" not in md
    row = next(line for line in md.splitlines() if line.startswith("| short | 1 |"))
    assert row.split(" | ")[6] == "–"  # no similar-length check in that report
