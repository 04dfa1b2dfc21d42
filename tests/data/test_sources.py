"""medsft.data.sources: file formats, encodings, shards of lines, missing paths, and fuzzed input
that either reads or fails naming file and line."""

import csv
import io
import json
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from medsft.chat import IGNORE_INDEX
from medsft.data import EmptySource, InvalidExample, SFTStream, check_encoding, is_local, read_rows
from tests.data.helpers import dm


def test_parquet_csv_and_glob_sources(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"question": f"问题{i}", "answer": f"回答{i}"} for i in range(6)]
    pq.write_table(pa.Table.from_pylist(rows[:3]), tmp_path / "a.parquet")
    with open(tmp_path / "b.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["question", "answer"])
        writer.writeheader()
        writer.writerows(rows[3:])
    assert len(list(SFTStream(dm(str(tmp_path / "a.parquet")), "train", 0, 1).examples())) == 3
    assert len(list(SFTStream(dm(str(tmp_path / "b.csv")), "train", 0, 1).examples())) == 3
    assert len(list(SFTStream(dm(str(tmp_path / "*")), "train", 0, 1).examples())) == 6


def test_shards_parse_only_their_own_lines(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(
        '{"question": "q0", "answer": "a0"}\n{broken\n{"question": "q2", "answer": "a2"}\n'
    )
    rows = list(read_rows(str(path), shard=0, num_shards=2))
    assert [r.index for r in rows] == [0, 2] and all(isinstance(r.data, dict) for r in rows)
    (bad,) = read_rows(str(path), shard=1, num_shards=2)
    assert isinstance(bad.data, InvalidExample) and bad.where.endswith("d.jsonl:2")


def test_byte_order_mark_is_ignored(tmp_path):
    rows = [{"question": "问题", "answer": "回答"}]
    (tmp_path / "bom.jsonl").write_text(
        "\ufeff" + json.dumps(rows[0], ensure_ascii=False) + "\n", encoding="utf-8"
    )
    (tmp_path / "bom.csv").write_text("\ufeffquestion,answer\n问题,回答\n", encoding="utf-8")
    for name in ("bom.jsonl", "bom.csv"):
        assert len(list(SFTStream(dm(str(tmp_path / name)), "train", 0, 1).examples())) == 1, name


GOOD = '{"question": "问题", "answer": "回答"}\n'


@pytest.mark.parametrize(
    "name, text, where",
    [
        (
            "latin.jsonl",
            GOOD.encode() * 2 + b'{"question": "caf\xe9", "answer": "a"}\n' + GOOD.encode(),
            "latin.jsonl:3",
        ),
        (
            "latin.json",
            b'[\n  {"question": "q", "answer": "a"},\n  {"question": "\xff", "answer": "a"}\n]\n',
            "latin.json:3",
        ),
        (
            "latin.csv",
            "question,answer\n问,答\n".encode() + b'"two\nlines \xe9",a\n' + "问,答\n".encode(),
            "latin.csv:4",
        ),
    ],
)
def test_non_utf8_bytes_name_file_and_line_and_are_skipped_on_request(tmp_path, name, text, where):
    path = tmp_path / name
    path.write_bytes(text)
    with pytest.raises(InvalidExample, match="not UTF-8") as err:
        list(SFTStream(dm(str(path)), "train", 0, 1).examples())
    assert err.value.where.endswith(where), err.value.where
    if name.endswith(".json"):
        return  # one JSON document: a bad byte makes the whole file unreadable
    stream = SFTStream(dm(str(path), skip_invalid=True), "train", 0, 1)
    assert len(list(stream.examples())) == (3 if name.endswith(".jsonl") else 2)
    kind = "<encoding>: not UTF-8 text (re-save the file as UTF-8, or name its encoding: "
    assert list(stream.stats.invalid) == [kind + "data.encoding, e.g. gb18030)"]


@pytest.mark.parametrize("source", ["data/no_such_folder", "./nope", "/tmp/medsft/none/here"])
def test_a_missing_local_path_is_reported_never_sent_to_the_hub(source, monkeypatch):
    import medsft.data.sources

    def no_hub(*args, **kwargs):
        raise AssertionError("looked up on the hub")

    monkeypatch.setattr(medsft.data.sources, "ensure_hub_reachable", no_hub)
    assert is_local(source)
    with pytest.raises(FileNotFoundError, match=f"data source '{source}' does not exist"):
        dm(source)
    assert not is_local("FreedomIntelligence/Huatuo26M-Lite")


FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


def _read_or_fail_clearly(path: Path, skip: bool, preset: str = "huatuo") -> None:
    data = dm(str(path), skip_invalid=skip, max_length=64, preset=preset)
    try:
        data.check_not_empty()
        examples = list(SFTStream(data, "train", 0, 1).examples())
    except InvalidExample as err:
        assert str(path) in err.where
        if path.suffix != ".parquet":
            assert re.search(r":\d+$|item \d+$", err.where), err.where
        return
    except EmptySource as err:
        assert str(path) in str(err)
        return
    assert examples and all(max(ex["labels"]) != IGNORE_INDEX for ex in examples)


@contextmanager
def _fuzz_file(suffix: str, data: bytes) -> Iterator[Path]:
    """A file holding `data`, removed with its folder after the example (hypothesis runs
    hundreds: none may be left behind)."""
    with tempfile.TemporaryDirectory(prefix="medsft-fuzz-") as folder:
        path = Path(folder) / f"fuzz{suffix}"
        path.write_bytes(data)
        yield path


@FUZZ
@given(
    st.sampled_from([".jsonl", ".json", ".csv", ".parquet"]), st.binary(max_size=400), st.booleans()
)
def test_fuzz_random_bytes(suffix, data, skip):
    with _fuzz_file(suffix, data) as path:
        _read_or_fail_clearly(path, skip)


TEXT = st.text(st.characters(exclude_categories=()), max_size=20)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


MESSAGE = st.fixed_dictionaries(
    {},
    optional={
        "role": st.sampled_from(["user", "assistant", "system", "gpt"]) | JSON_VALUES,
        "from": st.sampled_from(["human", "gpt", "user"]) | JSON_VALUES,
        "content": TEXT | JSON_VALUES,
        "value": TEXT | JSON_VALUES,
    },
)


ROWS = st.lists(
    st.fixed_dictionaries(
        {"question": TEXT | JSON_VALUES, "answer": TEXT | JSON_VALUES}, optional={"id": JSON_VALUES}
    )
    | st.fixed_dictionaries(
        {},
        optional={
            "messages": st.lists(MESSAGE, max_size=4) | JSON_VALUES,
            "conversations": st.lists(MESSAGE, max_size=4),
        },
    )
    | JSON_VALUES,
    max_size=6,
)


@FUZZ
@given(
    ROWS,
    st.sampled_from(["jsonl", "json", "csv"]),
    st.booleans(),
    st.booleans(),
    st.sampled_from(["huatuo", "messages", "sharegpt"]),
)
@example(
    [{"question": "\ud800", "answer": "a"}, {"question": "q", "answer": "a"}],
    "jsonl",
    True,
    True,
    "huatuo",
)
@example([{"conversations": [{"from": [1], "value": "v"}]}], "jsonl", False, True, "sharegpt")
def test_fuzz_random_json_rows(rows, fmt, skip, ascii, preset):
    if fmt == "jsonl":
        text = "".join(json.dumps(r, ensure_ascii=ascii) + "\n" for r in rows)
    elif fmt == "json":
        text = json.dumps(rows, ensure_ascii=ascii)
    else:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["question", "answer"])
        writer.writerows(
            [[str(v) for v in r.values()] if isinstance(r, dict) else [str(r)] for r in rows]
        )
        text = out.getvalue()
    data = text.encode("utf-8", errors="surrogatepass")
    with _fuzz_file(f".{fmt}", data) as path:
        _read_or_fail_clearly(path, skip, preset)


def test_encodings_read_line_by_line_or_are_refused_with_the_fix():
    assert check_encoding("GB18030") == "gb18030" and check_encoding("UTF8") == "utf-8"
    with pytest.raises(ValueError, match="not ASCII-compatible; re-save the file as UTF-8"):
        check_encoding("utf-16")
    with pytest.raises(ValueError, match="unknown encoding 'latin-9x'; use a Python codec"):
        check_encoding("latin-9x")
