"""One-shot GPU check: every GPU figure medsft still lacks, in one command under 9 minutes.

    bash benchmarks/gpu_check.sh                 # on a machine with one CUDA GPU
    python benchmarks/gpu_check.py --cpu-smoke   # the same parts at tiny shapes, on a CPU

Parts, in order, each a subprocess (with --cpu-smoke a child forked from this process, which
imported torch, transformers and Lightning once) with its own time budget (a part that overruns is stopped and
recorded as timed out; one that would not fit the time left is skipped and recorded so):
- tests: the `gpu`-marked tests (pytest -m gpu);
- train_qlora_4B, train_lora_4B, train_full_0.6B: benchmarks/train_bench.py with configs/qlora.yaml
  and lora.yaml at the Qwen3-4B shape and full.yaml at 0.6B (random weights, 1024-token rows
  packed from examples of mixed lengths, 20 timed steps): tokens/s, MFU, peak memory, saved
  activations per token;
- attention: benchmarks/attention_kernels.py, each kernel available there on packed rows;
- vs_trl: benchmarks/vs_trl.py --packing at the Qwen3-0.6B shape;
- generate: benchmarks/generate_bench.py, medsft.model.generate at the Qwen3-4B shape, batch 8 and 32;
- mcq_vs_cmmlu: benchmarks/mcq_vs_cmmlu.py, MCQ loglik scoring against CMMLU's own loop at the
  Qwen3-0.6B shape in bf16 (CMMLU's medical subjects from ../shared/data when there, else the
  sample questions): questions/s of both, the ratio and the agreement.
Each part's JSON lands in `--out` (default benchmarks/results/gpu_check/, or gpu_check_cpu_smoke/
with --cpu-smoke) and the summary, written after every part, in <out>/summary.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks")]

from record import machine, versions  # noqa: E402

PY = sys.executable
SMOKE_BUDGET = 300
"""Seconds per part in --cpu-smoke: tiny shapes, but a busy CPU can be slow."""
B = "benchmarks"


def parts(out: Path, smoke: bool) -> list[tuple[str, int, list[str]]]:
    """(name, budget in seconds, command) of each part; tiny shapes with `smoke`."""
    if smoke:
        train = [
            "--preset",
            "tiny",
            "--cpu",
            "--seq-len",
            "128",
            "--batch-size",
            "2",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--mixed-lengths",
        ]
        b = SMOKE_BUDGET
        return [
            (
                "tests",
                b,
                [
                    PY,
                    "-m",
                    "pytest",
                    "-q",
                    "-p",
                    "no:cacheprovider",
                    "-m",
                    "gpu",
                    "tests/test_gpu.py",
                    f"--junitxml={out}/tests.xml",
                ],
            ),
            (
                "train_qlora",
                b,
                [
                    PY,
                    f"{B}/train_bench.py",
                    "--config",
                    "configs/qlora.yaml",
                    *train,
                    "--out",
                    f"{out}/train_qlora.json",
                ],
            ),
            (
                "train_lora",
                b,
                [
                    PY,
                    f"{B}/train_bench.py",
                    "--config",
                    "configs/lora.yaml",
                    *train,
                    "--out",
                    f"{out}/train_lora.json",
                ],
            ),
            (
                "train_full",
                b,
                [
                    PY,
                    f"{B}/train_bench.py",
                    "--config",
                    "configs/full.yaml",
                    *train,
                    "--dtype",
                    "float32",
                    "--out",
                    f"{out}/train_full.json",
                ],
            ),
            (
                "attention",
                b,
                [
                    PY,
                    f"{B}/attention_kernels.py",
                    "--preset",
                    "tiny",
                    "--layers",
                    "0",
                    "--batch-size",
                    "2",
                    "--max-length",
                    "128",
                    "--rounds",
                    "1",
                    "--out",
                    f"{out}/attention.json",
                ],
            ),
            (
                "vs_trl",
                b,
                [
                    PY,
                    f"{B}/vs_trl.py",
                    "--packing",
                    "--batch-size",
                    "2",
                    "--max-length",
                    "128",
                    "--steps",
                    "2",
                    "--warmup",
                    "1",
                    "--rounds",
                    "1",
                    "--data",
                    "data/sample/huatuo_sample.jsonl",
                    "--out",
                    f"{out}/vs_trl.json",
                ],
            ),
            (
                "generate",
                b,
                [
                    PY,
                    f"{B}/generate_bench.py",
                    "--preset",
                    "tiny",
                    "--batch-sizes",
                    "2",
                    "--new-tokens",
                    "4",
                    "--batches",
                    "1",
                    "--out",
                    f"{out}/generate.json",
                ],
            ),
            (
                "mcq_vs_cmmlu",
                b,
                [
                    PY,
                    f"{B}/mcq_vs_cmmlu.py",
                    "--preset",
                    "tiny",
                    "--per-subject",
                    "3",
                    "--rounds",
                    "1",
                    "--out",
                    f"{out}/mcq_vs_cmmlu.json",
                ],
            ),
        ]
    train = ["--seq-len", "1024", "--steps", "20", "--warmup", "3", "--mixed-lengths"]
    return [
        (
            "tests",
            60,
            [
                PY,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "-m",
                "gpu",
                "tests",
                f"--junitxml={out}/tests.xml",
            ],
        ),
        (
            "train_qlora_4B",
            120,
            [
                PY,
                f"{B}/train_bench.py",
                "--config",
                "configs/qlora.yaml",
                "--preset",
                "Qwen3-4B",
                *train,
                "--out",
                f"{out}/train_qlora_4B.json",
            ],
        ),
        (
            "train_lora_4B",
            100,
            [
                PY,
                f"{B}/train_bench.py",
                "--config",
                "configs/lora.yaml",
                "--preset",
                "Qwen3-4B",
                *train,
                "--out",
                f"{out}/train_lora_4B.json",
            ],
        ),
        (
            "train_full_0.6B",
            60,
            [
                PY,
                f"{B}/train_bench.py",
                "--config",
                "configs/full.yaml",
                "--preset",
                "Qwen3-0.6B",
                *train,
                "--out",
                f"{out}/train_full_0.6B.json",
            ],
        ),
        (
            "attention",
            45,
            [
                PY,
                f"{B}/attention_kernels.py",
                "--preset",
                "Qwen3-4B",
                "--layers",
                "0",
                "--batch-size",
                "8",
                "--max-length",
                "1024",
                "--rounds",
                "3",
                "--out",
                f"{out}/attention.json",
            ],
        ),
        (
            "vs_trl",
            90,
            [
                PY,
                f"{B}/vs_trl.py",
                "--packing",
                "--preset",
                "Qwen3-0.6B",
                "--batch-size",
                "8",
                "--max-length",
                "1024",
                "--steps",
                "10",
                "--warmup",
                "2",
                "--rounds",
                "2",
                "--out",
                f"{out}/vs_trl.json",
            ],
        ),
        (
            "generate",
            45,
            [
                PY,
                f"{B}/generate_bench.py",
                "--preset",
                "Qwen3-4B",
                "--batch-sizes",
                "8,32",
                "--new-tokens",
                "128",
                "--batches",
                "1",
                "--out",
                f"{out}/generate.json",
            ],
        ),
        (
            "mcq_vs_cmmlu",
            45,
            [
                PY,
                f"{B}/mcq_vs_cmmlu.py",
                "--preset",
                "Qwen3-0.6B",
                "--device",
                "cuda",
                "--dtype",
                "bfloat16",
                "--per-subject",
                "60",
                "--rounds",
                "2",
                "--out",
                f"{out}/mcq_vs_cmmlu.json",
            ],
        ),
    ]


def run_forked(cmd: list[str], log: Path, budget: int) -> int | None:
    """`cmd` (`PY script args` or `PY -m module args`) in a forked child of this process, which
    has torch, transformers and Lightning imported already; its exit status (None: stopped at
    `budget` seconds). --cpu-smoke only: each part's run is tiny beside the ~6 s those imports
    take, and a CPU process forks safely (CUDA, never initialised here, would not)."""
    import runpy
    import signal
    import traceback

    pid = os.fork()
    if pid == 0:  # the child: the part, as `python ...` would run it, then exit at once
        code = 1
        try:
            os.chdir(ROOT)
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            if cmd[1] == "-m":
                sys.argv = [cmd[2], *cmd[3:]]
                runpy.run_module(cmd[2], run_name="__main__", alter_sys=True)
            else:
                sys.argv = cmd[1:]
                sys.path[0] = str((ROOT / cmd[1]).parent)
                runpy.run_path(cmd[1], run_name="__main__")
            code = 0
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else int(done.code is not None)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    deadline = time.monotonic() + budget
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


def run_part(name: str, budget: int, cmd: list[str], out: Path, *, fork: bool = False) -> dict:
    """Run one part within its budget (in a forked child with `fork`, else a subprocess); its
    figures (its --out JSON) or why there are none."""
    start = time.perf_counter()
    log = out / f"{name}.log"
    if fork:
        code = run_forked(cmd, log, budget)
    else:
        with open(log, "w", encoding="utf-8") as f:
            try:
                done = subprocess.run(
                    cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, timeout=budget
                )
                code = done.returncode
            except subprocess.TimeoutExpired:
                code = None
    if code is None:
        status = f"timed out after {budget} s"
    else:
        status = "ok" if code == 0 else f"failed (exit {code})"
    result: dict = {
        "status": status,
        "seconds": round(time.perf_counter() - start, 1),
        "budget_s": budget,
        "command": " ".join(cmd[1:]),
    }
    figures = out / f"{name}.json"
    if figures.is_file():
        result["figures"] = json.loads(figures.read_text("utf-8")).get("figures")
    if name == "tests":
        result["junit"] = str(out / "tests.xml")
    if status != "ok":
        result["log_tail"] = log.read_text("utf-8", errors="replace")[-3000:]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny shapes, on the CPU")
    parser.add_argument("--out", type=Path, help="results folder")
    parser.add_argument("--total-s", type=int, default=None, help="overall budget (9 min GPU)")
    parser.add_argument("--only", help="comma-separated part names to run")
    args = parser.parse_args()
    import torch

    if not args.cpu_smoke and not torch.cuda.is_available():
        sys.exit("error: no CUDA GPU here; run with --cpu-smoke to check the parts on a CPU")
    name = "gpu_check_cpu_smoke" if args.cpu_smoke else "gpu_check"
    out = (args.out or ROOT / "benchmarks/results" / name).resolve()
    out.mkdir(parents=True, exist_ok=True)
    total = args.total_s or (1500 if args.cpu_smoke else 540)
    if args.cpu_smoke:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        # Imported once here; each part forks from this process (run_forked).
        import lightning.pytorch  # noqa: F401
        import peft  # noqa: F401
        import transformers  # noqa: F401
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    summary: dict = {"check": name, "machine": machine(), "versions": versions(), "parts": {}}
    for part, budget, cmd in parts(out, args.cpu_smoke):
        if args.only and part not in args.only.split(","):
            continue
        left = total - (time.perf_counter() - start)
        if left < min(budget, 30):
            summary["parts"][part] = {"status": f"skipped: {left:.0f} s of the total left"}
        else:
            summary["parts"][part] = run_part(
                part, int(min(budget, left)), cmd, out, fork=args.cpu_smoke
            )
        print(f"{part}: {summary['parts'][part]['status']}", flush=True)
        summary["seconds"] = round(time.perf_counter() - start, 1)
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    failed = [p for p, r in summary["parts"].items() if r["status"] != "ok"]
    print(f"wrote {out / 'summary.json'} in {summary['seconds']} s; not ok: {failed or 'none'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
