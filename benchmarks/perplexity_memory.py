"""Peak memory of reference perplexity: medsft.metrics.perplexity against the full-logits way.

    python benchmarks/perplexity_memory.py                        # Qwen3-0.6B shape, CPU
    python benchmarks/perplexity_memory.py --preset tiny --batch-size 2 --tokens 128

Each way runs in its own process; peak RSS (CPU, Linux) or the CUDA allocator's peak (GPU) is
taken from after the model is built, and reported above the memory the loaded model holds. Random weights with the exact Qwen3 shapes in fp32; conversations are the project's sample
questions with answers lengthened to about `--tokens` tokens.

- `full_logits`: the model's forward with `[batch, seq, 151936]` logits, then the masked
  cross-entropy of each row, as medsft's perplexity did before and as `model(...).logits` does
  in any evaluation loop.
- `medsft`: `medsft.metrics.perplexity`: decoder hidden states, projected to the vocabulary only
  at supervised positions, in chunks.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from pathlib import Path

from record import write_result

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_rss_peak() -> float:
    """Forget the peak so far (building the model peaks higher than what we measure); current RSS.

    Linux (>= 4.0) resets a process's peak resident set size (VmHWM) when 5 is written to
    /proc/self/clear_refs.
    """
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    return _status_mib("VmRSS")


def rss_peak_mib() -> float:
    """This process's peak resident set size since the last reset_rss_peak()."""
    return _status_mib("VmHWM")


def conversations(tokenizer, n: int, tokens: int) -> list:
    from medsft.chat import qa_messages

    rows = [json.loads(line) for line in (ROOT / "data/sample/huatuo_sample.jsonl").open()]
    out = []
    for i in range(n):
        answer = ""
        j = i
        while len(tokenizer(answer)["input_ids"]) < tokens:
            answer += rows[j % len(rows)]["answer"]
            j += 1
        ids = tokenizer(answer)["input_ids"][:tokens]
        out.append(qa_messages(rows[i % len(rows)]["question"], tokenizer.decode(ids)))
    return out


def measure(way: str, args: argparse.Namespace) -> dict:
    """One way, in this process: peak memory above the loaded model, and the perplexity."""
    import torch

    from medsft.data import collate
    from medsft.metrics.likelihood import perplexity, perplexity_from_nll
    from medsft.model.build import build_model, load_tokenizer
    from medsft.model.loss import masked_nll

    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = load_tokenizer("qwen3")
    convs = conversations(tokenizer, args.batch_size * args.batches, args.tokens)
    model = build_model(f"random:{args.preset}", finetune="full").to(device).eval()
    loaded = reset_rss_peak()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        loaded_cuda = torch.cuda.memory_allocated() / 2**20
    start = time.perf_counter()
    if way == "medsft":
        result = perplexity(model, tokenizer, convs, batch_size=args.batch_size, progress=False)
        score, tokens = result.score, result.n_tokens
    else:
        from medsft.chat import render

        rendered = [render(c, tokenizer, assistant_turns="last") for c in convs]
        rendered.sort(key=lambda ex: len(ex["input_ids"]))
        total, tokens = 0.0, 0
        with torch.no_grad():
            for i in range(0, len(rendered), args.batch_size):
                batch = collate(rendered[i : i + args.batch_size], tokenizer.pad_token_id)
                logits = model(
                    input_ids=batch["input_ids"].to(device),
                    attention_mask=batch["attention_mask"].to(device),
                ).logits
                labels = batch["labels"].to(device)
                for row in range(len(labels)):
                    nll, n = masked_nll(labels[row : row + 1], logits=logits[row : row + 1])
                    total += nll.item()
                    tokens += int(n)
                del logits
        score = perplexity_from_nll(total, tokens)
    figures = {
        "seconds": round(time.perf_counter() - start, 2),
        "perplexity": score,
        "supervised_tokens": tokens,
        "peak_rss_mib": round(rss_peak_mib(), 1),
        "peak_rss_above_loaded_model_mib": round(rss_peak_mib() - loaded, 1),
    }
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
        figures["cuda_peak_mib"] = round(peak, 1)
        figures["cuda_peak_above_loaded_model_mib"] = round(peak - loaded_cuda, 1)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="Qwen3-0.6B")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--batches", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=256, help="answer tokens per example")
    parser.add_argument("--way", choices=["medsft", "full_logits"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.way:  # a child: one way, figures as the last line of stdout
        print(json.dumps(measure(args.way, args)))
        return
    figures: dict = {}
    for way in ("full_logits", "medsft"):
        cmd = [sys.executable, __file__, *sys.argv[1:], "--way", way]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        figures[way] = json.loads(out.strip().splitlines()[-1])
        print(f"{way}: {figures[way]}", flush=True)
    full, ours = figures["full_logits"], figures["medsft"]
    figures["peak_rss_above_model_ratio"] = round(
        full["peak_rss_above_loaded_model_mib"] / ours["peak_rss_above_loaded_model_mib"], 2
    )
    figures["perplexity_relative_difference"] = abs(ours["perplexity"] / full["perplexity"] - 1)
    print(
        f"peak RSS above the loaded model: full logits {full['peak_rss_above_loaded_model_mib']} "
        f"MiB, medsft {ours['peak_rss_above_loaded_model_mib']} MiB; perplexity "
        f"{full['perplexity']:.6g} vs {ours['perplexity']:.6g}"
    )
    write_result(f"perplexity_memory_{args.preset}", figures, args=vars(args))


if __name__ == "__main__":
    main()
