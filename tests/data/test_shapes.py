"""ShareGPT conversations and the hints for rows whose shape no preset was chosen for."""

import json
from pathlib import Path

import pytest

from medsft.data import InvalidExample, SFTDataModule, SFTStream

SHAREGPT = "data/sample/sharegpt_sample.jsonl"


def stream(source, **kwargs):
    dm = SFTDataModule(
        source=source, tokenizer="qwen3", val_fraction=0.0, shuffle_buffer=1, **kwargs
    )
    return SFTStream(dm, "train", 0, 1)


def test_sharegpt_multi_turn_sample_supervises_each_gpt_turn(qwen3_tokenizer):
    rows = [json.loads(line) for line in Path(SHAREGPT).read_text(encoding="utf-8").splitlines()]
    examples = list(stream(SHAREGPT, preset="sharegpt").examples())
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
        list(stream(str(path), preset=preset).examples())
    assert err.value.where.endswith("rows.jsonl:1") and err.value.field == field
    assert hint in str(err.value)
