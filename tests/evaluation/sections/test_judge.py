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
