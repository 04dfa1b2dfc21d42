"""The training command: a resume is the same experiment (refused or recorded changes, the first
config.yaml kept), errors as one line, a crafted checkpoint refused without running code."""

import json
import os
import subprocess
import sys

import pytest
import torch

from medsft.runs import ResumeMismatch
from tests.helpers import ROOT, scalars, train

# LoRA: small checkpoints (the mode is not the point of these tests).
CONSTANT_LR = ("--model.optimizer.schedule", "constant", "--model.optimizer.warmup_steps", "0",
               "--model.finetune", "lora")  # fmt: skip


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
    second = train(tmp_path, *resume, "--data.batch_size", "2", "--allow_changed",
                   "data.batch_size", "--trainer.max_steps", "3", name="exp")  # fmt: skip
    assert second.trainer.log_dir == run and second.trainer.global_step == 3
    changes = "data.batch_size: 4 -> 2, trainer.max_steps: 2 -> 3"
    assert f"resuming with changes: {changes}" in capsys.readouterr().out
    assert (tmp_path / "exp/version_0/config.yaml").read_text() == config  # never rewritten
    record = (tmp_path / "exp/version_0/config.resume-1.yaml").read_text()
    assert record.splitlines()[0].endswith(f"at step 2; changed: {changes}")
    assert "max_steps: 3" in record and "batch_size: 2" in record
    # An optimizer setting the restored state would keep is applied when allowed, not ignored.
    train(tmp_path, *resume, "--data.batch_size", "2", "--trainer.max_steps", "4",
          "--model.optimizer.lr", "0.001", "--allow_changed", "model.optimizer.lr",
          name="exp")  # fmt: skip
    assert scalars(run, "train/lr") == pytest.approx([0.01, 0.01, 0.01, 0.001])
    assert (tmp_path / "exp/version_0/config.resume-2.yaml").exists()


def run_train_py(tmp_path, *args, debug=False):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    env.pop("MEDSFT_DEBUG", None)
    if debug:
        env["MEDSFT_DEBUG"] = "1"
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / "configs/demo.yaml"),
         "--trainer.logger.init_args.save_dir", str(tmp_path), "--data.val_fraction", "0",
         "--trainer.enable_progress_bar", "false", *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


@pytest.mark.slow
def test_a_chat_template_mismatch_is_one_error_line_with_the_reason(tmp_path):
    """A multi-line UserError: the reason is its first line, the example that follows is not
    printed; MEDSFT_DEBUG=1 shows the traceback."""
    data = tmp_path / "think.jsonl"
    row = {"messages": [{"role": "user", "content": "头痛怎么办？"},
                        {"role": "assistant", "content": "<think>\n想一想\n</think>\n\n多休息。"}]}  # fmt: skip
    data.write_text(json.dumps(row, ensure_ascii=False) + "\n", encoding="utf-8")
    args = ("--data.source", str(data), "--data.preset", "messages")
    result = run_train_py(tmp_path, *args)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last == (
        f"error: {data}:1: field 'messages': the generation prompt is not a prefix of the "
        "rendered assistant turn 1; refusing to guess the mask."
    )
    # --debug: the exception itself comes out (Python prints its traceback). Checked in this
    # process through the same entry point: one interpreter start fewer.
    from medsft.cli.train import cli_main
    from medsft.errors import UserError

    with pytest.raises(UserError, match="the generation prompt is not a prefix") as err:
        cli_main(["--config", str(ROOT / "configs/demo.yaml"), "--trainer.logger.init_args.save_dir",
                  str(tmp_path), "--data.val_fraction", "0", *args, "--debug"])  # fmt: skip
    assert "\n" in str(err.value)  # the example the one-line error left out


@pytest.mark.slow
def test_a_crafted_checkpoint_runs_nothing_and_is_one_error_line(tmp_path):
    marker = tmp_path / "code-ran"
    ckpt = tmp_path / "demo/version_0/checkpoints/last.ckpt"
    ckpt.parent.mkdir(parents=True)
    payload = (
        "import pathlib, torch\n"
        "class P:\n    def __reduce__(self):\n"
        f"        return (pathlib.Path.touch, (pathlib.Path({str(marker)!r}),))\n"
        f"torch.save({{'global_step': 1, 'state_dict': {{}}, 'x': P()}}, {str(ckpt)!r})\n"
    )
    subprocess.run([sys.executable, "-c", payload], check=True)
    assert torch.load(ckpt, weights_only=False) and marker.exists()  # the payload works
    marker.unlink()
    result = run_train_py(tmp_path, "--ckpt_path", "last")
    assert result.returncode == 1 and not marker.exists()
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith(f"error: refusing checkpoint {ckpt}: it holds Python objects")
