"""medsft.evaluation.lock: a second evaluation on one output_dir is refused; a killed one frees it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from medsft.cli import evaluate as evaluate_script
from medsft.evaluation.lock import LOCK_NAME, OutputDirBusy, output_lock

ROOT = Path(__file__).resolve().parents[2]

HOLD = (
    "import sys, time\n"
    "from medsft.evaluation.lock import output_lock\n"
    "with output_lock(sys.argv[1]):\n"
    "    print('held', flush=True)\n"
    "    time.sleep(float(sys.argv[2]))\n"
)


def _holder(out_dir: Path, seconds: float = 60) -> subprocess.Popen:
    """Another process holding `out_dir`, returned once it holds it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out_dir), str(seconds)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_process_is_refused_with_one_line_and_a_killed_holder_frees_the_dir(tmp_path):
    out = tmp_path / "out"
    proc = _holder(out)
    try:
        with pytest.raises(OutputDirBusy) as err, output_lock(out):
            pytest.fail("entered a held output_dir")
        message = str(err.value)
        assert "\n" not in message and f"pid {proc.pid}" in message
        assert "is in use by another evaluation" in message and "--output_dir" in message
    finally:
        proc.kill()  # SIGKILL: no cleanup runs in the holder
        proc.wait()
    with output_lock(out):  # the kernel released the dead holder's lock
        assert f"pid {__import__('os').getpid()}" in (out / LOCK_NAME).read_text()


def test_the_lock_is_released_when_the_block_ends(tmp_path):
    with output_lock(tmp_path):
        pass
    proc = _holder(tmp_path, seconds=0)
    assert proc.wait(timeout=60) == 0
    with output_lock(tmp_path, enabled=False):  # other ranks hold nothing
        proc = _holder(tmp_path, seconds=0)
        assert proc.wait(timeout=60) == 0


def test_evaluate_on_a_held_output_dir_stops_before_writing_anything(tmp_path):
    out = tmp_path / "out"
    systems = [{"name": "gpt", "path": str(ROOT / "data/sample/baseline_answers.jsonl")}]
    argv = [
        "--systems",
        json.dumps(systems),
        "--test_set.source",
        str(ROOT / "data/sample/test_zh_med.json"),
        "--test_set.limit",
        "3",
        "--output_dir",
        str(out),
        "--scoring.n_resamples",
        "0",
        "--runtime.progress",
        "false",
        "--judge.enabled",
        "false",
    ]
    proc = _holder(out)
    try:
        with pytest.raises(OutputDirBusy, match=f"pid {proc.pid}"):
            evaluate_script.main(argv)
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]
    finally:
        proc.kill()
        proc.wait()
    report = evaluate_script.main(argv)
    assert report["test_set"]["n"] == 3 and (out / "report.md").exists()
