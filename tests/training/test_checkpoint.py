"""Checkpoints that survive kills: whole-file renames, the previous one kept, resume fallback."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from medsft.training.checkpoint import (
    CheckpointError,
    SafeCheckpointIO,
    check_writable,
    previous_path,
    remove_orphans,
    usable_checkpoint,
)

ROOT = Path(__file__).resolve().parents[2]


def state(value: float, size: int = 1000) -> dict:
    return {"weights": torch.full((size,), value), "global_step": int(value)}


def test_save_keeps_the_previous_checkpoint_and_no_temp_file(tmp_path):
    io, path = SafeCheckpointIO(), tmp_path / "ckpt" / "last.ckpt"
    io.save_checkpoint(state(1), path)
    assert not previous_path(path).exists()
    io.save_checkpoint(state(2), path)
    io.save_checkpoint(state(3), path)
    assert io.load_checkpoint(path)["global_step"] == 3
    assert io.load_checkpoint(previous_path(path))["global_step"] == 2
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt", "last.prev.ckpt"]
    io.remove_checkpoint(path)
    assert list(path.parent.iterdir()) == []


def test_a_failed_save_raises_and_leaves_the_old_checkpoint(tmp_path):
    io, path = SafeCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint(state(1), path)
    with pytest.raises(Exception, match="pickle"):
        io.save_checkpoint({"unpicklable": lambda: None}, path)
    assert io.load_checkpoint(path)["global_step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def _dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(done.stdout)


def test_orphans_of_dead_saves_are_removed_live_ones_kept(tmp_path):
    dead = tmp_path / f".last.ckpt.tmp-{_dead_pid()}"
    live = tmp_path / f".last.ckpt.tmp-{os.getpid()}"
    dead.write_bytes(b"partial")
    live.write_bytes(b"in progress")
    assert remove_orphans(tmp_path) == [dead]
    assert live.exists()


def _save_forever(path: Path, ready) -> None:
    import tempfile

    tempfile.tempdir = "/dev/shm"  # where Lightning's own writer staged files: another filesystem
    io, step = SafeCheckpointIO(), 0
    ready.set()
    while True:
        step += 1
        io.save_checkpoint(
            {"weights": torch.full((4_000_000,), float(step)), "global_step": step}, path
        )


def test_kill_9_during_saves_never_loses_the_checkpoint(tmp_path):
    """16 MB saves in a loop, killed at random moments: a whole checkpoint always remains."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")  # a forked saver starts in milliseconds
    path = tmp_path / "last.ckpt"
    rng, kills, steps = random.Random(0), 0, []
    while kills < 12:
        ready = ctx.Event()
        proc = ctx.Process(target=_save_forever, args=(path, ready))
        proc.start()
        ready.wait(30)
        time.sleep(rng.uniform(0.05, 0.5))
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        if not path.exists() and not previous_path(path).exists():
            continue  # killed before its first save finished: nothing was promised yet
        kills += 1
        good = usable_checkpoint(path)
        loaded = torch.load(good, weights_only=True)
        assert loaded["weights"].eq(loaded["global_step"]).all()
        steps.append(loaded["global_step"])
    SafeCheckpointIO().save_checkpoint(state(0), path)  # the next save clears the dead ones' files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt", "last.prev.ckpt"], steps


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage"])
def test_usable_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys, damage):
    io, path = SafeCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint(state(1), path)
    io.save_checkpoint(state(2), path)
    data = path.read_bytes()
    path.write_bytes(
        {"empty": b"", "truncated": data[: len(data) // 2], "garbage": b"x" * 99}[damage]
    )
    assert usable_checkpoint(path) == previous_path(path)
    assert "resuming from the previous one" in capsys.readouterr().out
    assert io.load_checkpoint(path)["global_step"] == 1  # loading falls back the same way
    previous_path(path).write_bytes(b"")
    with pytest.raises(CheckpointError, match="no usable checkpoint.*0 bytes"):
        usable_checkpoint(path)
    with pytest.raises(CheckpointError, match="cannot load checkpoint"):
        io.load_checkpoint(path)


def test_distributed_checkpoints_need_their_metadata(tmp_path):
    folder = tmp_path / "last.ckpt"
    folder.mkdir()
    with pytest.raises(CheckpointError, match=r"without \.metadata"):
        usable_checkpoint(folder)
    (folder / ".metadata").write_bytes(b"index")
    assert usable_checkpoint(folder) == folder


def test_unwritable_checkpoint_folders_are_refused(tmp_path):
    check_writable(tmp_path / "new" / "deeper")  # created later; its parent is writable
    (tmp_path / "file").write_text("")
    with pytest.raises(CheckpointError, match="is a file"):
        check_writable(tmp_path / "file" / "checkpoints")
    with pytest.raises(CheckpointError, match="not writable"):
        check_writable("/proc/medsft-checkpoints")  # unwritable even for root


def test_train_refuses_an_unwritable_checkpoint_folder_before_training(tmp_path):
    from medsft.cli.train import main

    (tmp_path / "file").write_text("")
    with pytest.raises(CheckpointError, match="checkpoint.dirpath"):
        main(
            [
                "--config",
                str(ROOT / "configs/demo.yaml"),
                "--trainer.logger.init_args.save_dir",
                str(tmp_path),
                "--checkpoint.dirpath",
                str(tmp_path / "file" / "ckpt"),
            ]
        )


def test_sharded_checkpoints_are_renamed_into_place_whole(tmp_path, monkeypatch):
    """FSDP2's distributed checkpoints (one process here): a failed save leaves the last good
    directory and no temp folder; a good one keeps the one it replaces."""
    import lightning.pytorch.strategies.model_parallel as mp

    from medsft.training.fsdp import FSDP2Strategy

    strategy, path = FSDP2Strategy(), tmp_path / "last.ckpt"

    def save(step):
        strategy.save_checkpoint(
            {"state_dict": {"w": torch.full((8,), float(step))}, "global_step": step}, path
        )

    def step_of(folder):
        return torch.load(folder / "meta.pt", weights_only=False)["global_step"]

    save(1)
    save(2)
    assert usable_checkpoint(path) == path and step_of(path) == 2
    assert step_of(previous_path(path)) == 1

    def killed_midway(state, folder):
        (Path(folder) / "__0_0.distcp").write_bytes(b"half a shard")
        raise KeyboardInterrupt

    monkeypatch.setattr(mp, "_distributed_checkpoint_save", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        save(3)
    assert step_of(path) == 2 and step_of(previous_path(path)) == 1
    assert b"half a shard" not in (path / "__0_0.distcp").read_bytes()  # step 2's shards, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt", "last.prev.ckpt"]
    strategy.remove_checkpoint(path)
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_is_one_line_naming_folder_sizes_and_the_kept_checkpoint(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    io, path = SafeCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint(state(1), path)
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: Usage(10**9, 10**9 - 1500, 1500))

    def full_disk(obj, f):
        f.write(b"x" * 100)
        # What torch.save raises when the disk fills mid-write: the zip writer's error.
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointError) as err:
        io.save_checkpoint(state(2), path)
    assert str(err.value) == (
        f"cannot save checkpoint: no space left in {tmp_path} (needs about 8.0 KB, 1.5 KB "
        f"free); the previous checkpoint {path} is kept; free space or set "
        "--checkpoint.dirpath elsewhere"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no temp file left
    monkeypatch.undo()
    assert io.load_checkpoint(path)["global_step"] == 1

    def enospc(obj, f):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", enospc)
    with pytest.raises(CheckpointError, match="no space left in .*no earlier checkpoint"):
        io.save_checkpoint(state(2), tmp_path / "new" / "last.ckpt")


def test_the_start_up_check_warns_when_one_checkpoint_does_not_fit(tmp_path, monkeypatch, caplog):
    import shutil
    from collections import namedtuple

    from medsft.training.checkpoint import check_free_space, checkpoint_bytes

    module = torch.nn.Linear(10, 10)  # 110 parameters: 440 bytes + 880 of Adam moments
    assert checkpoint_bytes(module) == 1320
    module.weight.requires_grad_(False)
    module.finetune = "lora"  # only the trainable bias is saved and optimized
    assert checkpoint_bytes(module) == 10 * 4 * 3
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: Usage(10**6, 10**6 - 1000, 1000))
    assert check_free_space(tmp_path / "not" / "yet", 999)
    with caplog.at_level("WARNING", logger="medsft.training.checkpoint"):
        assert not check_free_space(tmp_path / "not" / "yet", 1320)
    assert "has 1.0 KB free, less than one checkpoint of this model (about 1.3 KB)" in caplog.text


def test_a_checkpoint_that_would_run_code_is_refused_on_load(tmp_path):
    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"global_step": 1, "x": Payload()}, tmp_path / "last.ckpt")
    with pytest.raises(CheckpointError, match="refusing checkpoint .* Python objects"):
        SafeCheckpointIO().load_checkpoint(tmp_path / "last.ckpt")
    assert not marker.exists()


def test_the_size_estimate_counts_a_shared_storage_once():
    """A tied embedding and output head are one storage under two names: torch.save writes it
    once, and the disk-full message's estimate says so."""
    from medsft.training.checkpoint import state_bytes

    embedding = torch.nn.Embedding(100, 8)
    head = torch.nn.Linear(8, 100, bias=False)
    head.weight = embedding.weight
    saved = {"state_dict": {"embed.weight": embedding.weight, "head.weight": head.weight}}
    assert state_bytes(saved) == 100 * 8 * 4
    assert state_bytes({**saved, "other": torch.zeros(10)}) == 100 * 8 * 4 + 40


def test_a_folder_is_written_whole_or_not_at_all(tmp_path):
    from medsft.training.checkpoint import write_folder

    target = tmp_path / "model"
    target.mkdir()
    (target / "config.json").write_text("{}")  # what an interrupted older save left

    def fails(folder):
        (folder / "model.safetensors").write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_folder(target, fails)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # untouched, no temp left
    assert sorted(p.name for p in target.iterdir()) == ["config.json"]

    dead = tmp_path / ".model.tmp-999999999"  # a killed save's temp folder
    dead.mkdir()

    def writes(folder):
        (folder / "model.safetensors").write_bytes(b"weights")
        (folder / "tokenizer_config.json").write_text("{}")

    assert write_folder(target, writes) == target
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert sorted(p.name for p in target.iterdir()) == [
        "model.safetensors",
        "tokenizer_config.json",
    ]


LORA = ("--model.finetune", "lora")


def test_last_is_saved_by_training_time_with_its_cost_and_one_previous_kept(tmp_path, capsys):
    """`every_n_minutes` alone (no step interval): a save at each step once the time is up;
    each prints and logs its cost; the final step is not saved twice; two files are kept."""
    from tests.helpers import scalars, train

    run = train(
        tmp_path, *LORA, "--checkpoint.every_n_minutes", "1e-9", "--trainer.max_steps", "3"
    ).trainer.log_dir
    saves = [
        line for line in capsys.readouterr().out.splitlines() if line.startswith("checkpoint:")
    ]
    folder = Path(run) / "checkpoints"
    assert [line.split(" saved")[0] for line in saves] == [
        "checkpoint: step 1",
        "checkpoint: step 2",
        "checkpoint: step 3",
    ]
    assert all(f"to {folder / 'last.ckpt'} in " in line for line in saves)
    assert len(scalars(run, "checkpoint/save_s")) == 3
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt", "last.prev.ckpt"]


def test_a_validation_stopped_by_a_crash_runs_when_the_run_resumes(tmp_path):
    """Lightning saves step 4's checkpoint, then validates; a resume from it would count that
    validation as done and the curve would miss its point for good."""
    from tests.helpers import four_rows, scalars, train

    every_2 = (
        *LORA,
        "--data.val_source",
        four_rows(tmp_path),
        "--trainer.val_check_interval",
        "2",
        "--trainer.check_val_every_n_epoch",
        "null",
        "--checkpoint.every_n_train_steps",
        "2",
    )
    crash = '[{"class_path": "tests.resume_helpers.CrashInValidation", "init_args": {"step": 4}}]'
    with pytest.raises(RuntimeError, match="crash while validating step 4"):
        train(tmp_path, *every_2, "--trainer.callbacks", crash, name="val")
    run = tmp_path / "val/version_0"
    assert torch.load(run / "checkpoints/last.ckpt", weights_only=True)["global_step"] == 4
    train(tmp_path, *every_2, "--ckpt_path", "last", name="val")
    assert len(scalars(run, "val/loss")) == 3  # steps 2, 4 (after the resume) and 6, once each


def test_several_ranks_turn_the_time_interval_into_steps_at_the_pace_they_agree_on(monkeypatch):
    """No collective at every step: one, ten steps after a save, on the slowest rank's time."""
    from types import SimpleNamespace

    import medsft.training.checkpoint as module

    clock = [1000.0]
    monkeypatch.setattr(module.time, "monotonic", lambda: clock[0])
    reduced = []

    def reduce(tensor, reduce_op):
        reduced.append(reduce_op)
        return tensor * 1.5  # the slowest rank took half as long again

    trainer = SimpleNamespace(
        world_size=2, global_step=0, strategy=SimpleNamespace(root_device="cpu", reduce=reduce)
    )
    callback = module.RunCheckpoint(every_n_minutes=1)
    up = []
    for step in range(1, 41):
        callback._step_before, trainer.global_step = step - 1, step
        clock[0] += 2.0  # this rank: 2 s a step, the slowest 3 s: 20 steps a minute
        up.append(callback._time_is_up(trainer))
    assert reduced == ["max"]  # asked once, at step 10
    assert up.index(True) + 1 == 20 and callback._interval_steps == 20
