"""medsft.evaluation.report: report.md's sections from report.json's content."""

from __future__ import annotations

from medsft.evaluation.report import render_markdown
from tests.helpers import sample_report


def test_lengths_beside_scores_and_the_length_flag():
    report = sample_report([1])  # 'short' answers 20 characters, the baseline 'long' ones ~10x more
    md = render_markdown(report)
    assert "## Answer length" in md and "| vs long |" in md
    assert md.index("## Answer length") < md.index("## Scores against the references")
    assert "| short | 20.0 | 20.0 |" in md and "⚠" in md
    assert "more than 2×: short." in md
    assert "generations/" not in md  # answer files only: nothing was generated
    report["systems"][0]["generation"] = {
        "generated": 6,
        "seconds": 1.0,
        "tokens_per_second": 5.0,
        "world_size": 1,
        "finish_reasons": {"stop": 4, "length": 2},
        "mean_new_tokens": 9.0,
    }
    md = render_markdown(report)
    assert "`generations/<system>.jsonl`" in md and "2 hit max_new_tokens" in md


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
