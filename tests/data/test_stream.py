"""medsft.data.stream: disjoint shards, the seeded shuffle, skipped and truncated rows counted,
and the counters reaching batches."""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from medsft.chat import IGNORE_INDEX
from medsft.data import InvalidExample, SFTStream, collate
from tests.data.helpers import SAMPLE, data_end, dm, indices, write_jsonl
from tests.helpers import ROOT


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
            SFTStream(data, split, rank, world_size),
            batch_size=3,
            num_workers=workers,
            collate_fn=lambda b: collate(b, 0),
            multiprocessing_context="fork" if workers else None,
        )
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
        (
            "delicate_medical_r1/delicate_medical_r1_val241.justlearninggg.jsonl",
            {"preset": "reasoning", "enable_thinking": True},
            241,
        ),
        (
            "english_tasks/medquad_official_sample1000.jsonl",
            {"preset": "medquad", "max_length": 512},
            1000,
        ),
        ("course_a3_testsets/zh_med.json", {"preset": "course"}, 20),
    ]
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


@pytest.mark.parametrize(
    "row, kwargs, field, problem",
    [
        (
            {"messages": [{"role": "human", "content": "hi"}, {"role": "gpt", "content": "yo"}]},
            {"preset": "messages"},
            "messages[0].role",
            "unknown role 'human'",
        ),
        (
            {
                "messages": [
                    {"role": "assistant", "content": "hi"},
                    {"role": "user", "content": "q"},
                ]
            },
            {"preset": "messages"},
            "messages",
            "starts with an assistant",
        ),
        (
            {"question": "q", "answer": "<think>\nhmm\n</think>\n\na"},
            {},
            "answer",
            "enable_thinking",
        ),
    ],
)
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


@pytest.mark.parametrize("packing", [False, True])
def test_counts_reach_batches_from_worker_processes(tmp_path, packing):
    rows = [{"question": "问", "answer": "答" * (3 if i % 2 else 200)} for i in range(10)]
    path = Path(write_jsonl(tmp_path / "d.jsonl", rows))
    path.write_text(path.read_text() + "{bad\n")
    data = dm(
        str(path), max_length=48, num_workers=2, batch_size=2, skip_invalid=True, packing=packing
    )
    data.setup()
    total = Counter()
    for batch in data.train_dataloader():
        total.update(batch["data_counts"])
    # The trailing bad line is counted only in the end-of-pass summary.
    assert dict(+total) == {"examples": 10, "rows": 10, "truncated": 5}


def test_shuffled_order_is_the_same_in_another_process():
    """The shuffle is seeded by (seed, epoch, shard) through a digest, not Python's per-process
    salted hash: a rerun or a resumed run on another machine sees the same order."""
    code = (
        "from medsft.data import SFTStream\n"
        "from tests.data.helpers import SAMPLE, dm, indices\n"
        "stream = SFTStream(dm(f'{SAMPLE}/huatuo_sample.jsonl', shuffle_buffer=16), 'train', 0, 1)\n"
        "stream.epoch = 3\n"
        "print(hash('medsft'), indices(stream))\n"
    )
    hash_seed = "2" if os.environ.get("PYTHONHASHSEED") == "1" else "1"
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True, cwd=ROOT
    ).stdout.splitlines()[-1]
    other_hash, other_order = out.split(" ", 1)
    assert int(other_hash) != hash("medsft")  # another salt here: the comparison means something
    stream = SFTStream(dm(f"{SAMPLE}/huatuo_sample.jsonl", shuffle_buffer=16), "train", 0, 1)
    stream.epoch = 3  # the same code in this process
    orders = [json.loads(other_order), indices(stream)]
    assert orders[0] == orders[1] and sorted(orders[0]) == list(range(64))
    assert orders[0] != list(range(64))
