"""A keyed, append-only JSONL store: the one cache of generations, perplexities and judge replies.

Each line is a JSON object with a `key` (usually `digest(...)` of everything that shapes the value);
the last line with a key wins. A run killed mid-write leaves a torn last line, cut at any byte
(inside a multi-byte Chinese character too): it is skipped when read (and counted), and the next
append starts on a fresh line so that no good entry is lost.
Light on purpose (standard library only), so medsft.metrics can use it without the training stack.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)


def digest(value: Any) -> str:
    """SHA-256 of `value` as canonical JSON (sorted keys; non-JSON values by their str)."""
    blob = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class JsonlStore:
    """Entries looked up by key, read from `path` (if it exists) and appended to it.

    Args:
        path: the JSONL file; None keeps entries in memory only.
        what: how the store is named in the warning about unreadable lines.
    """

    def __init__(self, path: str | os.PathLike[str] | None, what: str = "cache") -> None:
        self.path = Path(path) if path is not None else None
        self.what = what
        self.entries: dict[str, dict[str, Any]] = {}
        self.skipped = 0
        """Lines that could not be read (a torn last line, hand edits)."""
        self._fh: IO[str] | None = None
        if self.path is not None and self.path.exists():
            # Read as bytes and decode line by line: a line cut inside a character must be
            # skipped like any torn line, not fail the whole file.
            with self.path.open("rb") as fh:
                for line in fh:
                    self._load(line)
        if self.skipped:
            log.warning("%s %s: skipped %d unreadable line(s)", what, self.path, self.skipped)

    def _load(self, line: bytes) -> None:
        try:
            entry = json.loads(line.decode("utf-8"))
            self.entries[str(entry["key"])] = entry
        except (ValueError, KeyError, TypeError):  # UnicodeDecodeError is a ValueError
            self.skipped += 1

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, key: str) -> dict[str, Any] | None:
        """The entry saved under `key`, or None."""
        return self.entries.get(key)

    def put(self, entry: dict[str, Any]) -> None:
        """Save `entry` (which holds its `key`) and append it to the file at once."""
        self.entries[str(entry["key"])] = entry
        if self.path is None:
            return
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            torn = self.path.exists() and not _ends_with_newline(self.path)
            self._fh = self.path.open("a", encoding="utf-8")
            if torn:
                self._fh.write("\n")  # after a torn line, ours start on a line of their own
        self._fh.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self._fh.flush()

    def rewrite(self, entries: Iterable[dict[str, Any]]) -> None:
        """Replace the file with `entries` only, in order (atomically), e.g. to drop stale ones."""
        self.close()
        entries = list(entries)
        self.entries = {str(e["key"]): e for e in entries}
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(e, ensure_ascii=False) + "\n" for e in entries)
        tmp.replace(self.path)

    def close(self) -> None:
        """Close the file (entries stay readable)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.entries.values())

    def __enter__(self) -> JsonlStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as fh:
        if fh.seek(0, os.SEEK_END) == 0:
            return True
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"
