"""What sample answers in TensorBoard cost the demo: its wall time with and without them.

    python benchmarks/samples_cost.py                 # 2 rounds, each: with, then without
    python benchmarks/samples_cost.py --rounds 3 -- --data.val_fraction 0.3

Each round runs the demo as README.md writes it (`python train.py --config configs/demo.yaml`,
logging into a temporary folder) with the default `--samples.*`, then with `--samples.n 0`, and
records each run's wall time. The run with samples also logs what its sampling took
(`samples/seconds`, one value per validation), so its share of that same run's wall time is
measured within one process, which other work on the machine disturbs far less than the
difference between two runs' wall times. Arguments after `--` go to both runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from record import write_result

ROOT = Path(__file__).resolve().parents[1]
DEMO = ["train.py", "--config", "configs/demo.yaml"]


def run(save_dir: Path, extra: list[str]) -> dict:
    """One demo run logging into `save_dir`: wall time, load before, samples logged."""
    sys.path.insert(0, str(ROOT))
    from tests.helpers import scalars

    load = [round(x, 2) for x in os.getloadavg()]
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, *DEMO, "--trainer.logger.init_args.save_dir", str(save_dir), *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"error: the demo exited {done.returncode}:\n{done.stderr[-2000:]}")
    run_dir = save_dir / "demo" / "version_0"
    try:
        seconds = scalars(run_dir, "samples/seconds")
    except KeyError:
        seconds = []
    return {
        "wall_s": round(wall, 2),
        "load_before_1_5_15min": load,
        "sampling_s_per_validation": [round(s, 3) for s in seconds],
        "sampling_s": round(sum(seconds), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="results file (default: results/)")
    parser.add_argument("extra", nargs="*", help="arguments for both runs (after --)")
    args = parser.parse_args()
    rounds = []
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as on, tempfile.TemporaryDirectory() as off:
            with_samples = run(Path(on), args.extra)
            without = run(Path(off), [*args.extra, "--samples.n", "0"])
        share = with_samples["sampling_s"] / with_samples["wall_s"]
        rounds.append({"with_samples": with_samples, "samples_off": without, "share": share})
        print(
            f"with samples {with_samples['wall_s']:.1f} s (sampling {with_samples['sampling_s']:.2f}"
            f" s = {share:.1%} of it), without {without['wall_s']:.1f} s"
        )
    figures = {
        "rounds": rounds,
        "sampling_share_of_demo_wall_time_median": round(
            statistics.median(r["share"] for r in rounds), 4
        ),
        "wall_s_with_samples_median": statistics.median(
            r["with_samples"]["wall_s"] for r in rounds
        ),
        "wall_s_samples_off_median": statistics.median(r["samples_off"]["wall_s"] for r in rounds),
    }
    write_result("samples_cost_demo", figures, args=vars(args), out=args.out)


if __name__ == "__main__":
    main()
