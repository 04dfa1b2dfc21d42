"""Checkpoints that a kill cannot destroy, and a resume that finds the last good one.

Lightning's TorchCheckpointIO writes through an fsspec transaction: the file is staged in the
system temp dir and moved into place, which across filesystems is a copy, so a kill during it
leaves `last.ckpt` empty or truncated; and a PermissionError there is swallowed, so an unwritable
folder trains to the end with no checkpoint. `SafeCheckpointIO` instead:

- writes `.<name>.tmp-<pid>` beside the target (same filesystem), fsyncs it, and renames it over
  the target only when complete (an atomic rename on POSIX);
- keeps the file it replaces as `<stem>.prev<suffix>` (e.g. `last.prev.ckpt`), so the last two
  good checkpoints exist at every moment;
- deletes temp files of saves whose process died (at each save), and raises on any write error.

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

import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from medsft.errors import UserError

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
        try:
            return super().load_checkpoint(path, *args, **kwargs)
        except Exception as err:
            previous = previous_path(path)
            if _problem(previous) is not None:
                raise CheckpointError(
                    f"cannot load checkpoint {path}: {type(err).__name__}: {err}; and no usable "
                    f"previous checkpoint at {previous}"
                ) from err
            print(
                f"cannot load checkpoint {path} ({type(err).__name__}: {err}); loading the "
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
