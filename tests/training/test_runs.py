"""medsft.training.runs: which checkpoint a resume takes, its version folder, and whether the resumed
config is the same experiment."""

import os
from pathlib import Path

import pytest
import torch

from medsft.errors import ConfigError
from medsft.training.checkpoint import CheckpointError
from medsft.training.runs import (
    CONFIG_KEY,
    ResumeMismatch,
    compare_configs,
    experiment_config,
    find_checkpoint,
    flatten,
    latest_config,
    read_checkpoint,
    remove_empty_run,
    resume_config_name,
    version_of,
)

OLD = experiment_config(
    {
        "seed_everything": 0,
        "trainer": {
            "max_steps": 40,
            "log_every_n_steps": 5,
            "devices": 1,
            "logger": {"init_args": {"version": 0}},
        },
        "model": {"optimizer": {"lr": 0.01, "betas": [0.9, 0.999]}, "lora": {"r": 16}},
        "data": {"batch_size": 2, "source": "a.jsonl", "num_workers": 0},
        "ckpt_path": None,
    },
    world_size=1,
)


def changed(**dotted):
    new = dict(OLD)
    new.update({k.replace("__", "."): v for k, v in dotted.items()})
    return new


def test_flatten_keeps_lists_and_drops_bookkeeping():
    assert flatten({"a": {"b": 1, "c": [1, 2], "d": {}}}) == {"a.b": 1, "a.c": [1, 2], "a.d": {}}
    assert "trainer.logger.init_args.version" not in OLD and "ckpt_path" not in OLD
    assert "trainer.devices" not in OLD and OLD["world_size"] == 1


def test_a_changed_batch_size_stops_the_resume_with_one_line_and_the_fix():
    with pytest.raises(ResumeMismatch) as err:
        compare_configs(OLD, changed(data__batch_size=4))
    assert str(err.value) == (
        "resuming with a changed experiment: data.batch_size: 2 -> 4; resume with the "
        "checkpoint's settings, or allow it on purpose with --allow_changed data.batch_size"
    )
    assert isinstance(err.value, ConfigError)
    allowed = compare_configs(OLD, changed(data__batch_size=4), allow=["data.batch_size"])
    assert allowed.describe() == "data.batch_size: 2 -> 4"


@pytest.mark.parametrize(
    "key,value",
    [
        ("data.source", "b.jsonl"),
        ("seed_everything", 1),
        ("model.lora.r", 8),
        ("world_size", 2),
        ("trainer.accumulate_grad_batches", 2),
        ("model.optimizer.lr", 0.001),
    ],
)
def test_every_experiment_key_is_refused_and_each_difference_listed(key, value):
    new = changed(**{key.replace(".", "__"): value}, data__batch_size=8)
    with pytest.raises(ResumeMismatch, match="changed experiment") as err:
        compare_configs(OLD, new)
    message = str(err.value)
    assert "\n" not in message and f"{key}: " in message and "data.batch_size: 2 -> 8" in message
    compare_configs(OLD, new, allow=[key, "data"])  # a section allows all its keys


def test_safe_keys_are_allowed_and_recorded():
    new = changed(trainer__max_steps=60, trainer__log_every_n_steps=1, data__num_workers=2)
    assert compare_configs(OLD, new).describe() == (
        "data.num_workers: 0 -> 2, trainer.log_every_n_steps: 5 -> 1, trainer.max_steps: 40 -> 60"
    )
    assert compare_configs(OLD, dict(OLD)).describe() == "nothing"


def test_optimizer_settings_the_restored_state_keeps_are_refused_even_when_allowed():
    with pytest.raises(ResumeMismatch, match="would not take effect: model.optimizer.betas"):
        compare_configs(
            OLD, changed(model__optimizer__betas=[0.9, 0.95]), allow=["model.optimizer.betas"]
        )


def test_each_resume_gets_its_own_config_file(tmp_path):
    assert resume_config_name(tmp_path) == "config.yaml"
    assert latest_config(tmp_path) is None
    (tmp_path / "config.yaml").write_text("a: 1\n")
    assert latest_config(tmp_path) == tmp_path / "config.yaml"
    assert resume_config_name(tmp_path) == "config.resume-1.yaml"
    for k in (1, 2, 10):
        (tmp_path / f"config.resume-{k}.yaml").write_text("a: 2\n")
    assert resume_config_name(tmp_path) == "config.resume-11.yaml"
    assert latest_config(tmp_path) == tmp_path / "config.resume-10.yaml"


def test_version_of_a_checkpoint(tmp_path):
    ckpt = tmp_path / "logs" / "demo" / "version_3" / "checkpoints" / "last.ckpt"
    assert version_of(ckpt, str(tmp_path / "logs"), "demo") == 3
    assert version_of(ckpt, str(tmp_path / "logs"), "other") is None
    assert version_of(tmp_path / "elsewhere" / "last.ckpt", str(tmp_path), "demo") is None


def save(path, step, config=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"global_step": step, "state_dict": {"w": torch.zeros(2)}}
    if config is not None:
        state[CONFIG_KEY] = {"config": config}
    torch.save(state, path)


def test_last_is_the_newest_checkpoint_of_the_run_name(tmp_path, capsys):
    older = tmp_path / "demo" / "version_0" / "checkpoints" / "last.ckpt"
    newer = tmp_path / "demo" / "version_1" / "checkpoints" / "last.ckpt"
    save(older, 3)
    save(newer, 5, OLD)
    os.utime(older, (1, 1))
    found = find_checkpoint("last", dirpath=None, save_dir=str(tmp_path), name="demo")
    assert found == newer and "resuming from" in capsys.readouterr().out
    info = read_checkpoint(found)
    assert info.step == 5 and info.config == OLD
    assert read_checkpoint(older).config is None  # an older medsft's checkpoint
    assert find_checkpoint(None, dirpath=None, save_dir=None, name=None) is None
    assert (
        find_checkpoint(
            "last", dirpath=str(tmp_path / "x"), save_dir=None, name=None, required=False
        )
        is None
    )
    with pytest.raises(ConfigError, match="no checkpoint matches"):
        find_checkpoint("last", dirpath=str(tmp_path / "x"), save_dir=None, name=None)
    # An older medsft's resumed run saved into last-v1.ckpt: the newest file wins, whatever its name.
    legacy = newer.with_name("last-v1.ckpt")
    save(legacy, 9, OLD)
    os.utime(newer, (2, 2))
    assert find_checkpoint("last", dirpath=None, save_dir=str(tmp_path), name="demo") == legacy


def test_two_spellings_of_one_path_are_the_same_experiment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data/x.jsonl").write_text("")
    old = {**OLD, "data.source": "data/x.jsonl", "data.val_source": "data/*.jsonl"}
    for source, val in (
        ("./data/x.jsonl", "./data/*.jsonl"),
        (str(tmp_path / "data/x.jsonl"), str(tmp_path / "data/*.jsonl")),
    ):
        new = {**old, "data.source": source, "data.val_source": val}
        assert compare_configs(old, new).allowed == []
    with pytest.raises(ResumeMismatch, match="data.source: 'data/x.jsonl' -> 'data/y.jsonl'"):
        compare_configs(old, {**old, "data.source": "data/y.jsonl"})


class Payload:
    """Unpickling this runs code: it creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_crafted_checkpoint_is_refused_without_running_its_code(tmp_path):
    marker = tmp_path / "code-ran"
    ckpt = tmp_path / "last.ckpt"
    torch.save({"global_step": 1, "state_dict": {}, "x": Payload(marker)}, ckpt)
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(ckpt)
    assert not marker.exists()
    message = str(err.value)
    assert message.startswith(f"refusing checkpoint {ckpt}: it holds Python objects")
    assert "\n" not in message


def test_an_empty_run_folder_is_removed_a_resumed_one_kept(tmp_path):
    run = tmp_path / "version_0"
    run.mkdir()
    remove_empty_run(str(run), step=0, resumed=True)
    remove_empty_run(str(run), step=3, resumed=False)
    assert run.exists()
    remove_empty_run(str(run), step=0, resumed=False)
    assert not run.exists()


def test_a_checkpoint_saved_before_the_layout_move_resumes_after_it(tmp_path, monkeypatch):
    """tests/fixtures/pre_layout_run: `train.py --config configs/demo.yaml --model.finetune lora
    --trainer.max_steps 2 --data.val_fraction 0 ...` as the code before the package layout wrote
    it (2 steps, LoRA). Resumed by the current code, it continues from step 2."""
    import shutil

    from lightning.pytorch import Callback

    from medsft.cli.train import main

    root = Path(__file__).resolve().parents[2]
    run = tmp_path / "logs" / "premove" / "version_0"
    shutil.copytree(root / "tests" / "fixtures" / "pre_layout_run", run)
    # The run's config names its data relative to the folder it ran in, as users run it.
    (tmp_path / "data" / "sample").mkdir(parents=True)
    shutil.copy(root / "data" / "sample" / "huatuo_sample.jsonl", tmp_path / "data" / "sample")
    monkeypatch.chdir(tmp_path)

    class FirstStep(Callback):
        def on_train_start(self, trainer, pl_module):
            self.step = trainer.global_step

    first = FirstStep()
    args = ["--config", str(run / "config.yaml"), "--trainer.max_steps", "3"]
    cli = main([*args, "--ckpt_path", "last"], callbacks=[first])
    assert first.step == 2 and cli.trainer.global_step == 3
    assert read_checkpoint(run / "checkpoints" / "last.ckpt").step == 3
    assert not list((run / "checkpoints").glob("last-v*"))  # its config asks for versions
    assert "trainer.max_steps" in (run / "config.resume-1.yaml").read_text(encoding="utf-8")
    assert (run / "adapter" / "adapter_model.safetensors").is_file()


def test_ckpt_path_last_is_the_newest_state_across_resumes_and_crashes(tmp_path):
    """A finished run resumed for more steps saves its periodic checkpoints into last.ckpt (an
    older medsft wrote last-v1.ckpt, which `--ckpt_path last` never read: a crash then redid
    every step since the first resume); a crash at step 7 resumes from the save at step 6, in
    the same folder, with the current and the previous checkpoint kept."""
    from lightning.pytorch import Callback

    from tests.helpers import train

    class Crash(Callback):
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == 7:
                raise RuntimeError("crashed at step 7")

    class FirstStep(Callback):
        def on_train_batch_start(self, trainer, *args):
            self.step = getattr(self, "step", trainer.global_step)

    every_2 = ["--model.finetune", "lora", "--checkpoint.every_n_train_steps", "2"]
    run = Path(train(tmp_path, *every_2, "--trainer.max_steps", "3").trainer.log_dir)
    more = [*every_2, "--trainer.max_steps", "9", "--ckpt_path", "last"]
    with pytest.raises(RuntimeError, match="crashed at step 7"):
        train(tmp_path, *more, callbacks=[Crash()])
    folder = run / "checkpoints"
    assert sorted(p.name for p in folder.glob("*.ckpt")) == ["last.ckpt", "last.prev.ckpt"]
    assert read_checkpoint(folder / "last.ckpt").step == 6
    first = FirstStep()
    cli = train(tmp_path, *more, callbacks=[first])
    assert first.step == 6 and cli.trainer.global_step == 9 and Path(cli.trainer.log_dir) == run
    assert read_checkpoint(folder / "last.ckpt").step == 9
