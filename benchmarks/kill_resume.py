"""Work lost when the demo is stopped twice: SIGTERM, resume, kill -9, resume to the end.

    python benchmarks/kill_resume.py                    # SIGTERM after step 2, SIGKILL at 30
    python benchmarks/kill_resume.py --kill_at 25       # the kill at step 25 instead
    python benchmarks/kill_resume.py --max_steps 20 --kill_at 15   # shorter (the test's)

Runs `python train.py --config configs/demo.yaml` (40 steps, validation and a periodic
checkpoint every 10) as a scheduler would treat it: SIGTERM from outside once the run reports
`--term_at` steps; the same command with `--ckpt_path last`, which dies by SIGKILL at
`--kill_at` (tests.resume_helpers.KillAt: no exception, no cleanup, before that step's
checkpoint); the same command again, which must finish. Figures: each run's exit status, the
step each resume started from, the steps the second resume redid, the checkpoint folder at the
end, whether the run finished in one version folder with a whole model/ and every validation
point logged once, and the seconds of each checkpoint save the resumed runs printed. Step counts
do not depend on the machine's load; save seconds do. Writes benchmarks/results/kill_resume.json
(or --out).
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

from preemption import command  # noqa: E402
from record import write_result  # noqa: E402


def checkpoint_step(run: Path) -> int:
    state = torch.load(run / "checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    return int(state["global_step"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--term_at", type=int, default=2, help="SIGTERM after this step")
    parser.add_argument("--kill_at", type=int, default=30, help="SIGKILL at this step")
    parser.add_argument("--max_steps", type=int, default=40, help="the demo's length (40)")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here")
    args = parser.parse_args()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from medsft.model.trained import missing_files

    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run, step_file = tmp / "demo/version_0", tmp / "step"
        length = ("--trainer.max_steps", str(args.max_steps))
        first = subprocess.Popen(
            [*command(tmp, step_file), *length],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        while not (step_file.exists() and int(step_file.read_text()) >= args.term_at):
            if first.poll() is not None:
                raise SystemExit(f"the first run ended before step {args.term_at}")
            time.sleep(0.02)
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=600)
        saved_at_term = checkpoint_step(run)

        kill = f'{{"class_path": "tests.resume_helpers.KillAt", "init_args": {{"step": {args.kill_at}}}}}'
        second = subprocess.run(
            [
                *command(tmp, step_file, "--ckpt_path", "last"),
                *length,
                "--trainer.callbacks+",
                kill,
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        resumed_from = checkpoint_step(run)
        third = subprocess.run(
            [*command(tmp, step_file, "--ckpt_path", "last"), *length],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        saves = [
            float(line.rsplit(" in ", 1)[1].split(" s ")[0])
            for line in (second.stdout + third.stdout).splitlines()
            if line.startswith("checkpoint: step ")
        ]
        events = EventAccumulator(str(run))
        events.Reload()
        val_steps = [e.step for e in events.Scalars("val/loss")]
        model = run / "model"
        result = {
            "sigterm_after_step": args.term_at,
            "sigterm_exit_code": first.returncode,
            "checkpoint_step_after_sigterm": saved_at_term,
            "sigkill_at_step": args.kill_at,
            "sigkill_exit_code": second.returncode,
            "second_resume_started_from_step": resumed_from,
            "steps_redone": args.kill_at - resumed_from,
            "final_exit_code": third.returncode,
            "final_step": checkpoint_step(run),
            "version_folders": sorted(p.name for p in run.parent.iterdir()),
            "checkpoint_files": {
                p.name: p.stat().st_size for p in sorted((run / "checkpoints").iterdir())
            },
            "model_complete": model.is_dir() and missing_files(model) is None,
            "val_loss_steps": val_steps,
            "save_seconds_after_the_first_resume": saves,
            "final_stderr_tail": third.stderr[-1500:] if third.returncode else "",
        }
    print(result)
    write_result("kill_resume", result, args=vars(args), out=args.out)


if __name__ == "__main__":
    main()
