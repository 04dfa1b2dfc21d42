"""medsft.evaluation.training: a run's TensorBoard scalars and their summary."""

from __future__ import annotations

from medsft.evaluation.training import training_scalars, training_summary


def test_scalars_are_read_from_the_run_or_its_parent_and_summarised(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    assert training_scalars(tmp_path) == {}
    with SummaryWriter(str(tmp_path)) as writer:
        for step, loss in enumerate([3.0, 1.5, 2.0]):
            writer.add_scalar("train/loss", loss, step)
    run = tmp_path / "adapter"  # a model folder inside the run: its logs are one level up
    run.mkdir()
    scalars = training_scalars(run)
    assert scalars == {"train/loss": [(0, 3.0), (1, 1.5), (2, 2.0)]}
    summary = training_summary(run, scalars)["scalars"]["train/loss"]
    assert summary == {"last": 2.0, "min": 1.5, "steps": 3}
