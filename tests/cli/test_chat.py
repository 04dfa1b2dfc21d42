"""python -m medsft.cli.chat: the label audit of a training config's data."""

import subprocess
import sys

import pytest

from medsft.cli.chat import main

SHAREGPT = "data/sample/sharegpt_sample.jsonl"


def test_label_audit_takes_data_overrides_with_or_without_a_config(capsys):
    main(["--data.source", SHAREGPT, "--data.preset", "sharegpt", "--n", "2", "--no-color"])
    out = capsys.readouterr().out
    assert out.count("=== example") == 2 and "[[孩子两岁" not in out
    assert "[[嗓子疼多数由病毒引起" in out  # the gpt turn is supervised
    main(
        [
            "--config",
            "configs/demo.yaml",
            "--data.source",
            SHAREGPT,
            "--data.preset",
            "sharegpt",
            "--data.val_fraction",
            "0",
            "--n",
            "1",
            "--no_color",
        ]
    )
    assert "[[嗓子疼多数由病毒引起" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--config", "configs/demo.yaml", "--data.preset", "nonsense"])


def test_inspection_command_marks_supervised_spans():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "medsft.cli.chat",
            "--config",
            "configs/demo.yaml",
            "--n",
            "2",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    assert out.count("=== example") == 2
    assert "<|im_end|>]]" in out
    assert "[[<|im_start|>" not in out and "user\n[[" not in out
