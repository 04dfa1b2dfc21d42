"""SIGTERM during the demo run: exit status, seconds from the signal to the exit, steps lost.

    python benchmarks/preemption.py                 # signal at step 12 of configs/demo.yaml
    python benchmarks/preemption.py --step 25 --signal USR1 --slurm   # fake SLURM job, requeue

Runs `python train.py --config configs/demo.yaml` as a scheduler would: waits until the run has
taken `--step` optimizer steps (a callback writes the step into a file), sends the signal from
outside, and times the exit. Steps lost = the last step the process completed minus the step
of the checkpoint it left; then `--ckpt_path last` resumes and the resumed run's first step is
checked to follow the checkpoint. Writes benchmarks/results/preemption_<signal>.json.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from record import write_result  # noqa: E402


def command(save_dir: Path, step_file: Path, *extra: str) -> list[str]:
    callbacks = (
        f'[{{"class_path": "tests.resume_helpers.StepFile", '
        f'"init_args": {{"path": "{step_file}"}}}}]'
    )
    return [
        sys.executable,
        str(ROOT / "train.py"),
        "--config",
        str(ROOT / "configs/demo.yaml"),
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.logger.init_args.save_dir",
        str(save_dir),
        "--trainer.callbacks",
        callbacks,
        *extra,
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--step", type=int, default=12, help="send the signal after this step")
    parser.add_argument("--signal", default="TERM", choices=["TERM", "INT", "USR1"])
    parser.add_argument("--slurm", action="store_true", help="fake SLURM job, fake scontrol")
    args = parser.parse_args()
    signum = getattr(signal, f"SIG{args.signal}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
        if args.slurm:
            (tmp / "scontrol").write_text("#!/bin/sh\nexit 0\n")
            (tmp / "scontrol").chmod(0o755)
            env.update(SLURM_JOB_ID="1", PATH=f"{tmp}:{env['PATH']}")
        step_file = tmp / "step"
        proc = subprocess.Popen(
            command(tmp, step_file),
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        while not (step_file.exists() and int(step_file.read_text()) >= args.step):
            if proc.poll() is not None:
                raise SystemExit(proc.communicate()[1][-3000:])
            time.sleep(0.02)
        sent = time.monotonic()
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=600)
        seconds = time.monotonic() - sent
        saved_line = next((line for line in err.splitlines() if ": saved step" in line), "")
        reached = int(step_file.read_text())
        ckpt = tmp / "demo/version_0/checkpoints/last.ckpt"
        saved = torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"]
        resumed = subprocess.run(
            command(tmp, step_file, "--ckpt_path", "last"),
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        result = {
            "signal": f"SIG{args.signal}",
            "sent_after_step": args.step,
            "exit_code": proc.returncode,
            "seconds_signal_to_exit": round(seconds, 2),
            "last_step_completed": reached,
            "checkpoint_step": saved,
            "steps_lost": reached - saved,
            "train_py_says": saved_line,
            "resume_exit_code": resumed.returncode,
            "resumed_into_same_version": not (tmp / "demo/version_1").exists(),
        }
    print(result)
    write_result(f"preemption_{args.signal.lower()}", result, args=vars(args))


if __name__ == "__main__":
    main()
