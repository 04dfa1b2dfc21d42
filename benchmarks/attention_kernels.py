"""Each attention kernel on packed rows: step time and loss against the same examples unpadded.

    OMP_NUM_THREADS=1 python benchmarks/attention_kernels.py                 # CPU, 0.6B-shaped
    python benchmarks/attention_kernels.py --preset Qwen3-4B --layers 0      # a GPU, all layers

The decoder layers (LoRA, forward and backward; the loss through SFTModule.step) on one padding-free row of
`--batch-size x --max-length` tokens of real examples (the 500 Huatuo rows of ../shared/data when
present, else the sample rows), once per kernel available here (medsft.model.attention), the kernels
alternating for `--rounds` rounds on one model (the same weights). `--layers N` keeps the first N
decoder layers so a CPU measures attention rather than the vocabulary projection. Also the same
examples as a padded batch under SDPA (what `auto` gives padded rows), and each kernel's loss
relative to it (a kernel that attends across examples would differ). Median step times; the
fastest kernel for packed rows decides medsft.model.attention.CPU_PACKED_KERNEL on the CPU.
Writes benchmarks/results/attention_kernels_<preset>_<device>.json (or `--out`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from record import write_result  # noqa: E402

SHARED_ROWS = ROOT.parent / "shared/data/huatuo26m_lite/huatuo26m_lite_qa500.enddonkey.jsonl"
SAMPLE_ROWS = ROOT / "data/sample/huatuo_sample.jsonl"


def batches(args: argparse.Namespace) -> tuple[dict, dict]:
    """(one padding-free row, the same examples as a padded batch) from the real loader."""
    from medsft.data import SFTDataModule, collate

    dm = SFTDataModule(
        source=str(args.data),
        val_fraction=0.0,
        max_length=args.max_length,
        batch_size=args.batch_size,
        packing="padding_free",
        seed=0,
    )
    dm.setup("fit")
    packed = next(iter(dm.train_dataloader()))
    wanted = set(packed["index"][0])
    examples = [ex for ex in dm.train_set.examples() if ex["index"] in wanted]
    padded = collate(examples, dm.tokenizer.pad_token_id, pad_to_multiple_of=8)
    return packed, padded


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    from medsft.model.attention import AttentionChoice, available_kernels
    from medsft.model.build import PRESETS, backbone_and_head, build_model
    from medsft.training.module import SFTModule

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="Qwen3-0.6B")
    parser.add_argument("--layers", type=int, default=2, help="decoder layers kept; 0 = all")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--data", type=Path, default=SHARED_ROWS if SHARED_ROWS.is_file() else SAMPLE_ROWS
    )
    parser.add_argument("--kernels", help="comma-separated (default: all available here)")
    parser.add_argument("--out", type=Path, help="write the results here (default: results/)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = args.preset
    if args.layers:
        name = f"{args.preset}-{args.layers}L"  # a benchmark-only shape: fewer layers
        PRESETS[name] = {**PRESETS[args.preset], "num_hidden_layers": args.layers}
    dtype = "bfloat16" if device.type == "cuda" else "float32"
    torch.manual_seed(0)
    module = SFTModule(f"random:{name}", tokenizer="qwen3", finetune="lora", dtype=dtype)
    module.model = build_model(f"random:{name}", finetune="lora", dtype=dtype).to(device).eval()
    packed, padded = batches(args)
    to = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in packed.items()}
    padded = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in padded.items()}
    kernels = args.kernels.split(",") if args.kernels else available_kernels(device.type)
    runs = [("padded", "sdpa", padded)] + [("packed", k, to) for k in kernels]

    backbone, _ = backbone_and_head(module.model)

    def step(kernel: str, batch: dict) -> tuple[float, float]:
        module._attention = AttentionChoice(kernel)
        with torch.no_grad():  # the loss, through the training step itself
            nll, n = module.step(batch)
        # Timed: the decoder layers forward and backward (the vocabulary projection, the same
        # for every kernel, would hide the attention on a CPU).
        sync(device)
        start = time.perf_counter()
        hidden = backbone(
            input_ids=batch["input_ids"], position_ids=batch.get("position_ids"), use_cache=False
        ).last_hidden_state
        hidden.float().square().mean().backward()
        sync(device)
        module.model.zero_grad(set_to_none=True)
        return time.perf_counter() - start, float(nll) / int(n)

    times: dict[str, list[float]] = {}
    losses: dict[str, float] = {}
    failed: dict[str, str] = {}
    for round_ in range(args.rounds + 1):  # round 0 warms up (and compiles flex_attention)
        for kind, kernel, batch in runs:
            key = f"{kind} {kernel}"
            if key in failed:
                continue
            try:
                seconds, loss = step(kernel, batch)
            except Exception as err:  # a kernel this machine cannot run: recorded, not fatal
                failed[key] = f"{type(err).__name__}: {err}"[:300]
                print(f"{key}: failed: {failed[key]}", flush=True)
                continue
            if round_:
                times.setdefault(key, []).append(seconds)
            losses[key] = loss
            print(f"round {round_} {key}: {seconds:.3f} s, loss {loss:.6f}", flush=True)
    reference = losses["padded sdpa"]
    tokens = int(packed["attention_mask"].sum())
    figures = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "shape": name,
        "tokens_per_row": tokens,
        "examples_per_row": len(packed["index"][0]),
        "padded_batch": list(padded["input_ids"].shape),
        "kernels": {
            key: {
                "step_s_median": statistics.median(t),
                "tokens_per_s": tokens / statistics.median(t),
                "loss": losses[key],
                "loss_rel_diff_vs_padded": abs(losses[key] - reference) / abs(reference),
                "rounds_s": t,
            }
            for key, t in times.items()
        },
        "failed": failed,
    }
    packed_times = {k: v["step_s_median"] for k, v in figures["kernels"].items() if "packed" in k}
    figures["fastest_packed"] = min(packed_times, key=packed_times.get).split(" ", 1)[1]
    for key, result in figures["kernels"].items():
        print(
            f"{key:<28} {result['step_s_median']:8.3f} s  {result['tokens_per_s']:9.1f} tok/s  "
            f"loss diff {result['loss_rel_diff_vs_padded']:.1e}"
        )
    print("fastest for packed rows:", figures["fastest_packed"])
    write_result(f"attention_kernels_{name}_{device.type}", figures, args=vars(args), out=args.out)


if __name__ == "__main__":
    main()
