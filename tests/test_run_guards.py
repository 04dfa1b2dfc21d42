"""train.py under real-run accidents: truncation and drops reported as they happen, damaged
checkpoints, configs by bare name, every shipped config instantiated, two torchrun "nodes"."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from medsft.cli.train import SFTCLI, config_by_name, main
from medsft.training.checkpoint import previous_path
from tests.helpers import ROOT, TRAIN_CONFIGS, scalars, train


def test_truncation_is_logged_and_warned_before_a_pass_ends(tmp_path, caplog):
    """At max_length 130, rows 0 and 3 of four_rows lose answer tokens; rows 1 and 2 fit."""
    common = [
        "--data.max_length",
        "130",
        "--data.batch_size",
        "1",
        "--trainer.max_steps",
        "2",
        "--model.finetune",
        "lora",
    ]
    with caplog.at_level("WARNING", logger="medsft.data"):
        cli = train(tmp_path, *common, name="right")
    run = cli.trainer.log_dir
    assert scalars(run, "data/examples") == [1, 2]  # half a pass: rows 0 and 1
    assert scalars(run, "data/truncated") == [1, 1]
    assert scalars(run, "data/truncated_share") == [1.0, 0.5]
    assert "1 of 1 examples so far (100.0%) had their answer cut at max_length=130" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="medsft.data"):
        cli = train(tmp_path, *common, "--data.truncation", "drop", name="drop")
    run = cli.trainer.log_dir
    # Row 0 is dropped; rows 1 and 2 are the two steps.
    assert scalars(run, "data/truncated") == [0, 0]
    assert scalars(run, "data/dropped") == [1, 1] and scalars(run, "data/rows") == [2, 3]
    assert "1 of 2 rows read so far (50.0%) were dropped" in caplog.text


def test_epochs_without_data_stop_the_run(tmp_path, monkeypatch):
    """Past the start-up check (data that vanished, or a stream that yields nothing), Lightning
    would loop over empty epochs forever; the run stops after two instead."""
    from medsft.data import EmptySource, SFTDataModule

    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    monkeypatch.setattr(SFTDataModule, "check_not_empty", lambda self: None)
    with pytest.raises(EmptySource, match=f"2 training epochs in a row had no batch.*{empty}"):
        # max_epochs bounds the loop should the guard fail: then the run would end "successfully".
        train(tmp_path, "--data.source", str(empty), "--trainer.max_epochs", "50")


@pytest.mark.slow
def test_resume_from_a_damaged_checkpoint_uses_the_previous_one(tmp_path, capsys):
    """A save every step: the one before the last is kept beside it."""
    # LoRA: a checkpoint per step stays small (the run's mode is not the point here).
    every = ("--checkpoint.every_n_train_steps", "1", "--model.finetune", "lora")
    cli = train(tmp_path, *every, "--trainer.max_steps", "4", name="resume")
    last = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    data = last.read_bytes()
    for damage in (b"", data[: len(data) // 2]):  # the two states a killed copy left
        start = torch.load(previous_path(last), weights_only=False)["global_step"]
        last.write_bytes(damage)
        resumed = train(
            tmp_path, *every, "--trainer.max_steps", "5", "--ckpt_path", str(last), name="resume"
        )
        assert "resuming from the previous one" in capsys.readouterr().out
        assert resumed.trainer.global_step == 5
        assert resumed.trainer.log_dir == cli.trainer.log_dir  # the same run continues
        assert len(scalars(resumed.trainer.log_dir, "train/loss")) == 5
    assert start == 4  # the first resume (from step 3) saved steps 4 and 5


def test_a_bare_config_name_is_found_in_configs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert config_by_name(["--config", "lora.yaml", "--x", "1"]) == [
        "--config",
        str(ROOT / "configs/lora.yaml"),
        "--x",
        "1",
    ]
    assert config_by_name(["--config=demo"]) == [f"--config={ROOT / 'configs/demo.yaml'}"]
    assert "using" in capsys.readouterr().out
    (tmp_path / "lora.yaml").write_text("seed_everything: 1\n")  # a file here wins
    assert config_by_name(["--config", "lora.yaml"]) == ["--config", "lora.yaml"]
    with pytest.raises(SystemExit) as done:
        main(["--config", "demo.yaml", "--print_config"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert f"using {ROOT / 'configs/demo.yaml'}" in out and "name_or_path: random:tiny" in out


class _Offline(SFTCLI):
    """The shipped configs as parsed and instantiated by train.py, minus what needs the hub or
    a GPU: no reachability probe, and the Trainer on one CPU device."""

    def before_instantiate_classes(self) -> None:
        pass

    def instantiate_trainer(self, **kwargs):
        return super().instantiate_trainer(accelerator="cpu", devices=1, **kwargs)


@pytest.mark.parametrize("config", TRAIN_CONFIGS, ids=lambda p: Path(p).name)
def test_every_training_config_instantiates(config, monkeypatch, tmp_path):
    """Model, data and Trainer classes built from each config (no weights are loaded)."""
    import yaml

    from medsft.data import SFTDataModule
    from medsft.training.module import SFTModule

    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # 8-bit optimizers need one
    args = ["--config", config, "--trainer.logger.init_args.save_dir", str(tmp_path)]
    cli = _Offline(SFTModule, SFTDataModule, run=False, args=args)
    raw = yaml.safe_load(Path(config).read_text())
    assert isinstance(cli.model, SFTModule) and isinstance(cli.datamodule, SFTDataModule)
    assert cli.model.model is None  # built in configure_model, on each rank's device
    for key, value in raw["model"].items():
        if not isinstance(value, dict):
            assert cli.model.hparams[key] == value, key
    for key, value in raw["data"].items():
        assert cli.datamodule.hparams[key] == value, key
    model = raw["model"]
    assert cli.datamodule.tokenizer_name == model.get("tokenizer", model["name_or_path"])
    assert cli.trainer.max_steps == raw["trainer"]["max_steps"]
    if raw["trainer"].get("strategy") == "fsdp2":
        from medsft.training.fsdp import FSDP2Strategy

        assert isinstance(cli.trainer.strategy, FSDP2Strategy)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_torchrun_nodes_match_one_process(tmp_path):
    """`--nnodes 2 --nproc_per_node 1` on 127.0.0.1, batch 2 per node: the losses of one
    process with batch 4 (uneven shards: 13 rows)."""
    data = tmp_path / "rows.jsonl"
    with open(ROOT / "data/sample/huatuo_sample.jsonl", encoding="utf-8") as f:
        data.write_text("".join(f.readline() for _ in range(13)), encoding="utf-8")
    common = [
        "--data.source",
        str(data),
        "--data.val_fraction",
        "0",
        "--data.shuffle_buffer",
        "1",
        "--trainer.max_steps",
        "4",
        "--trainer.log_every_n_steps",
        "1",
        "--trainer.val_check_interval",
        "null",
        "--trainer.check_val_every_n_epoch",
        "1",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.logger.init_args.save_dir",
        str(tmp_path),
    ]
    one = Path(train(tmp_path, *common, "--data.batch_size", "4", name="one").trainer.log_dir)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    port = _free_port()
    nodes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes",
                "2",
                "--nproc_per_node",
                "1",
                "--node_rank",
                str(rank),
                "--master_addr",
                "127.0.0.1",
                "--master_port",
                str(port),
                str(ROOT / "train.py"),
                "--config",
                str(ROOT / "configs/demo.yaml"),
                *common,
                "--data.batch_size",
                "2",
                "--trainer.num_nodes",
                "2",
                "--trainer.strategy",
                "ddp",
                "--trainer.logger.init_args.name",
                "nodes",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [node.communicate(timeout=600)[0] for node in nodes]
    assert all(node.returncode == 0 for node in nodes), outputs[0][-3000:] + outputs[1][-3000:]
    two = tmp_path / "nodes" / "version_0"
    for tag in ("train/loss", "train/supervised_tokens", "train/lr"):
        a, b = scalars(one, tag), scalars(two, tag)
        assert len(a) == len(b) == 4 and a == pytest.approx(b, rel=1e-5), tag
