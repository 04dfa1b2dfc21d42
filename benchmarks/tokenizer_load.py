"""Load time of the bundled Qwen3 tokenizer: transformers' own loading against medsft's.

    OMP_NUM_THREADS=1 python benchmarks/tokenizer_load.py --rounds 10

`before`: `AutoTokenizer.from_pretrained` of the bundled files (what medsft.model.build.load_tokenizer
did: transformers 5 parses tokenizer.json with Python's json module and rebuilds the BPE in
Python). `after`: `load_tokenizer("qwen3")` (tokenizer.json read by `tokenizers`, see
medsft.model.qwen_tokenizer). Both in this process, in alternating rounds after one warm-up load
each, so a busy machine slows both alike; also a fresh `python -c` process per way (imports
included), `--fresh` times. Writes benchmarks/results/tokenizer_load.json (or --out).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from record import write_result  # noqa: E402

BEFORE = (
    "from transformers import AutoTokenizer;"
    "from medsft.model.build import bundled_tokenizer_dir;"
    "AutoTokenizer.from_pretrained(bundled_tokenizer_dir())"
)
AFTER = "from medsft.model.build import load_tokenizer; load_tokenizer('qwen3')"


def fresh_process(code: str) -> float:
    """Seconds a new interpreter takes to import and load the tokenizer once."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT)
    return time.perf_counter() - start


def summary(seconds: list[float]) -> dict[str, float]:
    return {
        "median_s": round(statistics.median(seconds), 3),
        "min_s": round(min(seconds), 3),
        "max_s": round(max(seconds), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="timed loads per way, alternating")
    parser.add_argument("--fresh", type=int, default=3, help="fresh processes per way")
    parser.add_argument("--out", type=Path, help="write the results here (default: results/)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from transformers import AutoTokenizer

    from medsft.model.build import bundled_tokenizer_dir, load_tokenizer

    ways = {
        "before": lambda: AutoTokenizer.from_pretrained(bundled_tokenizer_dir()),
        "after": lambda: load_tokenizer("qwen3"),
    }
    loaded = {name: load() for name, load in ways.items()}  # warm-up: file cache, imports
    sample = "以下是关于临床知识的单项选择题，请直接给出正确答案的选项。答案是：A <|im_end|>"
    same_ids = loaded["before"](sample)["input_ids"] == loaded["after"](sample)["input_ids"]
    times: dict[str, list[float]] = {name: [] for name in ways}
    fresh: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.rounds):
        for name, load in ways.items():
            start = time.perf_counter()
            load()
            times[name].append(time.perf_counter() - start)
    for _ in range(args.fresh):
        for name, code in (("before", BEFORE), ("after", AFTER)):
            fresh[name].append(fresh_process(code))
    figures = {
        "in_process": {name: summary(t) for name, t in times.items()},
        "speedup_median": round(
            statistics.median(times["before"]) / statistics.median(times["after"]), 2
        ),
        "fresh_process_with_imports": {name: summary(t) for name, t in fresh.items() if t},
        "classes": {
            name: type(tok).__module__ + "." + type(tok).__name__ for name, tok in loaded.items()
        },
        "same_ids_on_sample": same_ids,
    }
    print(figures)
    write_result("tokenizer_load", figures, args=vars(args), out=args.out)


if __name__ == "__main__":
    main()
