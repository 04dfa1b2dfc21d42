"""medsft.data.schema: the preset registry and column mapping, the hashed split, row errors and
the presets a row's shape fits, and iter_conversations / DataSource shared with evaluation."""

import csv
import dataclasses
import inspect
import json
from pathlib import Path
from typing import get_args

import pytest

from medsft.chat import IGNORE_INDEX
from medsft.data import (
    COLUMN_PRESETS,
    PRESETS,
    DataSource,
    InvalidExample,
    Preset,
    SFTDataModule,
    SFTStream,
    in_validation,
    iter_conversations,
    unit_hash,
)
from medsft.data.schema import title_and_ask
from medsft.evaluation import load_examples
from medsft.evaluation.config import DataSpec
from tests.data.helpers import SAMPLE, dm, indices, write_jsonl

ROOT = Path(__file__).resolve().parents[2]


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


def test_column_mapping(tmp_path):
    path = write_jsonl(
        tmp_path / "d.jsonl",
        [{"ask": f"问{i}", "reply": f"答{i}", "dept": "内科"} for i in range(5)],
    )
    data = dm(path, columns={"question": "ask", "answer": "reply"})
    data.column_map.pop("id")
    examples = list(SFTStream(data, "train", 0, 1).examples())
    assert len(examples) == 5
    # Other columns are not carried into training (nothing there reads them); evaluation reads
    # one from the row when asked to (test_set.slice_column).
    assert "meta" not in examples[2]
    assert "答2<|im_end|>" in data.tokenizer.decode(
        [t for t in examples[2]["labels"] if t != IGNORE_INDEX]
    )
    with pytest.raises(ValueError, match="unknown column roles"):
        dm(path, columns={"questoin": "ask"})


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


def test_iter_conversations_raises_or_skips_and_reports_invalid_rows(tmp_path):
    rows = [
        {"id": 7, "question": "问一", "answer": "答一"},
        {"question": "问二"},
        {"question": "问三", "answer": "答三"},
    ]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(InvalidExample) as err:
        list(iter_conversations(DataSource(path)))
    assert err.value.where.endswith("d.jsonl:2") and err.value.field == "answer"
    skipped = []
    got = list(iter_conversations(DataSource(path, skip_invalid=True), skipped=skipped.append))
    assert [c.row.index for c in got] == [0, 2]
    assert got[0].key == "7" and got[1].key == "问三\x00答三"  # the id, else the text
    assert got[1].messages[-1] == {"role": "assistant", "content": "答三"}
    assert [e.kind for e in skipped] == ["answer: missing (role 'answer')"]
    system = DataSource(path, skip_invalid=True, system_prompt="你是医生")
    assert next(iter_conversations(system)).messages[0] == {"role": "system", "content": "你是医生"}


def test_training_and_evaluation_share_one_data_vocabulary(tmp_path):
    """SFTDataModule's arguments and evaluation's DataSpec are DataSource's fields, with the
    same meaning: a datamodule's source reads the rows evaluation reads."""
    parameters = inspect.signature(SFTDataModule).parameters
    for f in dataclasses.fields(DataSource):
        assert parameters[f.name].default == f.default, f.name
    assert issubclass(DataSpec, DataSource)
    path = write_jsonl(tmp_path / "d.jsonl", [{"ask": "问", "reply": "答", "id": "x"}])
    columns = {"question": "ask", "answer": "reply"}
    data = dm(path, columns=columns, system_prompt="系统", skip_invalid=True)
    source = data.data_source("train")
    assert source == DataSource(path, "huatuo", columns, "train", None, "系统", True)
    spec = DataSpec(path, preset="huatuo", columns=columns, split="train", system_prompt="系统")
    as_eval = [(c.messages, c.key) for c in iter_conversations(spec)]
    assert as_eval == [(c.messages, c.key) for c in iter_conversations(source)]


def test_unit_hash_is_uniform_and_keyed_by_every_part():
    values = [unit_hash("seed", i) for i in range(2000)]
    assert all(0 <= v < 1 for v in values)
    assert 0.45 < sum(values) / len(values) < 0.55
    assert unit_hash("a", 1) != unit_hash("a", 2) != unit_hash("a1")
    assert in_validation("k", 0.3) == (unit_hash("k") < 0.3)


def test_presets_are_one_registry_behind_the_config_type_and_readme():
    assert get_args(Preset) == tuple(PRESETS)
    assert {name: preset.columns for name, preset in PRESETS.items()} == COLUMN_PRESETS
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("| preset | columns |") :].split("\n\n")[0].splitlines()[2:]
    rows = [[cell.strip() for cell in line.strip("|").split("|", 1)] for line in table]
    default = DataSource.preset
    assert rows == [
        [f"`{name}`" + (" (default)" if name == default else ""), preset.summary]
        for name, preset in PRESETS.items()
    ]


@pytest.mark.parametrize(
    "title, ask, question",
    [
        (
            "高血压能吃党参吗",
            "高血压能吃党参吗？平时血压150/95。",
            "高血压能吃党参吗？平时血压150/95。",
        ),
        ("孩子发烧怎么办？", "孩子发烧 怎么办", "孩子发烧 怎么办"),
        ("胃痛两天，吃什么药", "饭后加重。", "胃痛两天，吃什么药\n饭后加重。"),
        ("头晕乏力是什么原因", "", "头晕乏力是什么原因"),
        ("", "只有问题", "只有问题"),
    ],
)
def test_toyhom_question_is_title_and_ask_unless_the_ask_says_the_title(title, ask, question):
    record = {"department": "内科", "title": title, "ask": ask, "answer": "答"}
    assert title_and_ask(record)["ask"] == question
    assert title_and_ask(record)["department"] == "内科"


def test_toyhom_gb18030_csv_reads_for_training_and_evaluation(tmp_path):
    rows = [
        ("内科", "高血压能吃党参吗", "高血压能吃党参吗？", "可以少量，监测血压。"),
        ("儿科", "孩子咳嗽", "晚上咳得厉害，三岁。", "多喝水，必要时就医。"),
        ("内科", "胃痛怎么办", "饭后胃痛两天。", "清淡饮食，可服抑酸药。"),
    ]
    path = tmp_path / "内科5000-33000.csv"
    with open(path, "w", encoding="gb18030", newline="") as f:
        csv.writer(f).writerows([("department", "title", "ask", "answer"), *rows])
    assert "胃痛".encode("gb18030") in path.read_bytes()  # not UTF-8 on disk
    with pytest.raises(InvalidExample, match="not UTF-8 text .*data.encoding, e.g. gb18030"):
        list(iter_conversations(DataSource(str(path), preset="toyhom")))
    source = DataSource(str(path), preset="toyhom", encoding="gb18030")
    questions = [c.messages[0]["content"] for c in iter_conversations(source)]
    assert questions == [
        "高血压能吃党参吗？",
        "孩子咳嗽\n晚上咳得厉害，三岁。",
        "胃痛怎么办\n饭后胃痛两天。",
    ]
    data = dm(str(path), preset="toyhom", encoding="gb18030")
    assert len(list(SFTStream(data, "train", 0, 1).examples())) == 3
    spec = DataSpec(str(path), preset="toyhom", encoding="gb18030", slice_column="department")
    examples = load_examples(spec)
    assert [e.group for e in examples] == ["内科", "儿科", "内科"]
    assert examples[1].reference == "多喝水，必要时就医。"
    with pytest.raises(ValueError, match="unknown encoding 'gbk2'"):
        dm(str(path), preset="toyhom", encoding="gbk2")


# ShareGPT conversations, and hints for rows whose shape no preset was chosen for

SHAREGPT = f"{SAMPLE}/sharegpt_sample.jsonl"


def sharegpt_stream(source, **kwargs):
    """The training stream of `source` in source order, without a validation split."""
    dm = SFTDataModule(
        source=source, tokenizer="qwen3", val_fraction=0.0, shuffle_buffer=1, **kwargs
    )
    return SFTStream(dm, "train", 0, 1)


def test_sharegpt_multi_turn_sample_supervises_each_gpt_turn(qwen3_tokenizer):
    rows = [json.loads(line) for line in Path(SHAREGPT).read_text(encoding="utf-8").splitlines()]
    examples = list(sharegpt_stream(SHAREGPT, preset="sharegpt").examples())
    gpt = [
        t["value"] for r in rows for t in r["conversations"] if t["from"] in ("gpt", "assistant")
    ]
    assert len(examples) == len(gpt) == 7  # Qwen3 renders one sequence per assistant turn
    for value, ex in zip(gpt, examples, strict=True):
        supervised = qwen3_tokenizer.decode([t for t in ex["labels"] if t != -100])
        assert supervised.startswith(value)
        row = rows[ex["index"]]["conversations"]
        text = qwen3_tokenizer.decode(ex["input_ids"])
        history = row[: [t["value"] for t in row].index(value)]
        assert all(t["value"] in text and t["value"] not in supervised for t in history)
    assert "<|im_start|>system\n你是一名社区医院" in qwen3_tokenizer.decode(
        examples[0]["input_ids"]
    )


def test_sharegpt_rows_split_by_their_id():
    dm = SFTDataModule(source=SHAREGPT, tokenizer="qwen3", preset="sharegpt", val_fraction=0.5)
    train = [ex["index"] for ex in SFTStream(dm, "train", 0, 1).examples()]
    val = [ex["index"] for ex in SFTStream(dm, "val", 0, 1).examples()]
    assert set(train) | set(val) == {0, 1, 2, 3} and not set(train) & set(val)


@pytest.mark.parametrize(
    "row, preset, field, hint",
    [
        (
            {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
            "huatuo",
            "question",
            "fit preset sharegpt",
        ),
        (
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
            "huatuo",
            "question",
            "fit preset messages",
        ),
        (
            {"instruction": "q", "input": "", "output": "a"},
            "sharegpt",
            "conversations",
            "fit preset alpaca",
        ),
        (
            {"conversations": [{"speaker": "human", "text": "q"}]},
            "sharegpt",
            "conversations[0]",
            "(preset messages) or ShareGPT's {'from', 'value'} (preset sharegpt)",
        ),
        (
            {"conversations": [{"from": "doctor", "value": "q"}]},
            "sharegpt",
            "conversations[0].from",
            "unknown role 'doctor'; use human, user, gpt",
        ),
        (
            {"conversations": [{"from": "human", "value": ""}]},
            "sharegpt",
            "conversations[0].value",
            "missing, empty",
        ),
        (
            {"messages": [{"role": "human", "content": "q"}]},
            "messages",
            "messages[0].role",
            "preset sharegpt",
        ),
    ],
)
def test_unknown_shapes_name_the_presets_that_accept_them(tmp_path, row, preset, field, hint):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    with pytest.raises(InvalidExample) as err:
        list(sharegpt_stream(str(path), preset=preset).examples())
    assert err.value.where.endswith("rows.jsonl:1") and err.value.field == field
    assert hint in str(err.value)
