"""SFTDataModule: sources, column mapping, split, disjoint shards, collate, bad input."""

import csv
import io
import json
import re
import tempfile
from collections import Counter
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from medsft.chat import IGNORE_INDEX
from medsft.data import InvalidExample, SFTDataModule, SFTStream, collate, in_validation

SAMPLE = "data/sample"


def dm(source, **kwargs):
    kwargs.setdefault("val_fraction", 0.0)
    kwargs.setdefault("shuffle_buffer", 1)
    return SFTDataModule(source=source, tokenizer="qwen3", **kwargs)


def indices(stream):
    return [ex["index"] for ex in stream]


def write_jsonl(path, rows):
    path.write_text(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8"
    )
    return str(path)


@pytest.mark.parametrize(
    "source, kwargs, expected",
    [
        (f"{SAMPLE}/huatuo_sample.jsonl", {"preset": "huatuo"}, 64),
        (f"{SAMPLE}/reasoning.jsonl", {"preset": "reasoning", "enable_thinking": True}, 12),
        (f"{SAMPLE}/alpaca_sample.jsonl", {"preset": "alpaca"}, 8),
        (f"{SAMPLE}/test_zh_med.json", {"preset": "course"}, 12),
    ],
)
def test_presets_read_every_row(source, kwargs, expected):
    data = dm(source, **kwargs)
    examples = list(SFTStream(data, "train", 0, 1).examples())
    assert len(examples) == expected
    assert all(any(label != IGNORE_INDEX for label in ex["labels"]) for ex in examples)


def test_multi_turn_rows_become_one_sequence_per_assistant_turn():
    with open(f"{SAMPLE}/multiturn.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    turns = sum(sum(m["role"] == "assistant" for m in r["messages"]) for r in rows)
    data = dm(f"{SAMPLE}/multiturn.jsonl", preset="messages")
    assert len(list(SFTStream(data, "train", 0, 1).examples())) == turns
    last = dm(f"{SAMPLE}/multiturn.jsonl", preset="messages", multi_turn="last")
    assert len(list(SFTStream(last, "train", 0, 1).examples())) == len(rows)


def test_column_mapping_and_metadata(tmp_path):
    path = write_jsonl(
        tmp_path / "d.jsonl",
        [{"ask": f"问{i}", "reply": f"答{i}", "dept": "内科"} for i in range(5)],
    )
    data = dm(path, columns={"question": "ask", "answer": "reply"})
    data.column_map.pop("id")
    examples = list(SFTStream(data, "train", 0, 1).examples())
    assert len(examples) == 5
    assert examples[2]["meta"] == {"dept": "内科"}
    assert "答2<|im_end|>" in data.tokenizer.decode(
        [t for t in examples[2]["labels"] if t != IGNORE_INDEX]
    )
    with pytest.raises(ValueError, match="unknown column roles"):
        dm(path, columns={"questoin": "ask"})


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


def test_split_is_deterministic_disjoint_and_complete():
    source = f"{SAMPLE}/huatuo_sample.jsonl"
    a = dm(source, val_fraction=0.25)
    train = indices(SFTStream(a, "train", 0, 1).examples())
    val = indices(SFTStream(a, "val", 0, 1).examples())
    assert not set(train) & set(val)
    assert sorted(train + val) == list(range(64))
    assert 4 <= len(val) <= 30
    b = dm(source, val_fraction=0.25)
    assert indices(SFTStream(b, "val", 0, 1).examples()) == val


def test_split_is_the_same_in_another_process():
    """Python's hash() changes per process; the split must not."""
    import os
    import subprocess
    import sys

    keys = [f"example-{i}" for i in range(200)]
    here = [in_validation(k, 0.3) for k in keys]
    code = (
        f"from medsft.data import in_validation; print([in_validation(k, 0.3) for k in {keys!r}])"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == str(here)
    assert 30 < sum(here) < 90


@pytest.mark.parametrize("split", ["train", "val"])
@pytest.mark.parametrize("world_size, workers", [(2, 2), (3, 1)])
def test_ranks_and_workers_read_disjoint_shards(world_size, workers, split):
    """Validation too: each rank evaluates its own share, not the whole set again."""
    data = dm(f"{SAMPLE}/huatuo_sample.jsonl", val_fraction=0.3, shuffle_buffer=8, batch_size=3)
    expected = sorted(indices(SFTStream(data, split, 0, 1).examples()))
    assert len(expected) > world_size * workers
    seen = []
    for rank in range(world_size):
        loader = DataLoader(
            SFTStream(data, split, rank, world_size), batch_size=3, num_workers=workers,
            collate_fn=lambda b: collate(b, 0), multiprocessing_context="fork" if workers else None,
        )  # fmt: skip
        for batch in loader:
            seen += batch["index"]
    assert sorted(seen) == expected  # nothing lost, nothing repeated


def test_shuffle_changes_order_between_epochs_but_not_content():
    data = dm(f"{SAMPLE}/huatuo_sample.jsonl", shuffle_buffer=16)
    stream = SFTStream(data, "train", 0, 1)
    first = indices(stream)
    assert indices(stream) == first  # the order is a function of (seed, epoch, shard)
    stream.epoch = 1
    second = indices(stream)
    assert sorted(first) == sorted(second) == list(range(64))
    assert first != list(range(64)) and second != list(range(64)) and first != second


def test_collate_pads_labels_with_ignore_index():
    batch = collate(
        [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8], "labels": [8]}],
        pad_token_id=0, pad_to_multiple_of=4,
    )  # fmt: skip
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0], [8, 0, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7, -100], [8, -100, -100, -100]]
    assert batch["attention_mask"].sum().item() == 4
    # The loss's inputs, found on the CPU: positions whose next token is supervised.
    assert batch["positions"].tolist() == [0, 1] and batch["targets"].tolist() == [6, 7]
    assert batch["attention_pairs"].item() == 3 * 4 // 2 + 1


def test_validation_pads_finished_ranks_until_all_are_done():
    from medsft.data.module import _UntilAllRanksDone

    shards = {
        0: [{"input_ids": [5, 6], "labels": [5, 6]}] * 3,
        1: [{"input_ids": [7], "labels": [7]}],
    }
    loaders = {
        r: DataLoader(rows, batch_size=1, collate_fn=lambda b: collate(b, 0))
        for r, rows in shards.items()
    }
    iters = {
        r: iter(_UntilAllRanksDone(loaders[r], 0, lambda done, r=r: votes(r, done))) for r in shards
    }
    pending: dict[int, bool] = {}

    def votes(rank, done):  # a two-rank all-reduce, in lockstep
        pending[rank] = done
        return all(pending.values()) and len(pending) == 2

    steps = {0: [], 1: []}
    while True:
        out = {}
        for r in (0, 1):
            out[r] = next(iters[r], None)
        if out[0] is None or out[1] is None:
            assert out[0] is None and out[1] is None  # they stop together
            break
        for r in (0, 1):
            steps[r].append(bool(out[r].get("padding")))
    assert steps[0] == [False] * 3 and steps[1] == [False, True, True]


def test_group_by_length_pads_less():
    def padding(group):
        data = dm(f"{SAMPLE}/huatuo_sample.jsonl", shuffle_buffer=64, group_by_length=group, batch_size=4,
                  pad_to_multiple_of=1)  # fmt: skip
        data.setup()
        return sum((b["attention_mask"] == 0).sum().item() for b in data.train_dataloader())

    assert padding(True) < padding(False)


BAD_ROWS = [
    ('{"question": "q", "answer": "a"}\n{"question": "q", "answer": \n', "bad.jsonl:2", "<json>"),
    ('{"question": "q"}\n', "bad.jsonl:1", "answer"),
    ('{"question": "q", "answer": "   "}\n', "bad.jsonl:1", "answer"),
    ('{"question": 42, "answer": "a"}\n', "bad.jsonl:1", "question"),
]


@pytest.mark.parametrize("text, where, field", BAD_ROWS)
def test_bad_rows_name_file_line_and_field(tmp_path, text, where, field):
    path = tmp_path / "bad.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InvalidExample) as err:
        list(SFTStream(dm(str(path)), "train", 0, 1).examples())
    assert err.value.where.endswith(where) and err.value.field == field
    assert where in str(err.value) and repr(field) in str(err.value)


def test_skip_invalid_counts_what_it_skips(tmp_path, caplog):
    good = [json.dumps({"question": f"q{i}", "answer": f"a{i}"}) for i in range(4)]
    path = tmp_path / "mixed.jsonl"
    path.write_text(
        "\n".join([good[0], "{oops", good[1], '{"question": "q"}', good[2], good[3]]) + "\n"
    )
    data = dm(str(path), skip_invalid=True)
    stream = SFTStream(data, "train", 0, 1)
    with caplog.at_level("INFO", logger="medsft.data"):
        assert len(list(stream)) == 4
    assert sum(stream.stats.invalid.values()) == 2
    assert "2 invalid skipped" in caplog.text


def test_examples_with_nothing_left_after_truncation_are_dropped_and_counted(tmp_path):
    rows = [
        {"question": "短问题", "answer": "短回答"},
        {"question": "很长的问题" * 40, "answer": "回答"},
    ]
    data = dm(write_jsonl(tmp_path / "d.jsonl", rows), max_length=24)
    stream = SFTStream(data, "train", 0, 1)
    examples = list(stream)
    assert len(examples) == 1 and stream.stats.truncated_away == 1
    assert all(len(ex["input_ids"]) <= 24 for ex in examples)


def test_shared_data_renders(shared_data):
    cases = [
        ("huatuo26m_lite/huatuo26m_lite_qa500.enddonkey.jsonl", {"preset": "huatuo"}, 500),
        ("delicate_medical_r1/delicate_medical_r1_val241.justlearninggg.jsonl",
         {"preset": "reasoning", "enable_thinking": True}, 241),
        ("english_tasks/medquad_official_sample1000.jsonl", {"preset": "medquad", "max_length": 512}, 1000),
        ("course_a3_testsets/zh_med.json", {"preset": "course"}, 20),
    ]  # fmt: skip
    for path, kwargs, rows in cases:
        stream = SFTStream(dm(str(shared_data / path), **kwargs), "train", 0, 1)
        examples = list(stream)
        assert stream.stats.rows == rows
        assert len(examples) + stream.stats.truncated_away == rows, path
        assert all(sum(label != IGNORE_INDEX for label in ex["labels"]) > 0 for ex in examples)


def test_reasoning_rows_supervise_the_think_text(shared_data):
    path = shared_data / "delicate_medical_r1/delicate_medical_r1_val241.justlearninggg.jsonl"
    with open(path, encoding="utf-8") as f:
        row = json.loads(f.readline())
    data = dm(str(path), preset="reasoning", enable_thinking=True, max_length=4096)
    ex = next(iter(SFTStream(data, "train", 0, 1).examples()))
    supervised = data.tokenizer.decode([t for t in ex["labels"] if t != IGNORE_INDEX])
    assert (
        supervised
        == f"<think>\n{row['think'].strip()}\n</think>\n\n{row['answer'].lstrip()}<|im_end|>"
    )
    assert torch.tensor(ex["labels"]).ne(IGNORE_INDEX).sum() < len(ex["labels"])


def test_shards_parse_only_their_own_lines(tmp_path):
    from medsft.data import read_rows

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


@pytest.mark.parametrize(
    "row, kwargs, field, problem",
    [
        ({"messages": [{"role": "human", "content": "hi"}, {"role": "gpt", "content": "yo"}]},
         {"preset": "messages"}, "messages[0].role", "unknown role 'human'"),
        ({"messages": [{"role": "assistant", "content": "hi"}, {"role": "user", "content": "q"}]},
         {"preset": "messages"}, "messages", "starts with an assistant"),
        ({"question": "q", "answer": "<think>\nhmm\n</think>\n\na"}, {}, "answer", "enable_thinking"),
    ],
)  # fmt: skip
def test_rows_the_template_cannot_render_name_file_and_line(tmp_path, row, kwargs, field, problem):
    good = {"question": "ok", "answer": "fine"}
    if kwargs:
        good = {
            "messages": [
                {"role": "user", "content": "ok"},
                {"role": "assistant", "content": "fine"},
            ]
        }
    path = write_jsonl(tmp_path / "r.jsonl", [good, row])
    with pytest.raises(InvalidExample) as err:
        list(SFTStream(dm(path, **kwargs), "train", 0, 1).examples())
    assert err.value.where.endswith("r.jsonl:2") and err.value.field == field
    assert problem in str(err.value)
    stream = SFTStream(dm(path, skip_invalid=True, **kwargs), "train", 0, 1)
    assert len(list(stream)) == 1 and sum(stream.stats.invalid.values()) == 1


GOOD = '{"question": "问题", "answer": "回答"}\n'


@pytest.mark.parametrize(
    "name, text, where",
    [
        ("latin.jsonl", GOOD.encode() * 2 + b'{"question": "caf\xe9", "answer": "a"}\n' + GOOD.encode(), "latin.jsonl:3"),
        ("latin.json", b'[\n  {"question": "q", "answer": "a"},\n  {"question": "\xff", "answer": "a"}\n]\n', "latin.json:3"),
        ("latin.csv", "question,answer\n问,答\n".encode() + b'"two\nlines \xe9",a\n' + "问,答\n".encode(), "latin.csv:4"),
    ],
)  # fmt: skip
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
    assert stream.stats.invalid == {"<encoding>: not UTF-8 text (re-save the file as UTF-8)": 1}


@pytest.mark.parametrize(
    "text, skip, match",
    [
        ("", False, "0 rows read"),
        ("\n  \n\n", False, "0 rows read"),
        ("[]", False, "0 rows read"),
        ('{"question": "q"}\n{"oops\n', True, r"2 rows read, 0 examples, .*2 invalid skipped"),
        ('{"question": "' + "很长的问题" * 100 + '", "answer": "a"}\n', False, "1 dropped with no supervised"),
    ],
    ids=["empty", "blank-lines", "empty-array", "all-invalid", "prompt-too-long"],
)  # fmt: skip
def test_a_source_with_no_usable_example_fails_at_setup_naming_it(tmp_path, text, skip, match):
    from medsft.data import EmptySource

    path = tmp_path / "d.jsonl"
    path.write_text(text, encoding="utf-8")
    data = dm(str(path), skip_invalid=skip, max_length=64)
    with pytest.raises(EmptySource, match=f"no usable training example in {path}.*{match}"):
        data.setup("fit")
    ok = dm(f"{SAMPLE}/huatuo_sample.jsonl", val_source=str(path), skip_invalid=skip, max_length=64)
    with pytest.raises(EmptySource, match="no usable validation example"):
        ok.setup("fit")


@pytest.mark.parametrize("source", ["data/no_such_folder", "./nope", "/tmp/medsft/none/here"])
def test_a_missing_local_path_is_reported_never_sent_to_the_hub(source, monkeypatch):
    import medsft.model
    from medsft.data import is_local

    def no_hub(*args, **kwargs):
        raise AssertionError("looked up on the hub")

    monkeypatch.setattr(medsft.model, "ensure_hub_reachable", no_hub)
    assert is_local(source)
    with pytest.raises(FileNotFoundError, match=f"data source '{source}' does not exist"):
        dm(source)
    assert not is_local("FreedomIntelligence/Huatuo26M-Lite")


def test_truncated_answers_are_counted_or_dropped(tmp_path):
    rows = [{"question": "问", "answer": "短"}, {"question": "问", "answer": "很长的回答" * 30}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    stream = SFTStream(dm(path, max_length=40), "train", 0, 1)
    examples = list(stream.examples())
    assert len(examples) == 2 and stream.stats.truncated == 1
    ends = [data_end(stream.dm.tokenizer, ex) for ex in examples]
    assert ends == [True, False]  # the cut answer lost its end-of-turn token
    batch = collate(examples, 0)
    assert batch["data_counts"] == {
        "examples": 2,
        "rows": 2,
        "invalid": 0,
        "dropped": 0,
        "truncated": 1,
    }
    dropping = SFTStream(dm(path, max_length=40, truncation="drop"), "train", 0, 1)
    (kept,) = dropping.examples()
    assert data_end(dropping.dm.tokenizer, kept) and dropping.stats.dropped_truncated == 1
    assert kept["counts"] == {"examples": 1, "rows": 1, "invalid": 0, "dropped": 0, "truncated": 0}
    with pytest.raises(ValueError, match="truncation must be"):
        dm(path, truncation="left")


def data_end(tokenizer, example):
    supervised = [t for t in example["labels"] if t != IGNORE_INDEX]
    return tokenizer.decode(supervised).endswith("<|im_end|>")


@pytest.mark.parametrize("packing", [False, True])
def test_counts_reach_batches_from_worker_processes(tmp_path, packing):
    rows = [{"question": "问", "answer": "答" * (3 if i % 2 else 200)} for i in range(10)]
    path = Path(write_jsonl(tmp_path / "d.jsonl", rows))
    path.write_text(path.read_text() + "{bad\n")
    data = dm(str(path), max_length=48, num_workers=2, batch_size=2, skip_invalid=True,
              packing=packing)  # fmt: skip
    data.setup()
    total = Counter()
    for batch in data.train_dataloader():
        total.update(batch["data_counts"])
    # The trailing bad line is counted only in the end-of-pass summary.
    assert dict(+total) == {"examples": 10, "rows": 10, "truncated": 5}


# Fuzzing the readers: every input either gives examples or fails naming file and line (or
# the file, for Parquet); none hangs or escapes with a bare exception.
FUZZ = settings(max_examples=60, deadline=5000, suppress_health_check=list(HealthCheck))


def _read_or_fail_clearly(path: Path, skip: bool, preset: str = "huatuo") -> None:
    from medsft.data import EmptySource

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


def _fuzz_file(suffix: str, data: bytes) -> Path:
    folder = Path(tempfile.mkdtemp())
    path = folder / f"fuzz{suffix}"
    path.write_bytes(data)
    return path


@FUZZ
@given(
    st.sampled_from([".jsonl", ".json", ".csv", ".parquet"]), st.binary(max_size=400), st.booleans()
)
def test_fuzz_random_bytes(suffix, data, skip):
    _read_or_fail_clearly(_fuzz_file(suffix, data), skip)


# Any code point, lone surrogates included (JSON's "\ud800" escapes decode to them).
TEXT = st.text(st.characters(exclude_categories=()), max_size=20)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
MESSAGE = st.fixed_dictionaries(
    {}, optional={"role": st.sampled_from(["user", "assistant", "system", "gpt"]) | JSON_VALUES,
                  "from": st.sampled_from(["human", "gpt", "user"]) | JSON_VALUES,
                  "content": TEXT | JSON_VALUES, "value": TEXT | JSON_VALUES},
)  # fmt: skip
ROWS = st.lists(
    st.fixed_dictionaries({"question": TEXT | JSON_VALUES, "answer": TEXT | JSON_VALUES}, optional={"id": JSON_VALUES})
    | st.fixed_dictionaries({}, optional={"messages": st.lists(MESSAGE, max_size=4) | JSON_VALUES,
                                          "conversations": st.lists(MESSAGE, max_size=4)})
    | JSON_VALUES,
    max_size=6,
)  # fmt: skip


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
@example([{"conversations": [{"from": [1], "value": "v"}]}], "jsonl", False, True, "sharegpt")  # fmt: skip
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
    _read_or_fail_clearly(_fuzz_file(f".{fmt}", data), skip, preset)


@pytest.mark.parametrize("stop_after", [1, 4, 7])
def test_two_workers_resume_where_the_loader_stopped(stop_after):
    """The data position of the batches trained on restarts the round robin of workers, each
    skipping what it delivered: the rest of the epoch is exactly the uninterrupted one's."""

    def run(position=None, limit=None):
        data = dm(f"{SAMPLE}/huatuo_sample.jsonl", val_fraction=0, shuffle_buffer=8, batch_size=3,
                  num_workers=2)  # fmt: skip
        if position is not None:
            data.position = position
        data.setup("fit")
        seen = []
        for batch in data.train_dataloader():
            if limit is not None and len(seen) == limit:
                break
            data.position.consumed(0, batch["stream_position"])
            seen.append(batch["index"])
        return seen, data.position

    everything, _ = run()
    first, position = run(limit=stop_after)
    rest, _ = run(position=position)
    assert first == everything[:stop_after] and first + rest == everything
