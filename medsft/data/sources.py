"""Reading data sources: local files (JSONL, JSON, CSV, Parquet) or a streamed hub dataset.

`read_rows` yields the raw rows of one shard of a source, each tagged with where it came from
(file and line, or hub split and row) for error messages. Nothing is loaded whole. A record that
cannot be parsed becomes an `InvalidExample` naming file, line and field, returned in place of the
row's data (not raised) so that `skip_invalid` can decide whether it stops the run.

The bottom layer of medsft.data: neither importing it nor reading local files loads torch or
Lightning (what names a hub dataset is medsft.hub's string check).
"""

from __future__ import annotations

import codecs
import csv
import glob
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medsft.errors import UserError
from medsft.hub import ensure_hub_reachable, is_hub_id

LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
BOM = b"\xef\xbb\xbf"


class InvalidExample(UserError, ValueError):
    """A row that cannot become a training example; the message names file, line and field."""

    def __init__(self, where: str, field: str | None = None, problem: str | None = None):
        # One argument: the whole message, as a DataLoader worker's error is re-raised.
        super().__init__(where if field is None else f"{where}: field {field!r}: {problem}")
        self.where, self.field, self.problem = where, field, problem

    @property
    def kind(self) -> str:
        """`field: problem` without row specifics, to count skipped rows by kind."""
        problem = (self.problem or "").splitlines()[0] if self.problem else ""
        return f"{self.field}: {problem.split(';')[0]}"


@dataclass
class Row:
    """One raw record and where it came from (for error messages)."""

    index: int
    where: str
    data: Any


class EmptySource(UserError, ValueError):
    """A data source without a single usable example."""


class DataNotFound(UserError, FileNotFoundError):
    """A local data path or glob that names no file."""


def is_local(source: str) -> bool:
    """A path or glob on disk rather than a hub dataset id (`name` or `org/name`).

    Also a path that does not exist but cannot be a hub id (`./x`, `/x`, `a/b/c`) or whose first
    folder exists here (`data/mine`): it is reported missing, never looked up on the hub.
    """
    first = source.split("/", 1)[0]
    return (
        source.endswith(LOCAL_SUFFIXES)
        or glob.has_magic(source)
        or not is_hub_id(source)
        or ("/" in source and os.path.isdir(first))
    )


def check_local_source(source: str, what: str = "data source") -> None:
    """Fail now, with DataNotFound naming `what` (a config field), when a local path or glob
    names no data file; a hub dataset is checked when it is read."""
    if is_local(source):
        local_files(source, what)


def local_files(source: str, what: str = "data source") -> list[str]:
    """Files named by a path, a directory or a glob, sorted so every process agrees."""
    if os.path.isdir(source):
        files = [str(p) for p in Path(source).rglob("*") if p.suffix in LOCAL_SUFFIXES]
    else:
        files = glob.glob(source, recursive=True)
    if not files:
        if not glob.has_magic(source) and not os.path.exists(source):
            raise DataNotFound(
                f"{what} {source!r} does not exist (a local path; hub dataset ids are 'org/name')"
            )
        raise DataNotFound(f"no data files match {source!r} (looked for {LOCAL_SUFFIXES})")
    unsupported = [f for f in files if not f.endswith(LOCAL_SUFFIXES)]
    if unsupported:
        raise ValueError(f"unsupported file type {unsupported[0]!r}; use one of {LOCAL_SUFFIXES}")
    return sorted(files)


def check_encoding(encoding: str) -> str:
    """The codec's canonical name (``gb18030``), or ValueError saying what would work: an
    encoding Python knows in which newlines and ASCII are single bytes (lines are split on
    bytes, so UTF-16 cannot be read line by line)."""
    try:
        name = codecs.lookup(encoding).name
    except (LookupError, TypeError):
        raise ValueError(
            f"unknown encoding {encoding!r}; use a Python codec name such as utf-8 or gb18030"
        ) from None
    if "x,\n".encode(name, errors="replace") != b"x,\n":
        raise ValueError(
            f"encoding {encoding!r} is not ASCII-compatible; re-save the file as UTF-8"
        )
    return name


def _undecodable(path: str, lineno: int, err: UnicodeDecodeError, encoding: str) -> InvalidExample:
    shown = "UTF-8" if encoding == "utf-8" else encoding
    return InvalidExample(
        f"{path}:{lineno}",
        "<encoding>",
        f"not {shown} text (re-save the file as UTF-8, or name its encoding: data.encoding, "
        f"e.g. gb18030); byte 0x{err.object[err.start]:02x} at byte {err.start + 1} of the line",
    )


def _line_codec(encoding: str, lineno: int) -> str:
    """The codec of a line: UTF-8's first line may start with a byte-order mark."""
    return "utf-8-sig" if encoding == "utf-8" and lineno == 1 else encoding


def _json_records(path: str, encoding: str) -> Iterator[tuple[str, Callable[[], Any]]]:
    # Read as bytes and decoded per line, so a non-UTF-8 byte names its line (and, with
    # skip_invalid, costs only that line).
    with open(path, "rb") as f:
        first, chunk = b"", f.read(65536).removeprefix(BOM)
        while chunk and not (first := chunk.lstrip()[:1]):
            chunk = f.read(65536)
        f.seek(0)
        if first == b"[":  # a JSON array (the course format); JSONL otherwise
            yield from _json_array(path, f.read(), encoding)
            return
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                # Parsed only by the shard it belongs to: other ranks and workers skip it unread.
                yield (
                    f"{path}:{lineno}",
                    (lambda line=line, lineno=lineno: _parse_line(path, lineno, line, encoding)),
                )


def _json_array(path: str, data: bytes, encoding: str) -> Iterator[tuple[str, Callable[[], Any]]]:
    try:
        items = json.loads(data.decode(_line_codec(encoding, 1)))
    except UnicodeDecodeError as err:
        lineno = data.count(b"\n", 0, err.start) + 1
        line_start = data.rfind(b"\n", 0, err.start) + 1
        err.object, err.start = data[line_start : err.end], err.start - line_start
        raise _undecodable(path, lineno, err, encoding) from None
    except json.JSONDecodeError as err:
        raise InvalidExample(
            f"{path}:{err.lineno}", "<json>", f"malformed JSON: {err.msg}"
        ) from None
    except RecursionError:
        raise InvalidExample(path, "<json>", "JSON nested too deeply") from None
    if not isinstance(items, list):  # "[1] x" fails above; this is for safety only
        raise InvalidExample(path, "<json>", "expected a JSON array of rows")
    for i, item in enumerate(items):
        yield f"{path}: item {i}", (lambda item=item: item)


def _parse_line(path: str, lineno: int, line: bytes, encoding: str) -> Any:
    # Problems are returned, not raised: skip_invalid decides whether they stop the run.
    try:
        text = line.decode(_line_codec(encoding, lineno))
    except UnicodeDecodeError as err:
        return _undecodable(path, lineno, err, encoding)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        return InvalidExample(
            f"{path}:{lineno}", "<json>", f"malformed JSON line: {err.msg}; at column {err.colno}"
        )
    except RecursionError:
        return InvalidExample(
            f"{path}:{lineno}", "<json>", "malformed JSON line: nested too deeply"
        )


def _csv_records(path: str, encoding: str) -> Iterator[tuple[str, Callable[[], Any]]]:
    bad: dict[int, InvalidExample] = {}

    def lines() -> Iterator[str]:
        with open(path, "rb") as f:
            for lineno, line in enumerate(f, start=1):
                try:
                    yield line.decode(_line_codec(encoding, lineno))
                except UnicodeDecodeError as err:
                    bad[lineno] = _undecodable(path, lineno, err, encoding)
                    yield line.decode(encoding, errors="replace")

    reader = csv.DictReader(lines())
    end = 1  # line 1 is the header; csv knows the line where each record ends
    try:
        if reader.fieldnames is not None and 1 in bad:
            raise bad[1]  # the header names the columns: nothing can be read without it
        for record in reader:
            start, end = end + 1, reader.line_num
            problem = next((bad[n] for n in range(start, end + 1) if n in bad), None)
            yield f"{path}:{end}", (lambda record=record, problem=problem: problem or record)
    except csv.Error as err:
        raise InvalidExample(
            f"{path}:{reader.line_num}", "<csv>", f"malformed CSV: {err}"
        ) from None


def _parquet_records(path: str) -> Iterator[tuple[str, Callable[[], Any]]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    row = 0
    try:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            for record in batch.to_pylist():
                yield f"{path}: row {row}", (lambda record=record: record)
                row += 1
    except (pa.ArrowException, OSError) as err:
        raise InvalidExample(
            f"{path}: row {row}", "<parquet>", f"unreadable Parquet: {err}"
        ) from None


def _file_records(path: str, encoding: str) -> Iterator[tuple[str, Callable[[], Any]]]:
    """(where, load) for each record of a file; `load()` returns the parsed record."""
    if path.endswith((".jsonl", ".json")):
        yield from _json_records(path, encoding)
    elif path.endswith(".csv"):
        yield from _csv_records(path, encoding)
    else:
        yield from _parquet_records(path)


def read_rows(
    source: str,
    *,
    split: str = "train",
    subset: str | None = None,
    shard: int = 0,
    num_shards: int = 1,
    encoding: str = "utf-8",
) -> Iterator[Row]:
    """The raw rows of one shard of a source, in a fixed order, tagged with where they came from.

    Shards are disjoint and cover the source: for local files row i belongs to shard
    i mod num_shards; a hub stream is split by `datasets.distributed.split_dataset_by_node` (by
    file where the file count allows, else by row). `encoding` is that of local JSON, JSONL and
    CSV files (see `check_encoding`).
    """
    encoding = check_encoding(encoding)
    if is_local(source):
        index = 0
        for path in local_files(source):
            for where, load in _file_records(path, encoding):
                if index % num_shards == shard:
                    yield Row(index, where, load())
                index += 1
        return
    import datasets
    from datasets.distributed import split_dataset_by_node

    ensure_hub_reachable(source, repo_type="dataset", probe="README.md")
    stream = datasets.load_dataset(source, subset, split=split, streaming=True)
    if num_shards > 1:
        stream = split_dataset_by_node(stream, rank=shard, world_size=num_shards)
    for index, data in enumerate(stream):
        yield Row(index, f"{source}[{split}] shard {shard}/{num_shards} row {index}", data)
