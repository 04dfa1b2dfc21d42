"""How many CPU threads the demo should train on: per-step times and the demo as README runs it.

    python benchmarks/cpu_threads.py                 # paired step times, then 2 rounds of the demo
    python benchmarks/cpu_threads.py --demo-rounds 0 # step times only (seconds)

1. Step times: the demo's model (`random:tiny`, full fine-tuning, batch 2 x 256 tokens, loss from
   hidden states at supervised positions as SFTModule computes it) alternating between 1 thread
   and torch's default (one per core) in one process, so both see the same machine load.
2. The demo exactly as README.md writes it, `python train.py --config configs/demo.yaml` with no
   OMP_NUM_THREADS (train.py then picks 1 thread for a tiny model), alternated with the same
   command under OMP_NUM_THREADS=<torch's default>, which is what it ran on before that rule.

Wall times of whole runs include Python and library start-up (about half of the demo).
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
sys.path.insert(0, str(ROOT))


def step_times(rounds: int, steps: int) -> dict[str, list[float]]:
    import torch

    from medsft.chat import IGNORE_INDEX
    from medsft.model.build import backbone_and_head, build_model
    from medsft.model.loss import masked_nll

    default = torch.get_num_threads()
    torch.manual_seed(0)
    model = build_model("random:tiny", finetune="full")
    backbone, head = backbone_and_head(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(0, 151_000, (2, 256))
    labels = ids.clone()
    labels[:, :100] = IGNORE_INDEX

    def step() -> None:
        hidden = backbone(input_ids=ids).last_hidden_state
        nll, n = masked_nll(labels, hidden_states=hidden, head=head)
        (nll / n).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up
    times: dict[str, list[float]] = {"1 thread": [], f"{default} threads (torch default)": []}
    for _ in range(rounds):
        for threads, key in zip((1, default), times, strict=True):
            torch.set_num_threads(threads)
            start = time.perf_counter()
            for _ in range(steps):
                step()
            times[key].append(round((time.perf_counter() - start) / steps, 4))
    torch.set_num_threads(default)
    return times


def demo_times(rounds: int, default_threads: int) -> dict[str, list[float]]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["PYTHONPATH"] = str(ROOT)
    runs = {
        "as README writes it (no OMP_NUM_THREADS)": env,
        f"OMP_NUM_THREADS={default_threads} (before the thread rule)": {
            **env,
            "OMP_NUM_THREADS": str(default_threads),
        },
    }
    times: dict[str, list[float]] = {key: [] for key in runs}
    with tempfile.TemporaryDirectory() as logs:
        cmd = [sys.executable, "train.py", "--config", "configs/demo.yaml"]
        cmd += ["--trainer.logger.init_args.save_dir", logs]
        for _ in range(rounds):
            for key, run_env in runs.items():
                start = time.perf_counter()
                subprocess.run(cmd, cwd=ROOT, env=run_env, check=True, capture_output=True)
                times[key].append(round(time.perf_counter() - start, 1))
                print(f"demo, {key}: {times[key][-1]} s", flush=True)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4, help="alternations of the step timing")
    parser.add_argument("--steps", type=int, default=4, help="steps per timing")
    parser.add_argument("--demo-rounds", type=int, default=2)
    args = parser.parse_args()

    import torch

    steps = step_times(args.rounds, args.steps)
    figures: dict = {"step_s": steps, "step_s_median": {}}
    for key, values in steps.items():
        figures["step_s_median"][key] = statistics.median(values)
        print(f"step, {key}: median {statistics.median(values):.3f} s ({values})")
    if args.demo_rounds:
        demo = demo_times(args.demo_rounds, torch.get_num_threads())
        figures["demo_wall_s"] = demo
    write_result("cpu_threads", figures, args=vars(args))


if __name__ == "__main__":
    main()
