"""medsft.export on a full fine-tuning run: nothing to merge, and it says where the model is."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_full_run_export_points_to_its_standalone_model(tmp_path):
    from medsft.export import AlreadyStandalone, export
    from medsft.model import build_model, load_tokenizer

    model_dir = tmp_path / "version_0" / "model"
    build_model("random:tiny", finetune="full", seed=0).save_pretrained(model_dir)
    load_tokenizer("qwen3").save_pretrained(model_dir)
    with pytest.raises(AlreadyStandalone, match="already is a standalone model") as err:
        export(tmp_path / "version_0", tmp_path / "merged")
    assert str(model_dir) in str(err.value) and not (tmp_path / "merged").exists()

    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    cli = subprocess.run(
        [sys.executable, "-m", "medsft.export", str(tmp_path / "version_0"),
         "--out", str(tmp_path / "merged")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert cli.returncode == 1
    assert "nothing to export" in cli.stderr and str(model_dir) in cli.stderr
    assert "Traceback" not in cli.stderr
