"""Shared by the tests of medsft.data: a datamodule on local data and small readers of streams."""

import json
from pathlib import Path

from medsft.chat import IGNORE_INDEX
from medsft.data import SFTDataModule

SAMPLE = str(Path(__file__).resolve().parents[2] / "data" / "sample")


def dm(source, **kwargs):
    """An SFTDataModule on `source` with the bundled tokenizer, no validation split and no
    shuffling unless asked."""
    kwargs.setdefault("val_fraction", 0.0)
    kwargs.setdefault("shuffle_buffer", 1)
    return SFTDataModule(source=source, tokenizer="qwen3", **kwargs)


def indices(stream):
    """The source row index of every example of a stream."""
    return [ex["index"] for ex in stream]


def write_jsonl(path, rows):
    """Write `rows` as JSONL to `path`; returns the path as a string."""
    path.write_text(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8"
    )
    return str(path)


def data_end(tokenizer, example):
    """Whether an example's supervised tokens end with the end-of-turn token."""
    supervised = [t for t in example["labels"] if t != IGNORE_INDEX]
    return tokenizer.decode(supervised).endswith("<|im_end|>")
