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
  never need them. A plain `nn.Linear` head (no hooks to run) goes through one fused function
  that computes the gradients chunk by chunk in the forward pass, so no [N, V] tensor outlives
  its chunk; any other head through autograd.

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
    if _is_plain_linear(head):
        grads = torch.is_grad_enabled()  # off in validation and perplexity: the loss alone
        return _LinearCrossEntropy.apply(h, head.weight, head.bias, y, chunk_size, grads), count
    total = torch.zeros((), device=h.device)
    for i in range(0, h.shape[0], chunk_size):
        chunk_logits = head(h[i : i + chunk_size]).float()
        total = total + F.cross_entropy(chunk_logits, y[i : i + chunk_size], reduction="sum")
    return total, count


def _is_plain_linear(head: object) -> bool:
    """A bare nn.Linear, with no hooks (FSDP gathering, PEFT adapters) that calling it would run."""
    return (
        type(head) is torch.nn.Linear
        and not head._forward_hooks
        and not head._forward_pre_hooks
        and not torch.nn.modules.module._global_forward_hooks
        and not torch.nn.modules.module._global_forward_pre_hooks
    )


class _LinearCrossEntropy(torch.autograd.Function):
    """sum(cross_entropy(h @ W.T + b, y)) whose gradients are computed in the forward pass, chunk
    by chunk, so the [N, V] logits are never kept for backward.

    Autograd's path keeps the logits and their log-softmax, then zero-fills a gradient of the same
    size and runs log-softmax backward: four passes over [N, V] floats beside the two matmuls.
    Here each chunk's logits become softmax - one_hot in place (one exp pass), and are consumed at
    once by the matmuls that give the hidden states' (and the weight's) gradients. On the tiny
    preset on CPU, where the 151,936-token head is most of the step, a LoRA step takes 1.3 s
    instead of 2.4 (benchmarks/results/vs_trl_tiny_packing.json).
    """

    @staticmethod
    def forward(ctx, h, weight, bias, targets, chunk_size, grads):  # type: ignore[override]
        # `grads`: grad mode where the loss was called (inside forward it is always off). Without
        # it, evaluation of a model whose head requires grad would build a [V, H] weight gradient.
        need_h, need_w = grads and h.requires_grad, grads and weight.requires_grad
        need_b = grads and bias is not None and bias.requires_grad
        grad_h = torch.empty_like(h) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=h.device) if need_w else None
        grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=h.device) if need_b else None
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        for i in range(0, h.shape[0], chunk_size):
            h_c, y_c = h[i : i + chunk_size], targets[i : i + chunk_size]
            logits = F.linear(h_c, weight, bias).float()
            # In place on CPU, where a fresh [N, V] buffer costs more in page faults than the
            # kernel itself; CUDA's caching allocator makes a new one free.
            log_probs = torch.log_softmax(logits, 1, out=logits if h.is_cpu else None)
            rows = torch.arange(len(y_c), device=h.device)
            total -= log_probs[rows, y_c].sum()
            if not (need_h or need_w or need_b):
                continue
            probs = log_probs.exp_()
            probs[rows, y_c] -= 1.0  # d(loss)/d(logits) = softmax - one_hot
            if need_b:
                grad_b += probs.sum(0)
            g = probs.to(h.dtype)
            if need_h:
                grad_h[i : i + chunk_size] = g @ weight
            if need_w:
                grad_w.addmm_(probs.t(), h_c.float())
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        ctx.weight_dtype = weight.dtype
        ctx.bias_dtype = None if bias is None else bias.dtype
        return total

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        grad_h, grad_w, grad_b = ctx.saved_tensors
        scale = grad_out.float()
        return (
            None if grad_h is None else grad_h * scale.to(grad_h.dtype),
            None if grad_w is None else (grad_w * scale).to(ctx.weight_dtype),
            None if grad_b is None else (grad_b * scale).to(ctx.bias_dtype),
            None,
            None,
            None,
        )
