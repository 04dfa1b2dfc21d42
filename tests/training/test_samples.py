"""Sample answers in TensorBoard: train.py on the demo config logs, at each validation, the same
validation prompts answered greedily (prompt, reference, answer, step), for full fine-tuning and
LoRA; `--samples.n 0` turns it off; both are saved in config.yaml. Under two-process DDP rank 0
samples and the run finishes, under FSDP2 sampling is skipped with the reason logged:
tests/test_train.py's two-process runs check both."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from medsft.training.samples import choose_prompts
from tests.helpers import ROOT, scalars, texts

VALIDATE_TWICE = [
    # The demo's 64 rows hold out one validation example at 0.1: 0.3 gives several.
    "--data.val_fraction",
    "0.3",
    "--trainer.max_steps",
    "4",
    "--trainer.val_check_interval",
    "2",
    "--trainer.limit_val_batches",
    "1",
    "--trainer.num_sanity_val_steps",
    "0",
    "--trainer.enable_progress_bar",
    "false",
    "--samples.n",
    "2",
    "--samples.max_new_tokens",
    "6",
]


def train(tmp_path: Path, *args: str):
    from medsft.cli.train import main

    return main(
        [
            "--config",
            str(ROOT / "configs/demo.yaml"),
            "--data.source",
            str(ROOT / "data/sample/huatuo_sample.jsonl"),
            "--trainer.logger.init_args.save_dir",
            str(tmp_path),
            *VALIDATE_TWICE,
            *args,
        ]
    )


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """A full fine-tuning run of the demo config that validates (and samples) twice."""
    return train(tmp_path_factory.mktemp("full"), "--model.optimizer.lr", "0.001")


@pytest.mark.parametrize("finetune", ["full", pytest.param("lora", marks=pytest.mark.slow)])
def test_each_validation_logs_the_same_prompts_answers(tmp_path, finetune, request):
    if finetune == "full":
        cli = request.getfixturevalue("full_run")
    else:
        cli = train(tmp_path, "--model.finetune", finetune, "--model.optimizer.lr", "0.001")
    run = Path(cli.trainer.log_dir)
    logged = texts(run)
    assert sorted(logged) == ["samples/0/text_summary", "samples/1/text_summary"]
    prompts = choose_prompts(cli.datamodule, 2, seed=0, pool=64)
    for k, prompt in enumerate(prompts):
        entries = logged[f"samples/{k}/text_summary"]
        assert [step for step, _ in entries] == [2, 4]  # one entry per validation
        for step, text in entries:
            assert text.startswith(f"**step {step}** · {prompt['where']}")
            question = prompt["messages"][-1]["content"]
            reference = prompt["reference"].splitlines()[0]
            assert f"> {question.splitlines()[0]}" in text and f"> {reference}" in text
            answer = (
                r"\*\*Answer\*\* \(greedy; \d new tokens, (hit max_new_tokens|ended its turn)\)"
            )
            assert re.search(answer, text), text
    assert len(scalars(run, "samples/seconds")) == 2
    saved = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    assert saved["samples"] == {"n": 2, "max_new_tokens": 6, "seed": 0, "pool": 64}


def test_prompts_come_from_the_validation_split_chosen_by_seed(tmp_path):
    from medsft.data import SFTDataModule
    from medsft.data.schema import in_validation, iter_conversations

    dm = SFTDataModule(source=str(ROOT / "data/sample/huatuo_sample.jsonl"), val_fraction=0.3)
    validation = {
        c.row.where
        for c in iter_conversations(dm.data_source("val"))
        if in_validation(c.key, dm.val_fraction)
    }
    draws = [[p["where"] for p in choose_prompts(dm, 4, seed, 256)] for seed in (0, 0, 1)]
    assert draws[0] == draws[1] and draws[0] != draws[2]  # fixed by the seed
    assert all(len(d) == 4 and set(d) <= validation for d in draws)
    assert len(choose_prompts(dm, 100, 0, 256)) == len(validation)  # no more than there are
    assert [p["where"] for p in choose_prompts(dm, 4, 0, pool=4)] == sorted(
        validation, key=lambda w: int(w.rsplit(":", 1)[1])
    )[:4]  # a pool of four: the first four, nothing read beyond


def test_samples_n_0_turns_it_off_and_sampling_changes_no_training(tmp_path, full_run):
    cli = train(tmp_path, "--model.optimizer.lr", "0.001", "--samples.n", "0")
    run, sampled = Path(cli.trainer.log_dir), Path(full_run.trainer.log_dir)
    assert texts(run) == {}
    assert yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))["samples"]["n"] == 0
    # Greedy answers draw no random number and leave the model as they found it.
    for tag in ("train/loss", "train/grad_norm", "val/loss"):
        assert scalars(run, tag) == scalars(sampled, tag), tag


def test_impossible_settings_say_how_to_fix(tmp_path, capsys):
    from tests.helpers import train_py

    code, err = train_py(tmp_path, capsys, "--samples.n", "-1")
    assert code == 1 and "samples.n must be >= 0 (0: off)" in err
