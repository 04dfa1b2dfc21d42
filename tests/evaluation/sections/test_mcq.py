"""medsft.evaluation.sections.mcq: multiple-choice accuracy, only where an mcq_set ran."""

from __future__ import annotations

from medsft.evaluation.sections.mcq import compute, render
from tests.helpers import sample_run


def test_no_mcq_set_no_section(tmp_path):
    run = sample_run([], tmp_path)
    assert compute(run) is None and render(run.report) == []
    assert not (tmp_path / "mcq.png").exists()
