"""Masked, shifted cross-entropy returned as (sum of token losses, number of supervised tokens).

Returning the sum and the count, not a mean, lets the caller divide once by the supervised tokens
of the whole optimizer step (all micro-batches, all ranks), so every supervised token weighs the
same. A mean of per-micro-batch means over-weights short answers.

Labels are aligned with `input_ids` (Hugging Face convention): position t's label is the token at
t, predicted from positions < t. The shift happens here.

Two ways in:
- `logits` [B, T, V]: the model's full output.
- `hidden_states` [B, T, H] and `head` (the output projection, called as a module so PEFT and
  sharding hooks run): logits are computed only at supervised positions, in chunks. With Qwen3's
  151,936-token vocabulary the full logits are the largest tensor in training; prompts and padding
  never need them.

Selecting positions with a boolean mask makes the host wait for the device (the result's size
depends on the data). Training precomputes them on the CPU in the data loader
(`supervised_positions`, called by medsft.data.collate) and passes `positions` and `targets`, so the
step queues its work without a host sync.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from medsft.chat import IGNORE_INDEX


def supervised_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions, targets): flat indices into [B * T] of the positions whose *next* token is
    supervised, and those next tokens. Row-major order, as `tensor[mask]` gives."""
    targets = labels[:, 1:]
    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[:, :-1] = targets != IGNORE_INDEX
    return mask.flatten().nonzero().squeeze(1), labels[:, 1:][mask[:, :-1]]


def masked_nll(
    labels: torch.Tensor,
    *,
    logits: torch.Tensor | None = None,
    hidden_states: torch.Tensor | None = None,
    head: Callable[[torch.Tensor], torch.Tensor] | None = None,
    positions: torch.Tensor | None = None,
    targets: torch.Tensor | None = None,
    chunk_size: int = 2048,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of next-token NLL over supervised positions, and their count.

    Args:
        labels: [B, T] token ids, IGNORE_INDEX (-100) where not supervised.
        logits: [B, T, V] model outputs; or give `hidden_states` and `head` instead.
        hidden_states: [B, T, H] final hidden states (after the last norm).
        head: the output projection, e.g. `model.lm_head`: [*, H] -> [*, V].
        positions, targets: `supervised_positions(labels)`, precomputed (hidden-state path):
            no host sync.
        chunk_size: supervised positions per projection chunk (hidden-state path only).

    Returns:
        (nll_sum, n_tokens): float32 scalar with grad, int64 scalar. `nll_sum` is 0 (still
        connected to the graph) when nothing is supervised, so every rank can run backward.
    """
    if logits is not None:
        if hidden_states is not None:
            raise ValueError("give either logits or hidden_states + head, not both")
        if logits.shape[:2] != labels.shape:
            raise ValueError(
                f"logits {tuple(logits.shape)} do not match labels {tuple(labels.shape)}"
            )
        next_tokens = labels[:, 1:]
        mask = next_tokens != IGNORE_INDEX
        selected = logits[:, :-1][mask].float()
        return F.cross_entropy(selected, next_tokens[mask], reduction="sum"), mask.sum()
    if hidden_states is None or head is None:
        raise ValueError("masked_nll needs logits, or hidden_states together with head")
    if hidden_states.shape[:2] != labels.shape:
        raise ValueError(
            f"hidden_states {tuple(hidden_states.shape)} do not match labels {tuple(labels.shape)}"
        )
    if positions is None:
        positions, targets = supervised_positions(labels)
    y, count = targets, (targets != IGNORE_INDEX).sum()
    h = hidden_states.flatten(0, 1).index_select(0, positions)
    if h.shape[0] == 0:
        # A padding batch on a finished rank: zero, but every parameter stays in the graph, as
        # data-parallel backward expects.
        return 0.0 * head(hidden_states[:, :1]).float().sum(), count
    total = torch.zeros((), device=h.device)
    for i in range(0, h.shape[0], chunk_size):
        chunk_logits = head(h[i : i + chunk_size]).float()
        total = total + F.cross_entropy(chunk_logits, y[i : i + chunk_size], reduction="sum")
    return total, count
