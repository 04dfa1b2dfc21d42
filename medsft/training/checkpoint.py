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

`usable_checkpoint` checks a checkpoint cheaply before resuming (a `torch.save` file is a zip
archive: a truncated or empty one has no central directory; an FSDP2 distributed checkpoint is a
directory with a `.metadata` file) and falls back to the kept previous one, saying so; loading
falls back the same way when a file passes that check but still fails to load.
"""

from __future__ import annotations

import errno
import logging
import os
import pickle
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import Callback

from medsft.errors import UserError

log = logging.getLogger(__name__)

TEMP_MARK = ".tmp-"
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
    """The bytes of the tensors in a (nested) checkpoint dict: about its size on disk."""
    import torch

    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(state_bytes(v) for v in state.values())
    if isinstance(state, list | tuple):
        return sum(state_bytes(v) for v in state)
    return 0


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
