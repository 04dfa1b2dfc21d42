"""`python -m medsft.cli.leakage`: the command line of the leakage check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medsft.cli.leakage import build_parser, main


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


def test_words_for_english_and_the_command_line(tmp_path):
    test = write_jsonl(
        tmp_path / "test.jsonl",
        [
            {
                "Question": "What are the early symptoms of type 2 diabetes in adults?",
                "Answer": "x y",
            },
            {"Question": "How is asthma treated?", "Answer": "Inhalers."},
        ],
    )
    train = write_jsonl(
        tmp_path / "train.jsonl",
        [
            {
                "Question": "Tell me: what ARE the early symptoms of type 2 diabetes, doctor?",
                "Answer": "Thirst.",
            },
        ],
    )
    out = tmp_path / "leak.json"
    leak = main(
        [
            "--test_set.source",
            str(test),
            "--test_set.preset",
            "medquad",
            "--leakage.train_set.source",
            str(train),
            "--leakage.train_set.preset",
            "medquad",
            "--leakage.seed_length",
            "4",
            "--output",
            str(out),
        ]
    )
    assert leak["unit"] == "word"
    first = leak["items"][0]
    assert first["question_overlap"] == 9 and first["question_share"] == pytest.approx(9 / 11, 1e-3)
    assert first["flagged"] and not leak["items"][1]["flagged"]
    assert json.loads(out.read_text())["flagged"] == 1
    assert "**1 flagged**" in out.with_suffix(".md").read_text()


def test_the_module_docstrings_commands_parse():
    import shlex

    import medsft.cli.leakage as script
    import medsft.evaluation.leakage as module

    for doc in (module.__doc__, script.__doc__):
        joined = doc.replace("\\\n", " ")
        commands = [
            line.strip() for line in joined.splitlines() if "python -m medsft.cli.leakage" in line
        ]
        assert commands
        for command in commands:
            args = shlex.split(command)[3:]
            if args != ["--help"]:
                build_parser().parse_args(args)  # raises (SystemExit) on an unknown flag


def test_the_training_set_is_read_as_train_py_reads_it_by_default():
    """README: `huatuo` is the default preset; the tool read training files as `course` lists."""
    leak = main(
        [
            "--test_set.source",
            "data/sample/test_zh_med.json",
            "--leakage.train_set.source",
            "data/sample/huatuo_sample.jsonl",
        ]
    )
    assert leak["train_rows"] == 64
