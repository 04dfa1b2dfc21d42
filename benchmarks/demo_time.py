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
loaded-machine figure; README.md states it as such.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from record import RESULTS, write_result

ROOT = Path(__file__).resolve().parents[1]
DEMO = ["train.py", "--config", "configs/demo.yaml"]


def timed(args: list[str]) -> dict[str, float | list[float]]:
    """Run `python ARGS` in the repository root; wall and CPU seconds, load average before."""
    load = [round(x, 2) for x in os.getloadavg()]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"error: {' '.join(args)} exited {done.returncode}:\n{done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "load_before_1_5_15min": load}


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
