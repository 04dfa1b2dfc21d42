"""The training command: a resume is the same experiment (refused or recorded changes, the first
config.yaml kept), errors as one line, a crafted checkpoint refused without running code."""

import json
from pathlib import Path

import pytest
import torch

from medsft.training.runs import ResumeMismatch
from tests.helpers import ROOT, scalars, train, train_py

# LoRA: small checkpoints (the mode is not the point of these tests).
CONSTANT_LR = (
    "--model.optimizer.schedule",
    "constant",
    "--model.optimizer.warmup_steps",
    "0",
    "--model.finetune",
    "lora",
)


@pytest.mark.slow
def test_a_resume_refuses_a_changed_experiment_and_records_an_allowed_change(tmp_path, capsys):
    first = train(tmp_path, *CONSTANT_LR, "--trainer.max_steps", "2", name="exp")
    run = first.trainer.log_dir
    config = (tmp_path / "exp/version_0/config.yaml").read_text()
    resume = (*CONSTANT_LR, "--ckpt_path", "last")
    with pytest.raises(ResumeMismatch) as err:
        train(tmp_path, *resume, "--data.batch_size", "2", "--trainer.max_steps", "3", name="exp")
    assert str(err.value) == (
        "resuming with a changed experiment: data.batch_size: 4 -> 2; resume with the "
        "checkpoint's settings, or allow it on purpose with --allow_changed data.batch_size"
    )
    # The option the message names allows it; a longer max_steps is safe without asking. Both
    # are said and recorded in the resume's own config file.
    second = train(
        tmp_path,
        *resume,
        "--data.batch_size",
        "2",
        "--allow_changed",
        "data.batch_size",
        "--trainer.max_steps",
        "3",
        name="exp",
    )
    assert second.trainer.log_dir == run and second.trainer.global_step == 3
    changes = "data.batch_size: 4 -> 2, trainer.max_steps: 2 -> 3"
    assert f"resuming with changes: {changes}" in capsys.readouterr().out
    assert (tmp_path / "exp/version_0/config.yaml").read_text() == config  # never rewritten
    record = (tmp_path / "exp/version_0/config.resume-1.yaml").read_text()
    assert record.splitlines()[0].endswith(f"at step 2; changed: {changes}")
    assert "max_steps: 3" in record and "batch_size: 2" in record
    # An optimizer setting the restored state would keep is applied when allowed, not ignored.
    train(
        tmp_path,
        *resume,
        "--data.batch_size",
        "2",
        "--trainer.max_steps",
        "4",
        "--model.optimizer.lr",
        "0.001",
        "--allow_changed",
        "model.optimizer.lr",
        name="exp",
    )
    assert scalars(run, "train/lr") == pytest.approx([0.01, 0.01, 0.01, 0.001])
    assert (tmp_path / "exp/version_0/config.resume-2.yaml").exists()


@pytest.mark.slow
def test_a_chat_template_mismatch_is_one_error_line_with_the_reason(tmp_path, capsys):
    """A multi-line UserError: the reason is its first line, the example that follows is not
    printed; --debug lets the exception out (Python prints its traceback)."""
    from medsft.cli.train import cli_main
    from medsft.errors import UserError

    data = tmp_path / "think.jsonl"
    row = {
        "messages": [
            {"role": "user", "content": "头痛怎么办？"},
            {"role": "assistant", "content": "<think>\n想一想\n</think>\n\n多休息。"},
        ]
    }
    data.write_text(json.dumps(row, ensure_ascii=False) + "\n", encoding="utf-8")
    args = ("--data.source", str(data), "--data.preset", "messages")
    code, err = train_py(tmp_path, capsys, *args)
    assert code == 1
    assert err.strip().splitlines()[-1] == (
        f"error: {data}:1: field 'messages': the generation prompt is not a prefix of the "
        "rendered assistant turn 1; refusing to guess the mask."
    )
    with pytest.raises(UserError, match="the generation prompt is not a prefix") as raised:
        cli_main(
            [
                "--config",
                str(ROOT / "configs/demo.yaml"),
                "--trainer.logger.init_args.save_dir",
                str(tmp_path),
                "--data.val_fraction",
                "0",
                *args,
                "--debug",
            ]
        )
    assert "\n" in str(raised.value)  # the example the one-line error left out


class _Touch:
    """Unpickling this object creates a file: the code a crafted checkpoint could run."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


@pytest.mark.slow
def test_a_crafted_checkpoint_runs_nothing_and_is_one_error_line(tmp_path, capsys):
    marker = tmp_path / "code-ran"
    ckpt = tmp_path / "demo/version_0/checkpoints/last.ckpt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"global_step": 1, "state_dict": {}, "x": _Touch(marker)}, ckpt)
    assert torch.load(ckpt, weights_only=False) and marker.exists()  # the payload works
    marker.unlink()
    code, err = train_py(tmp_path, capsys, "--ckpt_path", "last")
    assert code == 1 and not marker.exists()
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err
    assert lines[0].startswith(f"error: refusing checkpoint {ckpt}: it holds Python objects")


@pytest.mark.slow
def test_a_longer_max_steps_on_resume_sets_the_rate_of_the_first_resumed_step(tmp_path):
    """The cosine schedule follows max_steps: after 2 of 2 steps the optimizer holds the old
    schedule's final rate; resumed to 4 steps, step 3 already takes the new schedule's rate."""
    from medsft.training.optim import OptimizerSettings, lr_factor

    cosine = ("--model.finetune", "lora", "--model.optimizer.warmup_steps", "0")
    train(tmp_path, *cosine, "--trainer.max_steps", "2", name="lr")
    train(tmp_path, *cosine, "--trainer.max_steps", "4", "--ckpt_path", "last", name="lr")
    settings = OptimizerSettings(lr=0.01, warmup_steps=0, min_lr_ratio=0.1)
    expected = [0.01 * lr_factor(s, settings, 2) for s in (0, 1)]
    expected += [0.01 * lr_factor(s, settings, 4) for s in (2, 3)]
    assert scalars(tmp_path / "lr/version_0", "train/lr") == pytest.approx(expected)


@pytest.mark.slow
def test_a_finished_run_whose_adapter_was_cut_short_is_written_again_on_resume(tmp_path, capsys):
    from safetensors.torch import load_file

    lora = ("--model.finetune", "lora", "--trainer.max_steps", "2")
    train(tmp_path, *lora, name="cut")
    adapter = tmp_path / "cut/version_0/adapter"
    weights = load_file(adapter / "adapter_model.safetensors")
    (adapter / "adapter_model.safetensors").unlink()  # what an interrupted older save left
    capsys.readouterr()
    train(tmp_path, *lora, "--ckpt_path", "last", name="cut")
    out = capsys.readouterr().out
    assert (
        f"but {adapter} has no adapter weights" in out and "writing it from the checkpoint" in out
    )
    again = load_file(adapter / "adapter_model.safetensors")
    assert again.keys() == weights.keys()
    assert all(torch.equal(again[k], weights[k]) for k in weights)
    assert sorted(p.name for p in adapter.parent.iterdir() if p.name.startswith(".")) == []
    train(tmp_path, *lora, "--ckpt_path", "last", name="cut")
    assert "nothing to train" in capsys.readouterr().out
