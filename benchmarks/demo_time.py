"""The demo's wall time exactly as README.md writes it, with how loaded the machine was.

    python benchmarks/demo_time.py              # 2 rounds of the demo, each after a `--help` run
    python benchmarks/demo_time.py --rounds 3

Each round runs, from the repository root and with the caller's environment (no
OMP_NUM_THREADS unless the caller set one):

1. `python train.py --help`: interpreter and library start-up plus building the CLI, the fixed
   cost in every run.
2. `python train.py --config configs/demo.yaml`: the demo, writing `logs/demo/version_N/` as a
   user's run would.

For each it records the wall time, the CPU time the child used (user + system: what the run
costs, which other work on the machine changes much less than the wall time), and the load
average just before it started. A wall time measured while other work shared the cores is a
loaded-machine figure; README.md states it as such. For the demo it also records what the run
logged: the first and last train and validation losses, and the sample answers in TensorBoard.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from record import RESULTS, write_result

ROOT = Path(__file__).resolve().parents[1]
DEMO = ["train.py", "--config", "configs/demo.yaml"]


def timed(args: list[str]) -> dict[str, Any]:
    """Run `python ARGS` in the repository root; wall and CPU seconds, load average before, and
    (for a training run) what it logged."""
    load = [round(x, 2) for x in os.getloadavg()]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"error: {' '.join(args)} exited {done.returncode}:\n{done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result: dict[str, Any] = {
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "load_before_1_5_15min": load,
    }
    saved = re.search(r"^saved model to (\S+)/model$", done.stdout, re.M)
    if saved:
        result["logged"] = logged(ROOT / saved.group(1))
    return result


def logged(run_dir: Path) -> dict[str, Any]:
    """A run's first and last losses and its sample answers, from its TensorBoard events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"tensors": 0, "scalars": 0})
    acc.Reload()
    loss = {
        tag: [round(e.value, 2) for e in acc.Scalars(tag)] for tag in ("train/loss", "val/loss")
    }
    samples = [t for t in acc.Tags()["tensors"] if t.startswith("samples/")]
    return {
        "run": str(run_dir.relative_to(ROOT)),
        "train_loss_first_last": [loss["train/loss"][0], loss["train/loss"][-1]],
        "val_loss_first_last": [loss["val/loss"][0], loss["val/loss"][-1]],
        "sample_prompts": len(samples),
        "sample_validations": len(acc.Tensors(samples[0])) if samples else 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="demo runs (each after --help)")
    parser.add_argument(
        "--keep-previous",
        action="store_true",
        help="carry the rounds of the existing results file into this one (earlier_runs)",
    )
    args = parser.parse_args()
    previous = RESULTS / "demo_time.json"
    earlier = []
    if args.keep_previous and previous.exists():
        old = json.loads(previous.read_text(encoding="utf-8"))
        earlier = old["figures"].get("earlier_runs", [])
        earlier.append({"timestamp_utc": old["timestamp_utc"], "rounds": old["figures"]["rounds"]})

    rounds = []
    for i in range(args.rounds):
        startup = timed(["train.py", "--help"])
        demo = timed(DEMO)
        rounds.append({"help": startup, "demo": demo})
        print(f"round {i + 1}: --help {startup}, demo {demo}", flush=True)
    walls = [r["demo"]["wall_s"] for r in rounds]
    figures = {
        "demo_command": "python " + " ".join(DEMO),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "rounds": rounds,
        "demo_wall_s_median": statistics.median(walls),
        "demo_wall_s_max": max(walls),
        "demo_cpu_s_median": statistics.median(r["demo"]["cpu_s"] for r in rounds),
        "help_wall_s_median": statistics.median(r["help"]["wall_s"] for r in rounds),
    }
    if earlier:
        figures["earlier_runs"] = earlier
    write_result("demo_time", figures, args=vars(args))


if __name__ == "__main__":
    main()
