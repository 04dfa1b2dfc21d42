"""Generation tokens/s of evaluate.py's model path (medsft.model.generate) at a Qwen3 shape.

    python benchmarks/generate_bench.py --preset Qwen3-4B --batch-sizes 8,32     # a GPU
    OMP_NUM_THREADS=1 python benchmarks/generate_bench.py --preset tiny --batch-sizes 2 \
        --new-tokens 8

A `random:<preset>` model (exact shapes, random weights, dtype `auto`: bf16 on a recent GPU)
answers the sample questions (data/sample/huatuo_sample.jsonl, rendered with the chat template)
through medsft.model.generate.generate, greedy, `--new-tokens` new tokens each (random weights rarely
stop early; the count is what was generated). Per batch size: one warm-up call, then one timed call
over `batch size x --batches` prompts. Writes benchmarks/results/generate_<preset>.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from record import write_result  # noqa: E402

SAMPLE_ROWS = ROOT / "data/sample/huatuo_sample.jsonl"


def main() -> None:
    from medsft.model.build import load_base_model, load_tokenizer
    from medsft.model.generate import GenerationSettings, encode_prompt, generate

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="Qwen3-4B")
    parser.add_argument("--batch-sizes", default="8,32")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--batches", type=int, default=2, help="timed batches per batch size")
    parser.add_argument("--out", type=Path, help="write the results here (default: results/)")
    args = parser.parse_args()
    gpu = torch.cuda.is_available()
    tokenizer = load_tokenizer("qwen3")
    model = load_base_model(f"random:{args.preset}", device="cuda" if gpu else None).eval()
    questions = [
        json.loads(line)["question"] for line in SAMPLE_ROWS.read_text("utf-8").splitlines()
    ]
    prompts_all = [encode_prompt(tokenizer, [{"role": "user", "content": q}]) for q in questions]
    figures: dict = {"preset": args.preset, "dtype": str(next(model.parameters()).dtype)}
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        settings = GenerationSettings(max_new_tokens=args.new_tokens, batch_size=batch_size)
        n = batch_size * args.batches
        prompts = [prompts_all[i % len(prompts_all)] for i in range(n)]
        warm = GenerationSettings(max_new_tokens=4, batch_size=batch_size)
        generate(model, tokenizer, prompts[:batch_size], warm, devices=1, progress=False)
        if gpu:
            torch.cuda.reset_peak_memory_stats()
        run = generate(model, tokenizer, prompts, settings, devices=1, progress=False)
        figures[f"batch_{batch_size}"] = {
            "prompts": n,
            "new_tokens": run.new_tokens,
            "seconds": run.seconds,
            "tokens_per_s": run.tokens_per_second,
            "prompt_tokens_mean": sum(len(p) for p in prompts) / n,
            **({"cuda_peak_gib": torch.cuda.max_memory_allocated() / 2**30} if gpu else {}),
        }
        print(f"batch {batch_size}: {run.tokens_per_second:.1f} new tokens/s", flush=True)
    write_result(f"generate_{args.preset}", figures, args=vars(args), out=args.out)


if __name__ == "__main__":
    main()
