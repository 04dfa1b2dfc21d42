"""One evaluation at a time per output directory.

Two runs on one `output_dir` would both pay for every judge request and generation (neither sees
the other's cache entries until it rereads them) and overwrite each other's report. The first run
holds an exclusive `flock` on `<output_dir>/.evaluate.lock`; a second one stops at once with one
line naming the holder. The kernel releases a flock when its process dies, however it dies
(kill -9 included), so a killed run never leaves the directory locked; the file itself stays, as
a stale file means nothing.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from medsft.errors import UserError

LOCK_NAME = ".evaluate.lock"
"""The lock file inside the output directory."""


class OutputDirBusy(UserError):
    """Another evaluation holds the output directory."""


@contextmanager
def output_lock(out_dir: str | os.PathLike[str], enabled: bool = True) -> Iterator[None]:
    """Hold `out_dir` for this process while the block runs; refuse if another process holds it.

    Args:
        out_dir: the evaluation's output directory (created if missing).
        enabled: False holds nothing (data-parallel ranks other than 0 write no outputs).

    Raises:
        OutputDirBusy: another live process holds the directory.
    """
    if not enabled:
        yield
        return
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(
            f"output_dir {str(out_dir)!r} cannot be a folder: it or a folder above it is a "
            "file; choose another --output_dir"
        ) from None
    fd = os.open(out_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown process"
            raise OutputDirBusy(
                f"output_dir {str(out_dir)!r} is in use by another evaluation ({holder}); wait "
                "for it to finish, or set a different --output_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(
            fd, f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}".encode(), 0
        )
        yield
    finally:
        os.close(fd)  # closing the only descriptor releases the flock
