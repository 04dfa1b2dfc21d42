"""medsft.cli.export: a full fine-tuning run answered in one line before torch is imported, formatted
--help, the docstring's example paths are the demo's, and a merge with a quiet console."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import medsft.cli.export
from tests.helpers import ROOT

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
HEAVY = ("torch", "transformers", "peft", "lightning", "bitsandbytes")


def cli(*args: str, code: str | None = None) -> subprocess.CompletedProcess:
    command = (
        [sys.executable, "-c", code, *args]
        if code
        else [sys.executable, "-m", "medsft.cli.export", *args]
    )
    return subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> Path:
    """A full fine-tuning run directory as train.py leaves it: version_0/model/."""
    from medsft.model.build import build_model, load_tokenizer

    run = tmp_path_factory.mktemp("logs") / "version_0"
    build_model("random:tiny", finetune="full", seed=0).save_pretrained(run / "model")
    load_tokenizer("qwen3").save_pretrained(run / "model")
    return run


def test_full_run_is_answered_in_one_line_before_torch_is_imported(full_run, tmp_path):
    with pytest.raises(medsft.cli.export.AlreadyStandalone, match="already is a standalone model"):
        medsft.cli.export.export(full_run, tmp_path / "merged")  # the Python API refuses it too
    assert not (tmp_path / "merged").exists()

    # The command itself, then which heavy libraries it imported on the way.
    code = (
        "import runpy, sys; sys.argv[0] = 'medsft.cli.export'; "
        "runpy.run_module('medsft.cli.export', run_name='__main__'); "
        f"print('imported:', [m for m in {HEAVY!r} if m in sys.modules], file=sys.stderr)"
    )
    result = cli(str(full_run), code=code)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and str(full_run / "model") in lines[0], result.stdout
    assert "already is a standalone model" in lines[0]
    assert result.stderr.strip() == "imported: []"


def test_a_path_without_a_model_is_one_error_line(tmp_path):
    result = cli(str(tmp_path))
    assert result.returncode == 1 and not result.stdout
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    assert str(tmp_path) in result.stderr


def test_help_is_formatted_argparse_help():
    result = cli("--help")
    assert result.returncode == 0
    out = result.stdout
    assert out.startswith("usage: python -m medsft.cli.export")
    assert "positional arguments:" in out and "--out OUT" in out and "--tolerance" in out
    assert "Args:" not in out and "Returns:" not in out
    assert "examples:\n    python train.py --config configs/demo.yaml" in out


def test_docstring_examples_are_the_demos_own_paths():
    """The first export example runs on the demo's first run, which is a full fine-tuning run."""
    commands = [
        shlex.split(line.split("#")[0])
        for line in medsft.cli.export.__doc__.splitlines()
        if line.strip().startswith(("python train.py", "python -m medsft.cli.export"))
    ]
    demo = yaml.safe_load((ROOT / "configs/demo.yaml").read_text())
    logger = demo["trainer"]["logger"]["init_args"]
    runs = Path(logger["save_dir"]) / logger["name"]
    assert commands[0][:4] == ["python", "train.py", "--config", "configs/demo.yaml"]
    assert demo["model"]["finetune"] == "full"  # so version_0 holds model/, not adapter/
    assert commands[1] == ["python", "-m", "medsft.cli.export", str(runs / "version_0")]
    # The second training run (LoRA) is version_1, which the merge example exports.
    assert commands[2][-2:] == ["--model.finetune", "lora"]
    assert commands[3][3] == str(runs / "version_1")


@pytest.mark.slow
def test_merging_an_adapter_prints_no_library_noise(tmp_path, qwen3_tokenizer):
    """No bitsandbytes "pip install kernels" note, warnings or banners: only export's own line."""
    from medsft.model.build import build_model

    model = build_model("random:tiny", finetune="lora", seed=0)
    model.peft_config["default"].base_model_name_or_path = "random:tiny"
    adapter = tmp_path / "version_1" / "adapter"
    model.save_pretrained(adapter)
    qwen3_tokenizer.save_pretrained(adapter)
    result = cli(str(tmp_path / "version_1"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"merged model saved to {tmp_path / 'version_1' / 'merged'}")
    noise = ("kernels-community", "pip install kernels", "Warning", "warn(", "available: False")
    assert not [line for line in result.stderr.splitlines() if any(n in line for n in noise)], (
        result.stderr
    )
    # What stderr may still hold: transformers' progress bars while it loads and writes weights.
    # A tqdm bar ends "n/N [elapsed<left, rate]"; the rate reads s/it on a slow machine.
    bar = re.compile(r"\d+/\d+ \[[\d:]+<[\d:?]+, +[\d.?]+ *(it/s|s/it)\]")
    assert all(bar.search(line) for line in result.stderr.splitlines() if line.strip()), (
        result.stderr
    )
