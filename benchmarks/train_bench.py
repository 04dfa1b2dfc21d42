"""Step time, throughput and peak memory of the real training step (SFTModule.step + backward).

    python benchmarks/train_bench.py                                  # random:tiny on CPU
    python benchmarks/train_bench.py --preset Qwen3-0.6B --quantize nf4 --batch-size 4 --seq-len 1024
    python benchmarks/train_bench.py --preset Qwen3-4B --quantize nf4 --gradient-checkpointing

Random weights with the exact Qwen3 shapes, so no download is needed; the cost of a step does not
depend on the weights' values. Half of each sequence is supervised (the answer), as in SFT.
Compares the loss computed from hidden states at supervised positions only (what SFTModule does)
with the full-logits loss, which materialises [batch, seq, 151936] logits.
"""

from __future__ import annotations

import argparse
import time

import torch

from medsft.chat import IGNORE_INDEX
from medsft.loss import masked_nll
from medsft.model import backbone_and_head, build_model


def run(args: argparse.Namespace, *, hidden_path: bool) -> dict[str, float]:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = build_model(
        f"random:{args.preset}", finetune=args.finetune, quantize=args.quantize,
        gradient_checkpointing=args.gradient_checkpointing,
        device=device if args.quantize else None,
    ).to(device)  # fmt: skip
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 151_000, (args.batch_size, args.seq_len), generator=g).to(device)
    labels = ids.clone()
    labels[:, : args.seq_len // 2] = IGNORE_INDEX
    mask = torch.ones_like(ids)
    backbone, head = backbone_and_head(model)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda")

    def step() -> float:
        with autocast:
            if hidden_path:
                hidden = backbone(input_ids=ids, attention_mask=mask).last_hidden_state
                nll, n = masked_nll(labels, hidden_states=hidden, head=head)
            else:
                logits = model(input_ids=ids, attention_mask=mask).logits
                nll, n = masked_nll(labels, logits=logits)
        (nll / n).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return (nll / n).item()

    for _ in range(args.warmup):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    elapsed = (time.perf_counter() - start) / args.steps
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    tokens = args.batch_size * args.seq_len
    return {"step_ms": elapsed * 1000, "tokens_per_s": tokens / elapsed, "peak_gib": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--preset", default="tiny", help="tiny, Qwen3-0.6B, Qwen3-1.7B, Qwen3-4B, ..."
    )
    parser.add_argument("--finetune", default="lora", choices=["lora", "full"])
    parser.add_argument("--quantize", default=None, choices=[None, "nf4"])
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    device = (
        torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else f"CPU ({torch.get_num_threads()} threads)"
    )
    print(f"{args.preset} {args.finetune} quantize={args.quantize} batch={args.batch_size} "
          f"seq={args.seq_len} on {device}")  # fmt: skip
    for hidden_path, label in ((True, "supervised-positions loss"), (False, "full-logits loss")):
        try:
            r = run(args, hidden_path=hidden_path)
        except torch.OutOfMemoryError:
            print(f"  {label:26s} out of memory")
            continue
        print(f"  {label:26s} {r['step_ms']:8.1f} ms/step  {r['tokens_per_s']:9.0f} tokens/s  "
              f"peak {r['peak_gib']:.2f} GiB")  # fmt: skip
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
