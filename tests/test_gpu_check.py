"""benchmarks/gpu_check.py runs end to end on a CPU (--cpu-smoke), so it works when a GPU comes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_cpu_smoke_runs_every_part_and_records_its_figures(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--cpu-smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    summary = json.loads((tmp_path / "summary.json").read_text())
    parts = summary["parts"]
    assert done.returncode == 0, {p: r.get("log_tail", r["status"]) for p, r in parts.items()}
    assert list(parts) == [
        "tests",
        "train_qlora",
        "train_lora",
        "train_full",
        "attention",
        "vs_trl",
        "generate",
        "mcq_vs_cmmlu",
    ]
    for name in ("train_qlora", "train_lora", "train_full"):
        figures = parts[name]["figures"]
        assert figures["steps_timed"] == 2 and figures["tokens_per_s"] > 0, name
        assert figures["saved_activation_kib_per_token"] > 0, name
    kernels = parts["attention"]["figures"]["kernels"]
    assert {"padded sdpa", "packed sdpa", "packed sdpa_varlen"} <= set(kernels)
    assert all(k["loss_rel_diff_vs_padded"] < 1e-5 for k in kernels.values())
    vs_trl = parts["vs_trl"]["figures"]
    assert vs_trl["medsft"]["tokens_per_s"] > 0 and vs_trl["trl"]["tokens_per_s"] > 0
    assert parts["generate"]["figures"]["batch_2"]["new_tokens"] > 0
    mcq = parts["mcq_vs_cmmlu"]["figures"]
    assert (
        mcq["questions"] > 0
        and mcq["predictions_agree"] == mcq["prompts_identical"] == mcq["questions"]
    )
    assert summary["machine"]["cores"] >= 1 and "torch" in summary["versions"]
