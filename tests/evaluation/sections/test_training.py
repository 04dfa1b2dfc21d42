"""medsft.evaluation.sections.training: training curves of run systems."""

from __future__ import annotations

from pathlib import Path

from medsft.evaluation.sections.training import compute, render
from tests.helpers import sample_run


def test_run_systems_get_their_curves_and_answer_files_none(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    run_dir = tmp_path / "logs" / "demo" / "version_0"
    with SummaryWriter(str(run_dir)) as writer:
        for step, loss in enumerate([3.0, 2.0, 2.5]):
            writer.add_scalar("train/loss", loss, step)
    run = sample_run([], tmp_path)
    assert compute(run) == {} and render({"training": {}}) == []
    run.outputs[0].run_dir = Path(run_dir)
    training = compute(run)
    assert list(training) == ["short"] and training["short"]["plot"] == "training_short.png"
    assert (tmp_path / "training_short.png").stat().st_size > 0
    md = "\n".join(render({"training": training}))
    assert "train/loss 2.5 (min 2)" in md and "![training curves of short]" in md
