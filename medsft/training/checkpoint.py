"""Checkpoints that a kill cannot destroy, and a resume that finds the last good one.

Lightning's TorchCheckpointIO writes through an fsspec transaction: the file is staged in the
system temp dir and moved into place, which across filesystems is a copy, so a kill during it
leaves `last.ckpt` empty or truncated; and a PermissionError there is swallowed, so an unwritable
folder trains to the end with no checkpoint. `SafeCheckpointIO` instead:

- writes `.<name>.tmp-<pid>` beside the target (same filesystem), fsyncs it, and renames it over
  the target only when complete (an atomic rename on POSIX);
- keeps the file it replaces as `<stem>.prev<suffix>` (e.g. `last.prev.ckpt`), so the last two
  good checkpoints exist at every moment;
- deletes temp files of saves whose process died (at each save), and raises on any write error
  as one line naming the folder, the bytes needed and free, and the checkpoint kept;
- reads checkpoints as data only (`weights_only=True`): a crafted file cannot run code.

`FreeSpaceCheck` warns before the first step when the folder has less room than one checkpoint
of the model being trained (its saved weights plus the optimizer's moments).

`WholeShardedSaves` does the same for FSDP2's distributed checkpoints (a directory of shards):
Lightning writes them into the existing directory, so a kill mid-save mixes two steps' shards
under the old index; here every rank writes into a sibling temp directory, and rank 0 renames it
into place once all ranks are done.

`RunCheckpoint` is a run's `--checkpoint.*`: Lightning's ModelCheckpoint with `last.ckpt` always
the newest state. Lightning would name the first save after a resume `last-v1.ckpt` (its version
counter, off here), save `last` only beside a top-k save when no step interval is set, and take
one trigger only; here `last.ckpt` is written every `every_n_minutes` of training (default 30)
and every `every_n_train_steps` where a config sets them, by preemption and at the end of
training (`save_last_now`), and each save's cost is printed and logged. With `SafeCheckpointIO`
the folder then holds the current and the previous checkpoint, and more only when `save_top_k`
asks for them.

`usable_checkpoint` checks a checkpoint cheaply before resuming (a `torch.save` file is a zip
archive: a truncated or empty one has no central directory; an FSDP2 distributed checkpoint is a
directory with a `.metadata` file) and falls back to the kept previous one, saying so; loading
falls back the same way when a file passes that check but still fails to load.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import pickle
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint

from medsft.errors import ConfigError, UserError

log = logging.getLogger(__name__)

TEMP_MARK = ".tmp-"
PACE_STEPS = 10
"""Several ranks: optimizer steps after a save before they agree on the pace (`RunCheckpoint`)."""
VALIDATED = "validated.json"
"""Beside the checkpoints: the step of the last completed validation (`RunCheckpoint`)."""
DISTRIBUTED_METADATA = ".metadata"  # torch.distributed.checkpoint's index file


class CheckpointError(UserError, RuntimeError):
    """No usable checkpoint, or a checkpoint folder that cannot be written."""


def previous_path(path: str | Path) -> Path:
    """Where the checkpoint replaced by the latest save of `path` is kept."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def _temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_orphans(folder: str | Path) -> list[Path]:
    """Delete temp files (and sharded temp folders) left by saves whose process was killed."""
    removed = []
    for tmp in Path(folder).glob(f".*{TEMP_MARK}*"):
        pid = tmp.name.rsplit(TEMP_MARK, 1)[1]
        if pid.isdigit() and not _alive(int(pid)):
            _remove(tmp)
            removed.append(tmp)
    return removed


def _fsync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*"), reverse=True):  # files before their folders
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        elif path.is_dir():
            _fsync_dir(path)
    _fsync_dir(folder)


def write_folder(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Write a folder whole or not at all: `write(temp)` fills `.<name>.tmp-<pid>` beside it,
    which is synced and renamed to `path` once complete (an existing `path`, say a folder an
    older medsft left half written, is moved aside first and then deleted). A kill at any
    moment leaves either no `path` or a complete one, and temp folders that the next save
    removes (`remove_orphans`).

    Args:
        path: the folder to write (a run's `model/` or `adapter/`).
        write: writes the folder's files into the directory it is given.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_orphans(path.parent)
    tmp = _temp_path(path)
    old = _temp_path(path.with_name(f"{path.name}.old"))
    _remove(tmp)
    try:
        tmp.mkdir()
        write(tmp)
        _fsync_tree(tmp)
        if path.exists():
            os.replace(path, old)  # a rename cannot replace a non-empty folder
        os.replace(tmp, path)
    finally:
        _remove(tmp)
        _remove(old)
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not supported on this platform or filesystem; the rename stands anyway
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_writable(folder: str | Path) -> None:
    """Raise CheckpointError now, not at the first save, if checkpoints cannot be written here.

    The folder may not exist yet: its nearest existing ancestor must be a writable directory.
    Checked by creating a file (permission bits say nothing for root or read-only mounts).
    """
    folder = Path(folder).absolute()
    existing = folder
    while not existing.exists():
        existing = existing.parent
    fix = "choose another with --checkpoint.dirpath (or the logger's save_dir)"
    if not existing.is_dir():
        raise CheckpointError(
            f"checkpoint folder {folder} cannot be created: {existing} is a file; {fix}"
        )
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise CheckpointError(
            f"checkpoint folder {folder} is not writable ({existing}: {err.strerror or err}); {fix}"
        ) from None


def _problem(path: Path) -> str | None:
    """Why `path` cannot be a checkpoint, or None if it looks whole (cheap: no full read)."""
    if path.is_dir():
        if not (path / DISTRIBUTED_METADATA).is_file():
            return f"a directory without {DISTRIBUTED_METADATA} (an incomplete distributed save)"
        return None
    if not path.exists():
        return "missing"
    if path.stat().st_size == 0:
        return "empty (0 bytes)"
    if not zipfile.is_zipfile(path):
        return "truncated or not a torch.save file (no zip central directory)"
    return None


def usable_checkpoint(path: str | Path) -> Path:
    """`path` if it looks whole, else the previous checkpoint kept beside it (with a message).

    Raises:
        CheckpointError: neither is usable; the message says what is wrong with each.
    """
    path = Path(path)
    problems = []
    for candidate in (path, previous_path(path)):
        problem = _problem(candidate)
        if problem is None:
            if candidate != path:
                print(
                    f"checkpoint {path} is unusable ({problems[0]}); resuming from the previous "
                    f"one, {candidate}",
                    flush=True,
                )
            return candidate
        problems.append(problem)
    raise CheckpointError(
        f"no usable checkpoint: {path} is {problems[0]} and {previous_path(path)} is "
        f"{problems[1]}; start without --ckpt_path or pass another checkpoint"
    )


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def state_bytes(state: Any) -> int:
    """The bytes of the tensors in a (nested) checkpoint dict: about its size on disk.

    torch.save writes each storage once, however many tensors share it (a tied embedding and
    output head are one storage under two names), and writes it whole.
    """
    import torch

    storages: dict[tuple[str, int], int] = {}

    def walk(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            storage = value.untyped_storage()
            storages[(str(storage.device), storage.data_ptr())] = storage.nbytes()
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list | tuple):
            for v in value:
                walk(v)

    walk(state)
    return sum(storages.values())


def _disk_full(err: BaseException) -> bool:
    # torch.save's zip writer reports a full disk as "RuntimeError: [enforce fail at
    # inline_container.cc] . unexpected pos", the OSError only in the exception's context.
    while err is not None:
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "unexpected pos" in str(err) or "No space left" in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False


def save_failed(path: Path, err: BaseException, needed: int) -> CheckpointError:
    """One line for a failed save: the folder, the bytes needed and free, what was kept."""
    folder = path.parent
    kept = (
        f"the previous checkpoint {path} is kept"
        if path.exists()
        else "no earlier checkpoint exists there"
    )
    if _disk_full(err):
        free = shutil.disk_usage(folder).free
        return CheckpointError(
            f"cannot save checkpoint: no space left in {folder} (needs about {_size(needed)}, "
            f"{_size(free)} free); {kept}; free space or set --checkpoint.dirpath elsewhere"
        )
    reason = err.strerror if isinstance(err, OSError) and err.strerror else _first_line(err)
    return CheckpointError(f"cannot save checkpoint {path}: {reason}; {kept}")


def check_free_space(folder: str | Path, needed: int) -> bool:
    """Warn (and return False) when `folder` has less free space than `needed` bytes."""
    existing = Path(folder).absolute()
    while not existing.exists():
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if free >= needed:
        return True
    log.warning(
        "checkpoint folder %s has %s free, less than one checkpoint of this model (about %s): "
        "the first save will fail; free space or set --checkpoint.dirpath elsewhere",
        folder,
        _size(free),
        _size(needed),
    )
    return False


class FreeSpaceCheck(Callback):
    """Before the first step, once the model is built: is there room for one checkpoint?"""

    def __init__(self, folder: str | Path) -> None:
        """
        Args:
            folder: where checkpoints will be written (or its parent, not created yet).
        """
        self.folder = folder

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.is_global_zero:
            return
        callback = trainer.checkpoint_callback
        folder = getattr(callback, "dirpath", None) or self.folder
        check_free_space(folder, checkpoint_bytes(pl_module))


def checkpoint_bytes(module: Any) -> int:
    """About one checkpoint's size: what `state_dict` saves (the trainable weights for LoRA,
    every weight for full fine-tuning) plus Adam's two fp32 moments per trainable parameter
    (global sizes: a sharded save's shards together)."""
    trainable = [p for p in module.parameters() if p.requires_grad]
    saved = {id(p): p for p in trainable}
    if getattr(module, "finetune", "full") != "lora":
        saved.update({id(p): p for p in module.parameters()})
    weights = sum(p.numel() * p.element_size() for p in saved.values())
    moments = sum(2 * 4 * p.numel() for p in trainable)
    return weights + moments


def validation_due(trainer: Any) -> bool:
    """Whether training validates right after the batch it has just restored (Lightning's
    `val_check_interval` in batches, per epoch or across epochs)."""
    loop = trainer.fit_loop.epoch_loop
    every = trainer.val_check_batch
    if not trainer.enable_validation or not isinstance(every, int) or every < 1:
        return False
    per_epoch = trainer.check_val_every_n_epoch
    if per_epoch is not None and (trainer.current_epoch + 1) % per_epoch:
        return False
    done = loop.total_batch_idx if per_epoch is None else loop.batch_idx
    return (done + 1) % every == 0


def validate_now(trainer: Any, pl_module: Any) -> None:
    """Run the validation that a resume would skip, and log it where the stopped run would have.

    Lightning saves a step's checkpoint before it validates at that step and, resuming from it,
    counts that validation as done: a stop during it (or before it) would lose that point of the
    curve for good. The module's own `validation_pass` (medsft.training.module.SFTModule) runs
    it on the restored weights; its metrics are logged at the step index Lightning gives a
    validation after that step.
    """
    run = getattr(pl_module, "validation_pass", None)
    if run is None:
        return
    metrics = run()
    if trainer.is_global_zero and metrics:
        if trainer.logger is not None:
            trainer.logger.log_metrics(metrics, step=trainer.global_step - 1)
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        print(
            f"validated step {trainer.global_step}, which the stopped run had not: {shown}",
            flush=True,
        )


def _disk_size(path: str) -> int:
    if os.path.isdir(path):
        return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
    return os.path.getsize(path) if os.path.exists(path) else 0


class RunCheckpoint(ModelCheckpoint):
    """ModelCheckpoint as a medsft run uses it: `last.ckpt` always holds the newest state.

    Saves `last.ckpt` every `every_n_minutes` of training and every `every_n_train_steps`
    (either or both), always at an optimizer step's end; `save_last_now` saves it at once
    (preemption, the end of training). Each save prints its step, file, seconds and size, and
    logs `checkpoint/save_s`. Every other option is ModelCheckpoint's (top-k by a monitored
    metric included); the defaults differ: `save_last` on, `save_top_k` 0, and no version counter
    (a resumed run keeps writing `last.ckpt`, which `--ckpt_path last` reads).
    """

    def __init__(
        self,
        every_n_minutes: float | None = 30.0,
        save_last: bool | Literal["link"] | None = True,
        save_top_k: int = 0,
        enable_version_counter: bool = False,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            every_n_minutes: save `last.ckpt` when this many minutes of training have passed
                since the last save (null or 0: by steps only, `every_n_train_steps`).
            save_last: keep `last.ckpt` (ModelCheckpoint's option; medsft's default: true).
            save_top_k: also keep the k best checkpoints by `monitor` (0: none; -1: all).
            enable_version_counter: name a top-k save `<name>-v1.ckpt` when `<name>.ckpt`
                exists (ModelCheckpoint's option; medsft's default: false). `last.ckpt` is never
                versioned, whatever this says: it is always the newest state.
            **kwargs: ModelCheckpoint's other options (dirpath, monitor, every_n_train_steps, ...).
        """
        if every_n_minutes is not None and every_n_minutes < 0:
            raise ConfigError(
                f"checkpoint.every_n_minutes must be > 0, or null/0 for none; got {every_n_minutes}"
            )
        super().__init__(
            save_last=save_last,
            save_top_k=save_top_k,
            enable_version_counter=enable_version_counter,
            **kwargs,
        )
        self.every_n_minutes = every_n_minutes
        self._step_before = -1
        self._saved_at = time.monotonic()
        self._saved_step = 0
        """When and at which step the last save (or the start) was."""
        self._interval_steps: int | None = None
        """Several ranks: `every_n_minutes` as optimizer steps at the pace measured."""
        self._last_step_saved: int | None = None
        """The step `last.ckpt` holds, when this process saved it."""

    @property
    def last_path(self) -> str:
        """Where `last.ckpt` goes (the folder is known once the trainer is set up)."""
        return os.path.join(self.dirpath or ".", self.CHECKPOINT_NAME_LAST + self.FILE_EXTENSION)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        super().on_train_start(trainer, pl_module)
        self._saved_at, self._saved_step = time.monotonic(), trainer.global_step
        if trainer.ckpt_path is not None:
            # The restored step is on disk already: no save until a step is taken.
            self._last_global_step_saved = trainer.global_step
            missed = validation_due(trainer) and self._validated_step() != trainer.global_step
            if trainer.world_size > 1:
                missed = bool(trainer.strategy.broadcast(missed))  # rank 0 read the file
            if missed:
                validate_now(trainer, pl_module)

    @property
    def _validated_file(self) -> str:
        return os.path.join(self.dirpath or ".", VALIDATED)

    def _validated_step(self) -> int | None:
        try:
            with open(self._validated_file, encoding="utf-8") as f:
                return int(json.load(f)["step"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        super().on_validation_end(trainer, pl_module)
        if trainer.sanity_checking or not trainer.is_global_zero or self.dirpath is None:
            return
        # The step validated last, beside the checkpoints (which are saved before validating):
        # a resume from this step knows whether its validation was done.
        Path(self.dirpath).mkdir(parents=True, exist_ok=True)
        tmp = _temp_path(Path(self._validated_file))
        tmp.write_text(json.dumps({"step": trainer.global_step}), encoding="utf-8")
        os.replace(tmp, self._validated_file)

    def on_train_batch_start(self, trainer: Any, *_: Any) -> None:
        self._step_before = trainer.global_step

    def on_train_batch_end(self, trainer: Any, pl_module: Any, *args: Any) -> None:
        super().on_train_batch_end(trainer, pl_module, *args)
        if self._time_is_up(trainer) and not self._should_skip_saving_checkpoint(trainer):
            if self.monitor is None:  # a monitored top-k is saved when validation gives its metric
                self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def _time_is_up(self, trainer: Any) -> bool:
        """Whether `every_n_minutes` of training have passed, at the end of an optimizer step.

        One process reads its clock. Several ranks must agree without a collective at every
        step (each would make the host wait for the device): `PACE_STEPS` steps after each
        save they agree once on the time those steps took (the slowest rank's), and the
        interval becomes that many steps at that pace.
        """
        if not self.every_n_minutes or trainer.global_step == self._step_before:
            return False  # off, or inside an accumulation window
        if self._last_global_step_saved == trainer.global_step:
            return False
        interval = self.every_n_minutes * 60
        if trainer.world_size == 1:
            return time.monotonic() - self._saved_at >= interval
        steps = trainer.global_step - self._saved_step
        if self._interval_steps is None:
            if steps < PACE_STEPS:
                return False
            import torch

            took = torch.tensor(
                time.monotonic() - self._saved_at, device=trainer.strategy.root_device
            )
            took = float(trainer.strategy.reduce(took, reduce_op="max"))
            self._interval_steps = max(PACE_STEPS, math.ceil(interval * steps / max(took, 1e-9)))
        return steps >= self._interval_steps

    def _save_last_checkpoint(self, trainer: Any, monitor_candidates: dict[str, Any]) -> None:
        # One `last.ckpt`, always the newest (what `--ckpt_path last` reads; SafeCheckpointIO
        # keeps the one it replaces): never `last-v1.ckpt`, which run configs written before
        # RunCheckpoint still ask for with `enable_version_counter: true`.
        versioned, self._enable_version_counter = self._enable_version_counter, False
        try:
            super()._save_last_checkpoint(trainer, monitor_candidates)
        finally:
            self._enable_version_counter = versioned

    def save_last_now(self, trainer: Any) -> str:
        """Save `last.ckpt` at this step, unless it was saved at this step already; its path.

        Call on every rank (a collective under DDP and FSDP2).
        """
        if self._last_step_saved == trainer.global_step and self.last_model_path:
            return self.last_model_path
        if self.save_last:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        else:  # a signal still leaves a checkpoint to resume from
            self.last_model_path = self.last_path
            self._save_checkpoint(trainer, self.last_path)
        return self.last_model_path

    def _save_checkpoint(self, trainer: Any, filepath: str) -> None:
        started = time.monotonic()
        super()._save_checkpoint(trainer, filepath)
        seconds = time.monotonic() - started
        self._saved_at, self._saved_step = time.monotonic(), trainer.global_step
        self._interval_steps = None
        if filepath == self.last_model_path:
            self._last_step_saved = trainer.global_step
        if trainer.is_global_zero:
            print(
                f"checkpoint: step {trainer.global_step} saved to {filepath} in {seconds:.1f} s "
                f"({_size(_disk_size(filepath))})",
                flush=True,
            )
            if trainer.logger is not None:
                trainer.logger.log_metrics({"checkpoint/save_s": seconds}, step=trainer.global_step)


class SafeCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO that writes beside the target, renames when whole and keeps the previous."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        import torch

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_orphans(path.parent)
        tmp = _temp_path(path)
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            if path.is_file():
                self._keep_previous(path)
            os.replace(tmp, path)
        except (OSError, RuntimeError) as err:
            tmp.unlink(missing_ok=True)
            raise save_failed(path, err, state_bytes(checkpoint)) from None
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(path.parent)

    @staticmethod
    def _keep_previous(path: Path) -> None:
        previous = previous_path(path)
        link = _temp_path(previous)
        try:
            # A hard link, renamed over the old previous: `path` itself never goes missing.
            os.link(path, link)
            os.replace(link, previous)
            # When a killed save had already made `previous` this same file, rename() does
            # nothing (POSIX: two links to one file) and the temp link would stay behind.
            link.unlink(missing_ok=True)
        except OSError:  # no hard links here: the previous moves; usable_checkpoint finds it
            link.unlink(missing_ok=True)
            os.replace(path, previous)

    def load_checkpoint(self, path: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        kwargs["weights_only"] = True  # a checkpoint is data: never run code from one
        try:
            return super().load_checkpoint(path, *args, **kwargs)
        except Exception as err:
            # A whole torch.save file that unpickles to more than data was crafted or written by
            # other code: refused, not replaced by the previous one (a damaged file falls back).
            if isinstance(err, pickle.UnpicklingError) and _problem(Path(path)) is None:
                raise CheckpointError(
                    f"refusing checkpoint {path}: it holds Python objects other than tensors and "
                    f"plain data, which loading could execute ({_first_line(err)})"
                ) from None
            previous = previous_path(path)
            if _problem(previous) is not None:
                raise CheckpointError(
                    f"cannot load checkpoint {path}: {type(err).__name__}: {err}; and no usable "
                    f"previous checkpoint at {previous}"
                ) from err
            print(
                f"cannot load checkpoint {path} ({type(err).__name__}: {_first_line(err)}); loading the "
                f"previous one, {previous}",
                flush=True,
            )
            return super().load_checkpoint(previous, *args, **kwargs)

    def remove_checkpoint(self, path: Any) -> None:
        super().remove_checkpoint(path)
        _remove(previous_path(path))


class WholeShardedSaves:
    """For a ModelParallelStrategy (FSDP2): distributed checkpoints written beside the target
    and renamed into place when every rank has written its shards; the previous one is kept.

    Mixed in before the strategy class: `class FSDP2Strategy(WholeShardedSaves, ...)`.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], filepath: Any, storage_options: Any | None = None
    ) -> None:
        if not getattr(self, "_save_distributed_checkpoint", False):  # one file: CheckpointIO
            return super().save_checkpoint(checkpoint, filepath, storage_options)
        path = Path(self.broadcast(str(filepath)))
        tmp = path.with_name(f".{path.name}{TEMP_MARK}{self.broadcast(os.getpid())}")
        leader = self.global_rank == 0
        if leader:
            path.parent.mkdir(parents=True, exist_ok=True)
            remove_orphans(path.parent)
            _remove(tmp)
        self.barrier("medsft_checkpoint_begin")
        try:
            super().save_checkpoint(checkpoint, tmp, storage_options)
        except BaseException:
            if leader:
                _remove(tmp)
            raise
        self.barrier("medsft_checkpoint_written")  # every shard and the index are in tmp
        if leader:
            if path.exists():
                previous = previous_path(path)
                _remove(previous)
                os.replace(path, previous)  # a moment without `path`: resume takes previous
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        self.barrier("medsft_checkpoint_renamed")

    def remove_checkpoint(self, filepath: Any) -> None:
        super().remove_checkpoint(filepath)
        if self.global_rank == 0:
            _remove(previous_path(filepath))
