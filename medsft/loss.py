"""Masked, shifted cross-entropy returned as (sum of token losses, number of supervised tokens).

Returning the sum and the count, not a mean, lets the caller divide once by the supervised tokens
of the whole optimizer step (all micro-batches, all ranks), so every supervised token weighs the
same. A mean of per-micro-batch means over-weights short answers.

Labels are aligned with `input_ids` (Hugging Face convention): position t's label is the token at
t, predicted from positions < t. The shift happens here.

Two ways in:
- `logits` [B, T, V]: the model's full output.
- `hidden_states` [B, T, H] and `head` (the output projection, called as a module so PEFT and
  sharding hooks run): logits are computed only at supervised positions, in chunks. With Qwen3's 151,936-token vocabulary the full logits are the
  largest tensor in training; prompts and padding never need them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from medsft.chat import IGNORE_INDEX


def masked_nll(
    labels: torch.Tensor,
    *,
    logits: torch.Tensor | None = None,
    hidden_states: torch.Tensor | None = None,
    head: Callable[[torch.Tensor], torch.Tensor] | None = None,
    chunk_size: int = 2048,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of next-token NLL over supervised positions, and their count.

    Args:
        labels: [B, T] token ids, IGNORE_INDEX (-100) where not supervised.
        logits: [B, T, V] model outputs; or give `hidden_states` and `head` instead.
        hidden_states: [B, T, H] final hidden states (after the last norm).
        head: the output projection, e.g. `model.lm_head`: [*, H] -> [*, V].
        chunk_size: supervised positions per projection chunk (hidden-state path only).

    Returns:
        (nll_sum, n_tokens): float32 scalar with grad, int64 scalar. `nll_sum` is 0 (still
        connected to the graph) when nothing is supervised, so every rank can run backward.
    """
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    count = mask.sum()
    if logits is not None:
        if hidden_states is not None:
            raise ValueError("give either logits or hidden_states + head, not both")
        if logits.shape[:2] != labels.shape:
            raise ValueError(
                f"logits {tuple(logits.shape)} do not match labels {tuple(labels.shape)}"
            )
        selected = logits[:, :-1][mask].float()
        return F.cross_entropy(selected, targets[mask], reduction="sum"), count
    if hidden_states is None or head is None:
        raise ValueError("masked_nll needs logits, or hidden_states together with head")
    if hidden_states.shape[:2] != labels.shape:
        raise ValueError(
            f"hidden_states {tuple(hidden_states.shape)} do not match labels {tuple(labels.shape)}"
        )
    h = hidden_states[:, :-1][mask]
    y = targets[mask]
    if h.shape[0] == 0:
        # A padding batch on a finished rank: zero, but every parameter stays in the graph, as
        # data-parallel backward expects.
        return 0.0 * head(hidden_states[:, :1]).float().sum(), count
    total = torch.zeros((), device=h.device)
    for i in range(0, h.shape[0], chunk_size):
        chunk_logits = head(h[i : i + chunk_size]).float()
        total = total + F.cross_entropy(chunk_logits, y[i : i + chunk_size], reduction="sum")
    return total, count
