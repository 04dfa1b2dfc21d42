"""medsft.evaluation.sections.overview: header, systems, answer length, examples."""

from __future__ import annotations

from dataclasses import replace

from medsft.evaluation.report import render_markdown
from medsft.evaluation.sections.overview import examples_shown, render_header
from tests.helpers import sample_report, sample_run


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


def test_examples_spread_over_the_test_set_with_every_answer():
    run = sample_run([])
    shown = examples_shown(run)
    assert [e["index"] for e in shown] == [0, 5]  # scoring.examples: 2 of 6, first and last
    assert shown[1]["answers"] == {o.name: o.answers[5] for o in run.outputs}
    run.config.scoring = replace(run.config.scoring, examples=0)
    assert examples_shown(run) == []
    run.config.scoring = replace(run.config.scoring, examples=50)
    assert len(examples_shown(run)) == 6


def test_header_says_how_repeated_questions_were_handled():
    report = sample_report([])
    report["test_set"]["duplicates"] = {"found": 2, "dropped": True, "policy": "drop"}
    (line,) = [x for x in render_header(report) if x.startswith("Test set:")]
    assert "2 repeated question(s) dropped (`test_set.duplicates: drop`)" in line
