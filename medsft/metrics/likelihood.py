"""Perplexity of a model on *reference* answers given their prompts: exp(sum NLL / tokens).

Token-weighted over the whole set (not a mean of per-example or per-batch perplexities), over
assistant tokens only, rendered exactly as in training (medsft.chat). Never the model's
perplexity on its own generations: that rewards blandness, not knowing the answer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torchmetrics import Metric

from medsft.chat import IGNORE_INDEX, EmptySupervision, Message, render
from medsft.model.loss import masked_nll, supervised_positions


@dataclass(frozen=True)
class PerplexityResult:
    """Corpus perplexity with its parts."""

    score: float
    """exp(nll_sum / n_tokens)."""
    nll_sum: float
    n_tokens: int
    per_sample: list[float]
    """Each example's own perplexity (nan for examples skipped)."""
    per_sample_nll: list[float]
    """Each example's summed token NLL (0 for examples skipped)."""
    per_sample_tokens: list[int]
    """Each example's supervised tokens (0 for examples skipped): corpus = sum nll / sum tokens."""
    skipped: int
    """Examples with no supervised token within max_length."""
    signature: str

    @property
    def loss(self) -> float:
        """Mean NLL per supervised token (nats)."""
        return self.nll_sum / self.n_tokens


def perplexity_from_nll(nll_sum: float, n_tokens: int) -> float:
    """Perplexity from a precomputed (sum of token NLL, number of supervised tokens)."""
    if n_tokens <= 0:
        raise ValueError("perplexity needs at least one supervised token (n_tokens > 0)")
    return math.exp(nll_sum / n_tokens)


class TokenPerplexity(Metric):
    """torchmetrics Metric: token-weighted NLL and perplexity, summed across batches and ranks.

    `update(nll_sum, n_tokens)` with the outputs of medsft.model.loss.masked_nll; `compute()` returns
    `{"loss": sum/n, "ppl": exp(sum/n)}`.
    """

    full_state_update = False

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.add_state(
            "nll_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("n_tokens", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, nll_sum: torch.Tensor, n_tokens: torch.Tensor) -> None:
        self.nll_sum += nll_sum.detach().to(torch.float64)
        self.n_tokens += n_tokens.detach().to(torch.long)

    def compute(self) -> dict[str, torch.Tensor]:
        if self.n_tokens == 0:
            raise RuntimeError("TokenPerplexity: no supervised token was seen")
        loss = self.nll_sum / self.n_tokens
        return {"loss": loss.float(), "ppl": torch.exp(loss).float()}


NLL_CHUNK = 1024
"""Supervised positions projected to the vocabulary at once: [1024, 151936] fp32 is 0.6 GB."""


def split_head(model: Any) -> tuple[Any, Any]:
    """The decoder and output projection, or (model, None) for a model that does not split so."""
    from medsft.model.build import backbone_and_head

    try:
        backbone, head = backbone_and_head(model)
    except AttributeError:
        return model, None
    if backbone is None or head is None:
        return model, None
    return backbone, head


@torch.no_grad()
def perplexity(
    model: Any,
    tokenizer: Any,
    conversations: Sequence[Sequence[Message]],
    *,
    batch_size: int = 8,
    max_length: int | None = 2048,
    enable_thinking: bool = False,
    progress: bool = True,
) -> PerplexityResult:
    """Perplexity of `model` on the assistant turns of `conversations` (references, not generations).

    Args:
        model: a causal LM (transformers or PEFT).
        tokenizer: its tokenizer; conversations are rendered with its chat template.
        conversations: message lists ending with the reference assistant answer, e.g. from
            medsft.chat.qa_messages(question, reference).
        batch_size: examples per forward pass (sorted by length to pad little).
        max_length: truncate rendered examples; examples left with no supervised token are
            skipped and counted.
        enable_thinking: the Qwen3 thinking switch used when rendering.
        progress: show a progress bar.

    Logits are computed only at supervised positions, from the decoder's hidden states, as in
    training (medsft.model.loss.masked_nll): never the whole [batch, seq, vocab] tensor.
    """
    from tqdm.auto import tqdm

    from medsft.data.batching import collate

    examples: list[tuple[int, dict]] = []
    skipped = 0
    for i, messages in enumerate(conversations):
        try:
            rendered = render(
                messages,
                tokenizer,
                max_length=max_length,
                enable_thinking=enable_thinking,
                assistant_turns="last",
            )
        except EmptySupervision:
            skipped += 1
            continue
        examples.append((i, rendered))
    if not examples:
        raise ValueError(f"no example has a supervised token within max_length={max_length}")
    examples.sort(key=lambda item: len(item[1]["input_ids"]))
    device = next(model.parameters()).device
    backbone, head = split_head(model)
    was_training = model.training
    model.eval()
    # Per-example sums stay on the device until the end: one transfer, not one sync per example.
    nll_parts: list[torch.Tensor] = []
    counts: list[int] = []
    bar = tqdm(total=len(examples), desc="perplexity", unit="ex", disable=not progress)
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        batch = collate([ex for _, ex in chunk], tokenizer.pad_token_id)
        counts += (batch["labels"][:, 1:] != IGNORE_INDEX).sum(dim=1).tolist()  # host tensor
        input_ids = batch["input_ids"].to(device)
        labels = batch["labels"].to(device)
        if head is None:
            mask = batch["attention_mask"].to(device)
            logits = model(input_ids=input_ids, attention_mask=mask).logits
            rows = [{"logits": logits[r : r + 1]} for r in range(len(chunk))]
        else:
            # No attention mask, as in training (medsft.training.module): rows are right-padded, and under
            # causal attention no real token sees the padding after it.
            hidden = backbone(input_ids=input_ids, use_cache=False).last_hidden_state
            rows = []
            for r in range(len(chunk)):
                # Supervised positions found on the host, so the device never has to report them.
                positions, targets = supervised_positions(batch["labels"][r : r + 1])
                rows.append(
                    {
                        "hidden_states": hidden[r : r + 1],
                        "head": head,
                        "chunk_size": NLL_CHUNK,
                        "positions": positions.to(device),
                        "targets": targets.to(device),
                    }
                )
        nll_parts += [masked_nll(labels[r : r + 1], **row)[0] for r, row in enumerate(rows)]
        bar.update(len(chunk))
    bar.close()
    model.train(was_training)
    nlls = torch.stack(nll_parts).double().tolist()
    per_sample = [math.nan] * len(conversations)
    per_nll, per_tokens = [0.0] * len(conversations), [0] * len(conversations)
    for (index, _), nll, n in zip(examples, nlls, counts, strict=True):
        per_sample[index] = math.exp(nll / n)
        per_nll[index], per_tokens[index] = nll, n
    total, count = math.fsum(nlls), sum(counts)
    name = getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
    signature = (
        f"ppl|model:{name}|tokens:assistant-only|render:medsft.chat|thinking:{enable_thinking}"
        f"|max_len:{max_length}|weighting:token|n:{len(examples)}|skipped:{skipped}"
    )
    return PerplexityResult(
        perplexity_from_nll(total, count),
        total,
        count,
        per_sample,
        per_nll,
        per_tokens,
        skipped,
        signature,
    )
