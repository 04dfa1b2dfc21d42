"""medsft.evaluation.sections.leakage: the leakage check, only where one is configured."""

from __future__ import annotations

from pathlib import Path

from medsft.evaluation.config import DataSpec, LeakageSettings
from medsft.evaluation.sections.leakage import compute, render
from tests.helpers import sample_run

ROOT = Path(__file__).resolve().parents[3]


def test_the_test_set_checked_against_itself_is_all_flagged(tmp_path):
    run = sample_run([], tmp_path)
    assert compute(run) is None and render(run.report) == []
    test_set = DataSpec(source=str(ROOT / "data/sample/test_zh_med.json"), preset="course")
    run.config.leakage = LeakageSettings(train_set=test_set)
    run.config.runtime.progress = False
    leak = compute(run)
    assert leak["n"] == 6 and leak["flagged"] == 6 and leak["exact_duplicates"] == 6
    assert "## Leakage check" in render({"leakage": leak})
