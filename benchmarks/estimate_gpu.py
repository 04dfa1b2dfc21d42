"""Estimated peak GPU memory and tokens/s of qlora.yaml, lora.yaml and full.yaml, from the shapes.

    python benchmarks/estimate_gpu.py              # the table, written to results/estimate_gpu.json
    python benchmarks/estimate_gpu.py --markdown   # the table as docs/gpu.md shows it

ESTIMATES, not measurements: no GPU has run medsft yet. Each config is read from configs/ (its
micro-batch, quantization, LoRA rank, optimizer, precision) and applied to the exact Qwen3 shapes
of medsft.model.build.PRESETS at `--max-length` tokens per row (packed rows, so no padding), on one
GPU. Memory, per GPU, in GB (1e9 bytes), as torch.cuda.max_memory_allocated counts it (the CUDA
context, about 0.5-1 GB more, is outside it):

- weights: NF4 (0.5 byte + 1/64 byte of double-quantized scales per weight) for the decoder's
  linear layers under qlora, the embedding and an untied output head in bf16; bf16 under lora;
  fp32 master weights under full (FSDP2 shards them; this is one GPU, so no sharding);
- trainable state: LoRA adapters in fp32 with their gradients; AdamW's two fp32 moments, or
  2 bytes per parameter for bitsandbytes' 8-bit AdamW (qlora's paged_adamw_8bit); full
  fine-tuning: fp32 gradients and moments, 16 bytes per parameter in all;
- saved activations with per-layer gradient checkpointing: each decoder layer's bf16 input
  (2 * hidden bytes per token per layer) plus, at the supervised positions (a
  `--supervised-share` of the tokens; medsft.model.loss projects only those), under LoRA the bf16
  gradient of the hidden state (2 * hidden bytes each: the fused head computes it in the forward
  pass and keeps no logits), under full fine-tuning with FSDP2 (full.yaml) the fp32
  log-probabilities (4 * vocab bytes each: the root module's own forward gives the logits);
- the transient peak in backward: the larger of one recomputed layer's activations and their
  gradients (twice the per-layer count below), and one chunk of 2,048 supervised positions'
  logit gradients (fp32 and bf16).

One layer's activations per token, in bytes, counted tensor by tensor for transformers' Qwen3
under bf16 autocast with SDPA's flash/memory-efficient kernel (no L x L matrix): two RMSNorms
(fp32 input, fp32 normalised and bf16 output: 10 * hidden each), q (18 * q_dim: projection, fp32
q-norm, rotary, attention output, o_proj input), k and v (16 * kv_dim), the SwiGLU MLP
(8 * intermediate), and under LoRA the adapters' dropout outputs and masks (3 bytes per input
element, 7 adapted projections). The script checks this count against the CPU measurements in
results/train_qlora_Qwen3-0.6B_cpu_bf16*.json (saved bytes per token, with and without
checkpointing) and records both.

Throughput: tokens/s = assumed MFU x the card's dense bf16 peak / model FLOPs per token, with
medsft.model.flops.FlopCounter (the FLOPs MFU counts: the layers, the output head at supervised
positions, attention over causal pairs of examples of `--example-tokens` mean length packed into
the rows; gradient checkpointing's recomputation is the hardware's cost inside the MFU). The
assumed MFU per config is an argument, recorded with the figures; the goals of
benchmarks/gpu_check are 35% (QLoRA) and 45% (LoRA) at the 4B shape.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medsft.model.build import PRESETS  # noqa: E402
from medsft.model.flops import QWEN3_LINEAR, FlopCounter, bf16_peak_flops  # noqa: E402

CONFIGS = ("qlora", "lora", "full")
SHAPES = ("Qwen3-0.6B", "Qwen3-4B", "Qwen3-8B")
CARDS_GB = (24, 40, 80)
THROUGHPUT_CARDS = ("A100", "H100")
ASSUMED_MFU = {"qlora": 0.30, "lora": 0.40, "full": 0.40}
LOSS_CHUNK = 2048  # medsft.model.loss.masked_nll's chunk of supervised positions
GB = 1e9


def read_config(name: str) -> dict[str, Any]:
    """What the estimate needs from configs/<name>.yaml."""
    cfg = yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text(encoding="utf-8"))
    model, data = cfg["model"], cfg["data"]
    return {
        "finetune": model["finetune"],
        "quantize": model.get("quantize"),
        "lora_r": (model.get("lora") or {}).get("r", 0) if model["finetune"] == "lora" else 0,
        "lora_dropout": (model.get("lora") or {}).get("dropout", 0.0),
        "optimizer": (model.get("optimizer") or {}).get("name", "adamw"),
        "batch_size": data["batch_size"],
        "checkpointing": model.get("gradient_checkpointing", False),
    }


def projection_shapes(shape: dict[str, Any]) -> dict[str, tuple[int, int]]:
    hidden, inter = shape["hidden_size"], shape["intermediate_size"]
    q_dim = shape["num_attention_heads"] * shape["head_dim"]
    kv_dim = shape["num_key_value_heads"] * shape["head_dim"]
    return {
        "q_proj": (hidden, q_dim),
        "k_proj": (hidden, kv_dim),
        "v_proj": (hidden, kv_dim),
        "o_proj": (q_dim, hidden),
        "gate_proj": (hidden, inter),
        "up_proj": (hidden, inter),
        "down_proj": (inter, hidden),
    }


def layer_activation_bytes(shape: dict[str, Any], lora: bool) -> int:
    """Bytes one decoder layer keeps for backward, per token (see the module docstring)."""
    hidden, inter = shape["hidden_size"], shape["intermediate_size"]
    q_dim = shape["num_attention_heads"] * shape["head_dim"]
    kv_dim = shape["num_key_value_heads"] * shape["head_dim"]
    count = 2 * 10 * hidden + 18 * q_dim + 16 * kv_dim + 8 * inter
    if lora:  # dropout output (bf16) and mask (bool) of each adapted projection's input
        count += 3 * sum(i for i, _ in projection_shapes(shape).values())
    return count


def parameter_counts(shape: dict[str, Any], lora_r: int) -> dict[str, int]:
    shapes = projection_shapes(shape)
    layers = shape["num_hidden_layers"]
    linear = layers * sum(i * o for i, o in shapes.values())
    norms = layers * (2 * shape["hidden_size"] + 2 * shape["head_dim"]) + shape["hidden_size"]
    embedding = shape["vocab_size"] * shape["hidden_size"]
    head = 0 if shape.get("tie_word_embeddings") else embedding
    adapters = layers * sum(lora_r * (i + o) for i, o in shapes.values())
    return {
        "linear": linear,
        "norms": norms,
        "embedding": embedding,
        "head": head,
        "total": linear + norms + embedding + head,
        "adapters": adapters,
    }


def estimate(
    config: dict[str, Any], shape: dict[str, Any], max_length: int, supervised_share: float
) -> dict[str, float]:
    """Peak memory parts in GB for one GPU (see the module docstring)."""
    params = parameter_counts(shape, config["lora_r"])
    lora = config["finetune"] == "lora"
    other = params["norms"] + params["embedding"] + params["head"]
    if config["quantize"] == "nf4":
        weights = params["linear"] * (0.5 + 1 / 64) + other * 2
    elif lora:
        weights = params["total"] * 2
    else:
        weights = params["total"] * 4
    trainable = params["adapters"] if lora else params["total"]
    moments = 2 if "8bit" in config["optimizer"] else 8
    # Full: fp32 weights counted above, plus gradients and moments. LoRA: fp32 adapters too.
    state = trainable * ((4 if lora else 0) + 4 + moments)
    tokens = config["batch_size"] * max_length
    supervised = supervised_share * tokens
    vocab, layers = shape["vocab_size"], shape["num_hidden_layers"]
    per_layer = layer_activation_bytes(shape, lora)
    if config["checkpointing"]:
        saved_layers = layers * 2 * shape["hidden_size"] * tokens
        transient_layer = 2 * per_layer * tokens
    else:
        saved_layers = layers * per_layer * tokens
        transient_layer = per_layer * tokens
    saved_logits = supervised * (2 * shape["hidden_size"] if lora else 4 * vocab)
    transient_loss = min(LOSS_CHUNK, supervised) * vocab * (4 + 2)
    # QLoRA dequantizes one weight at a time to bf16 for its matmul.
    dequant = (
        max(i * o for i, o in projection_shapes(shape).values()) * 2 if config["quantize"] else 0
    )
    parts = {
        "weights": weights,
        "trainable_state": state,
        "saved_activations": saved_layers + saved_logits,
        "backward_transient": max(transient_layer, transient_loss) + dequant,
    }
    parts["peak"] = sum(parts.values())
    return {k: round(v / GB, 2) for k, v in parts.items()} | {
        "parameters_b": round(params["total"] / 1e9, 2),
        "trainable_m": round(trainable / 1e6, 1),
        "micro_batch_tokens": tokens,
    }


def tokens_per_s(
    config: dict[str, Any],
    shape: dict[str, Any],
    supervised_share: float,
    example_tokens: int,
    mfu: float,
    card: str,
) -> float:
    mode = "lora" if config["finetune"] == "lora" else "full"
    counter = FlopCounter.from_config(
        SimpleNamespace(**shape), mode, lora_r=config["lora_r"], lora_targets=QWEN3_LINEAR
    )
    # Per token: examples of `example_tokens` packed in rows: (n + 1) / 2 causal pairs per token.
    per_token = counter.step_flops(1, supervised_share, (example_tokens + 1) / 2)
    return mfu * bf16_peak_flops(card) / per_token


def smallest_card(memory: dict[str, float], shardable: bool) -> str:
    """The smallest of 24/40/80 GB cards the peak fits, leaving 1.5 GB for the CUDA context and
    allocator slack; beyond 80 GB, how many 80 GB GPUs FSDP2 needs when it shards weights and
    state (full fine-tuning), else "over 80 GB"."""
    for card in CARDS_GB:
        if memory["peak"] + 1.5 <= card:
            return f"{card} GB"
    if shardable:
        states = memory["weights"] + memory["trainable_state"]
        rest = memory["peak"] - states
        for gpus in (2, 4, 8, 16):
            if states / gpus + rest + 1.5 <= CARDS_GB[-1]:
                return f"{gpus} x 80 GB (FSDP2)"
    return "over 80 GB"


def cpu_check(supervised_share: float) -> dict[str, Any]:
    """This count against the CPU measurement at the Qwen3-0.6B shape, QLoRA, 1 x 256 tokens."""
    import json

    found: dict[str, Any] = {}
    shape = PRESETS["Qwen3-0.6B"]
    for tag, checkpointing in (("", True), ("_no_checkpointing", False)):
        path = ROOT / "benchmarks" / "results" / f"train_qlora_Qwen3-0.6B_cpu_bf16{tag}.json"
        if not path.exists():
            continue
        figures = json.loads(path.read_text())["figures"]
        share = figures["supervised_tokens_per_s"] / figures["tokens_per_s"]
        layers = shape["num_hidden_layers"]
        per_layer = (
            2 * shape["hidden_size"] if checkpointing else layer_activation_bytes(shape, True)
        )
        estimated = (layers * per_layer + share * shape["vocab_size"] * 4) / 1024
        found["checkpointing" if checkpointing else "no_checkpointing"] = {
            "measured_kib_per_token": round(figures["saved_activation_kib_per_token"], 1),
            "estimated_kib_per_token": round(estimated, 1),
            "supervised_share_of_that_run": round(share, 3),
            "file": str(path.relative_to(ROOT)),
        }
    return found


def table(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for name in CONFIGS:
        config = read_config(name)
        for preset in SHAPES:
            shape = PRESETS[preset]
            memory = estimate(config, shape, args.max_length, args.supervised_share)
            mfu = ASSUMED_MFU[name] if args.mfu is None else args.mfu
            speed = {
                card: round(
                    tokens_per_s(
                        config, shape, args.supervised_share, args.example_tokens, mfu, card
                    )
                )
                for card in THROUGHPUT_CARDS
            }
            rows.append(
                {
                    "config": f"{name}.yaml",
                    "shape": preset,
                    "micro_batch": f"{config['batch_size']} x {args.max_length}",
                    "memory_gb": memory,
                    "fits": smallest_card(memory, shardable=config["finetune"] == "full"),
                    "assumed_mfu": mfu,
                    "tokens_per_s": speed,
                }
            )
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    head = (
        "| config | shape | micro-batch | peak GB (est.) | weights / state / saved / transient "
        "| smallest card | tokens/s A100 (est.) | tokens/s H100 (est.) | assumed MFU |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        m = r["memory_gb"]
        parts = " / ".join(
            f"{m[k]:.1f}"
            for k in ("weights", "trainable_state", "saved_activations", "backward_transient")
        )
        lines.append(
            f"| `{r['config']}` | {r['shape']} | {r['micro_batch']} | {m['peak']:.1f} | {parts} "
            f"| {r['fits']} | {r['tokens_per_s']['A100']:,} | {r['tokens_per_s']['H100']:,} "
            f"| {r['assumed_mfu']:.0%} |"
        )
    return head + "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-length", type=int, default=1024, help="tokens per packed row")
    parser.add_argument(
        "--supervised-share", type=float, default=0.5, help="share of tokens that are answers"
    )
    parser.add_argument(
        "--example-tokens", type=int, default=160, help="mean example length (Huatuo rows: 159)"
    )
    parser.add_argument("--mfu", type=float, default=None, help="one MFU for every config")
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    args = parser.parse_args()
    if not 0 < args.supervised_share <= 1:
        parser.error("--supervised-share must be in (0, 1]")
    rows = table(args)
    if args.markdown:
        print(markdown(rows), end="")
        return
    from record import write_result

    for r in rows:
        print(r["config"], r["shape"], r["memory_gb"]["peak"], "GB", r["fits"], r["tokens_per_s"])
    check = cpu_check(args.supervised_share)
    write_result(
        "estimate_gpu",
        {"estimates_not_measurements": True, "rows": rows, "activation_count_vs_cpu": check},
        args=vars(args),
    )
    assert all(math.isfinite(r["memory_gb"]["peak"]) for r in rows)


if __name__ == "__main__":
    main()
