"""Model FLOPs of a training step and model FLOPs utilisation (MFU) against the GPU's bf16 peak.

Counts the matrix multiplications a step needs (2 FLOPs per multiply-add); norms, activations,
rotary embeddings and softmax are left out, as is the recomputation of gradient checkpointing
(MFU counts the model's work, not the hardware's). Per linear layer `in -> out`, per token:

- forward: `2 * in * out`;
- backward: the input gradient `2 * in * out` (so gradients reach earlier trainable weights)
  plus, when the weight trains, its gradient `2 * in * out`.

So full fine-tuning costs `6 * in * out`, a frozen layer under LoRA `4 * in * out` and a LoRA
adapter of rank r `6 * r * (in + out)` on top; frozen evaluation costs `2 * in * out`. Under
LoRA the first layer's q/k/v (and their adapters' A) get no input gradient: their input comes
from the frozen embedding, so autograd skips it.

Attention scores and the weighted sum are two matmuls of `2 * head_dim` FLOPs per query-key pair
and head, for the causal pairs each example really has (`L * (L + 1) / 2` for an example of L
tokens, whether it is padded in a batch or packed with others); backward costs twice forward.
The output projection (vocabulary) runs only where it is computed: at supervised positions in
medsft's training (medsft.model.loss), at every position in a plain forward.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

Mode = Literal["full", "lora", "frozen"]

QWEN3_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""Every linear projection inside Qwen3's decoder layers: the LoRA default (medsft.model.build) and
what the FLOP count treats as trainable under LoRA."""

# Dense (no sparsity) bf16 tensor-core peaks per device, TFLOP/s, from the vendors' data sheets;
# the first pattern that matches torch.cuda.get_device_name() wins. GeForce cards: fp32
# accumulation, which is what PyTorch uses.
BF16_PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    (r"H100.*PCIe", 756.0),
    (r"H100.*NVL", 835.0),
    (r"H100|H800", 989.0),  # SXM (HBM3)
    (r"H200.*NVL", 835.0),
    (r"H200", 989.0),  # SXM, and GH200
    (r"B200", 2250.0),
    (r"A100|A800", 312.0),
    (r"L40S", 362.0),
    (r"\bL40\b", 181.0),
    (r"\bL4\b", 121.0),
    (r"\bA10\b", 125.0),
    (r"RTX A6000", 154.8),
    (r"RTX 4090", 165.2),
    (r"RTX 3090", 71.0),
    (r"MI300X", 1307.4),
)


def bf16_peak_flops(device_name: str) -> float | None:
    """Dense bf16 peak FLOP/s of one device, by its name; None for a device not in the table."""
    for pattern, tflops in BF16_PEAK_TFLOPS:
        if re.search(pattern, device_name, flags=re.IGNORECASE):
            return tflops * 1e12
    return None


def causal_pairs(lengths: Iterable[int]) -> int:
    """Query-key pairs causal attention computes for examples of these lengths (tokens)."""
    return sum(n * (n + 1) // 2 for n in lengths)


@dataclass(frozen=True)
class FlopCounter:
    """FLOPs of a Qwen3-style decoder's training (or forward-only) step; see the module docstring.

    Build it once with `FlopCounter.from_config(model.config, ...)`; `step_flops` is plain
    arithmetic on host integers, so calling it every step costs nothing and syncs nothing.
    """

    body_per_token: float
    """Decoder linear layers (and adapters), forward and backward, per token."""
    head_per_token: float
    """The vocabulary projection, forward and backward, per position it runs at."""
    attention_per_pair: float
    """Attention matmuls, forward and backward, per causal query-key pair (all layers)."""

    @classmethod
    def from_config(
        cls,
        config: Any,
        mode: Mode,
        *,
        lora_r: int = 0,
        lora_targets: Iterable[str] = QWEN3_LINEAR,
    ) -> FlopCounter:
        """
        Args:
            config: a transformers Qwen3 (or Llama-style) config: hidden_size, intermediate_size,
                num_hidden_layers, num_attention_heads, num_key_value_heads, head_dim,
                vocab_size, tie_word_embeddings.
            mode: `full` (every weight trains), `lora` (frozen base, adapters train) or
                `frozen` (forward only).
            lora_r: adapter rank (mode `lora`).
            lora_targets: adapted projections (mode `lora`), Qwen3 names.
        """
        if mode not in ("full", "lora", "frozen"):
            raise ValueError(f"mode must be 'full', 'lora' or 'frozen', got {mode!r}")
        if mode == "lora" and lora_r < 1:
            raise ValueError(f"mode 'lora' needs lora_r >= 1, got {lora_r}")
        hidden, inter = config.hidden_size, config.intermediate_size
        heads = config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        head_dim = getattr(config, "head_dim", None) or hidden // heads
        shapes = {
            "q_proj": (hidden, heads * head_dim),
            "k_proj": (hidden, kv_heads * head_dim),
            "v_proj": (hidden, kv_heads * head_dim),
            "o_proj": (heads * head_dim, hidden),
            "gate_proj": (hidden, inter),
            "up_proj": (hidden, inter),
            "down_proj": (inter, hidden),
        }
        targets = set(lora_targets) if mode == "lora" else set()
        unknown = targets - shapes.keys()
        if unknown:
            raise ValueError(f"unknown LoRA targets {sorted(unknown)}; known: {list(shapes)}")
        # Multiples of 2 * in * out: forward 1, input gradient 1, weight gradient 1.
        weight = {"full": 6, "lora": 4, "frozen": 2}[mode]
        layer = sum(weight * i * o for i, o in shapes.values())
        layer += sum(6 * lora_r * (shapes[t][0] + shapes[t][1]) for t in targets)
        layers = config.num_hidden_layers
        first_layer_saving = 0
        if mode == "lora":  # no input gradient into the frozen embedding's output
            for name in ("q_proj", "k_proj", "v_proj"):
                i, o = shapes[name]
                first_layer_saving += 2 * i * o + (2 * i * lora_r if name in targets else 0)
        # Scores (q.k) and weighted sum (p.v): 2 matmuls x 2 FLOPs x head_dim, per pair and head.
        attention_forward = 4 * head_dim * heads * layers
        attention_weight = 1 if mode == "frozen" else 3
        return cls(
            body_per_token=float(layers * layer - first_layer_saving),
            head_per_token=float(weight * hidden * config.vocab_size),
            attention_per_pair=float(attention_weight * attention_forward),
        )

    def step_flops(self, tokens: int, head_positions: int, attention_pairs: int) -> float:
        """Model FLOPs of one step.

        Args:
            tokens: real (not padding) tokens in the step.
            head_positions: positions projected to the vocabulary (medsft training: supervised
                tokens; a plain forward: `tokens`).
            attention_pairs: causal query-key pairs, `causal_pairs(example lengths)`.
        """
        return (
            tokens * self.body_per_token
            + head_positions * self.head_per_token
            + attention_pairs * self.attention_per_pair
        )


def mfu(flops: float, seconds: float, device_name: str, devices: int = 1) -> float | None:
    """Model FLOPs utilisation: `flops` done in `seconds` over `devices` GPUs of this name, as a
    fraction of their dense bf16 peak; None for a device not in BF16_PEAK_TFLOPS."""
    peak = bf16_peak_flops(device_name)
    if peak is None or seconds <= 0:
        return None
    return flops / seconds / (peak * devices)
