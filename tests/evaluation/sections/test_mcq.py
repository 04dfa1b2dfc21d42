"""medsft.evaluation.sections.mcq: multiple-choice accuracy, only where an mcq_set ran, with the
prompt of each method that ran."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from medsft.evaluation.config import McqSpec
from medsft.evaluation.mcq import McqRun, load_mcq_set
from medsft.evaluation.sections.mcq import compute, render
from tests.helpers import sample_run

SAMPLE = Path(__file__).resolve().parents[3] / "data" / "sample"


def test_no_mcq_set_no_section(tmp_path):
    run = sample_run([], tmp_path)
    assert compute(run) is None and render(run.report) == []
    assert not (tmp_path / "mcq.png").exists()


@pytest.mark.parametrize("methods", [["generate"], ["loglik"], ["loglik", "generate"]])
def test_the_prompt_shown_is_that_of_each_method_that_ran(tmp_path, methods):
    spec = McqSpec(
        source=str(SAMPLE / "mcq_sample.csv"), dev_source=str(SAMPLE / "mcq_dev.csv"), shots=1
    )
    run = sample_run([], tmp_path)
    run.config = replace(run.config, mcq_set=replace(spec, methods=methods))
    run.mcq = load_mcq_set(run.config.mcq_set)
    n = len(run.mcq.items)
    run.mcq_runs = [
        McqRun("short", m, [it.answer for it in run.mcq.items], [None] * n) for m in methods
    ]
    mcq = compute(run)
    assert all(r["accuracy"]["score"] == 100 for r in mcq["results"].values())
    md = "\n".join(render({"mcq": mcq}))
    assert ("(`loglik`; the model's next token is scored)" in md) == ("loglik" in methods)
    assert ("(`generate`; sent zero-shot" in md) == ("generate" in methods)
    assert (mcq["prompt_example"] in md) == ("loglik" in methods)  # the 1-shot prompt
    assert (mcq["chat_prompt_example"] in md) == ("generate" in methods)  # zero-shot
