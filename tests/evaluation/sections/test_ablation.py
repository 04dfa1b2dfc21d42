"""medsft.evaluation.sections.ablation: the ablation table, only for training-run systems."""

from __future__ import annotations

from medsft.evaluation.sections.ablation import compute, render
from tests.helpers import sample_run


def test_answer_files_make_no_ablation_table(tmp_path):
    run = sample_run([], tmp_path)
    assert compute(run) is None and render({"ablation": None}) == []
