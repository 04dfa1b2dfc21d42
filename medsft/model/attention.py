"""Which attention kernel a batch gets (`model.attn_implementation: auto`, the default).

Padded rows (right-padded, no attention mask) keep SDPA, which then runs its causal kernel with no
mask at all. Packed rows (`data.packing`) carry `position_ids` restarting at each example; with
SDPA, transformers turns them into a 4D block-diagonal mask, and SDPA under an explicit mask can
use neither its flash kernel nor skip the masked blocks. Kernels that take the example boundaries
themselves do: FlashAttention's varlen kernel (`flash_attention_2`, when flash-attn is installed),
PyTorch's `flex_attention` with a document mask (CUDA), and `sdpa_varlen` here: SDPA's causal
kernel run on each example of a row apart, so its work is the sum of the examples' squared
lengths, not the row's. On the CPU `sdpa_varlen` was measured fastest for packed rows
(benchmarks/attention_kernels.py, benchmarks/results/attention_kernels_*_cpu.json).

An explicit `attn_implementation` (sdpa, eager, flash_attention_2, flex_attention) is used for
every batch as it is. The choice is logged once per batch kind.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any, Literal

import torch
import torch.nn.functional as F

from medsft.errors import ConfigError

log = logging.getLogger(__name__)

AttnImplementation = Literal[
    "auto", "sdpa", "eager", "flash_attention_2", "flex_attention", "sdpa_varlen"
]
KERNELS = ("sdpa", "eager", "flash_attention_2", "flex_attention", "sdpa_varlen")
"""The attention kernels Qwen3 runs with (besides `auto`); sdpa_varlen is medsft's."""
PADDED_KERNEL = "sdpa"
CPU_PACKED_KERNEL = "sdpa_varlen"
"""Measured fastest for packed rows on the CPU (see the module docstring)."""


def _segments(position_ids: torch.Tensor) -> list[list[tuple[int, int]]]:
    """Per row, (start, end) of each example: where position ids restart at 0.

    A run of one-token pieces (the padding after a packed row's last example, each at position
    0) is one piece: its first token still sees only itself, and no real token sees padding.
    """
    rows = []
    for row in position_ids.tolist():
        starts = [i for i, p in enumerate(row) if p == 0] or [0]
        if starts[0] != 0:
            starts.insert(0, 0)
        bounds = [*starts, len(row)]
        pieces: list[tuple[int, int]] = []
        single = False  # the last piece is a run of one-token pieces
        for start, end in zip(bounds[:-1], bounds[1:], strict=True):
            if end - start == 1 and single:
                pieces[-1] = (pieces[-1][0], end)
            else:
                pieces.append((start, end))
                single = end - start == 1
        rows.append(pieces)
    return rows


def sdpa_varlen_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    position_ids: torch.Tensor | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention interface: causal SDPA on each example of a packed row apart.

    query [batch, heads, tokens, dim], key/value [batch, kv_heads, tokens, dim]; returns
    [batch, tokens, heads, dim] as transformers' own kernels do. Without position ids (or with
    a mask) it is plain causal SDPA.
    """
    groups = query.shape[1] // key.shape[1]
    if groups > 1:
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    p = dropout if module.training else 0.0
    if position_ids is None or attention_mask is not None or query.shape[2] != key.shape[2]:
        out = F.scaled_dot_product_attention(
            query,
            key,
            value,
            attn_mask=attention_mask,
            dropout_p=p,
            scale=scaling,
            is_causal=attention_mask is None and query.shape[2] > 1,
        )
        return out.transpose(1, 2).contiguous(), None
    rows = []
    for b, pieces in enumerate(_segments(position_ids.expand(query.shape[0], -1))):
        rows.append(
            torch.cat(
                [
                    F.scaled_dot_product_attention(
                        query[b : b + 1, :, s:e],
                        key[b : b + 1, :, s:e],
                        value[b : b + 1, :, s:e],
                        dropout_p=p,
                        scale=scaling,
                        is_causal=True,
                    )
                    for s, e in pieces
                ],
                dim=2,
            )
        )
    return torch.cat(rows).transpose(1, 2).contiguous(), None


def _no_mask(*args: Any, **kwargs: Any) -> None:
    """sdpa_varlen takes the example boundaries from position ids: no mask is built."""
    return None


def register_kernels() -> None:
    """Make `sdpa_varlen` a kernel transformers models can be set to (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register("sdpa_varlen", sdpa_varlen_forward)
    AttentionMaskInterface.register("sdpa_varlen", _no_mask)


def check_attn_implementation(name: str) -> None:
    """`auto` or one of KERNELS; flash_attention_2 also needs flash-attn installed."""
    if name != "auto" and name not in KERNELS:
        raise ConfigError(
            f"attn_implementation must be auto or one of {', '.join(KERNELS)}, got {name!r}"
        )
    if name == "flash_attention_2" and not has_flash_attn():
        raise ConfigError(
            "attn_implementation: flash_attention_2 needs `pip install flash-attn` (CUDA); use "
            "auto (flex_attention for packed rows on a GPU) or sdpa"
        )


def has_flash_attn() -> bool:
    """Whether FlashAttention 2 (the `flash_attn` package) is installed."""
    return importlib.util.find_spec("flash_attn") is not None


def available_kernels(device_type: str) -> list[str]:
    """The kernels that can train on packed rows on this device type (`cuda`, `cpu`).

    flex_attention has no backward on the CPU (torch raises NotImplementedError).
    """
    kernels = ["sdpa", "eager", "sdpa_varlen"]
    if device_type == "cuda":
        if has_flash_attn():
            kernels.append("flash_attention_2")
        kernels.append("flex_attention")
    return kernels


def packed_kernel(device_type: str) -> tuple[str, str]:
    """(kernel, why) for packed rows on a device type (`cuda`, `cpu`)."""
    if device_type != "cuda":
        return CPU_PACKED_KERNEL, "measured fastest on the CPU"
    if has_flash_attn():
        return "flash_attention_2", "FlashAttention varlen: no masked block is computed"
    return "flex_attention", "flash-attn is not installed; a document block mask skips the rest"


class AttentionChoice:
    """Follows the batch with `auto`: SDPA for padded rows, packed_kernel() for packed ones."""

    def __init__(self, requested: str):
        """
        Args:
            requested: `auto`, or the kernel to use for every batch.
        """
        check_attn_implementation(requested)
        self.requested = requested
        self._logged: set[str] = set()

    @property
    def load_kernel(self) -> str:
        """The kernel to load the model with (sdpa_varlen is set by `follow`, once registered)."""
        return PADDED_KERNEL if self.requested in ("auto", "sdpa_varlen") else self.requested

    def follow(self, model: Any, packed: bool, device: torch.device) -> str:
        """Set the model's kernel for a batch (no-op unless `auto` and the kind changed)."""
        kind = "packed" if packed else "padded"
        if self.requested == "auto":
            kernel, why = packed_kernel(device.type) if packed else (PADDED_KERNEL, "causal")
        else:
            kernel, why = self.requested, "as configured"
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        if base.config._attn_implementation != kernel:
            if kernel == "sdpa_varlen":
                register_kernels()
            base.set_attn_implementation(kernel)
        if kind not in self._logged:
            self._logged.add(kind)
            log.info("attention: %s rows use %s (%s)", kind, kernel, why)
        return kernel
