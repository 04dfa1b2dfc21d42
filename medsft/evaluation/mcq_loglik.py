"""Next-token log-probabilities of option letters for many prompts that share few-shot prefixes.

CMMLU's own loop (and this project's until now) runs one forward pass over every whole prompt and
takes the vocabulary logits at every position: for a 5-shot CMMLU prompt, ~337 tokens of which
~80% are the subject's solved examples, the same for every question of the subject. Here:

- each distinct prefix (the instruction and the solved examples) runs once; its key/value cache
  is expanded over a batch of that prefix's questions, which run only their own tokens;
- questions are batched by length (right-padded: under causal attention no real token sees the
  padding after it, so no attention mask is needed beyond the causal one over prefix + question);
- the vocabulary projection runs at one position per question, the answer cue's last token. All
  of the vocabulary there, not just the letters: a letter's log-probability is normalised over
  every token, as the one-prompt loop's log-softmax is (one [vocab] row per question, not one
  per prompt token).

The prompts' token ids are those of the whole prompt, as before: a prompt is split after its
prefix's tokens only where encoding the prefix alone gives exactly the first tokens of the whole
prompt's encoding; elsewhere (a tokenizer merging across the boundary) the prompt runs whole,
without the shared cache. Log-probabilities equal the one-prompt loop's up to float rounding
(tests/evaluation/test_mcq_loglik.py checks every shipped CMMLU question).
"""

from __future__ import annotations

import inspect
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from medsft.errors import InputError

log = logging.getLogger(__name__)


@dataclass
class Encoded:
    """One prompt's token ids, split after its shared prefix."""

    index: int
    """The prompt's position in the input."""
    prefix: int
    """Which distinct prefix it continues (-1: none, the whole prompt runs on its own)."""
    ids: list[int]
    """The ids after the prefix (the whole prompt's when `prefix` is -1)."""
    letter_ids: list[int]
    """Each letter's token id as it follows the whole prompt."""


def letter_token_ids(
    prompt: str, letters: str, ids: list[int], with_letters: Sequence[list[int]]
) -> list[int]:
    """Each letter's token id as it follows `prompt`, from the encodings of `prompt` (`ids`) and
    of `prompt + letter` for each letter; raises if a letter would not be one token of its own
    there (then its log-probability is not one next-token probability)."""
    out = []
    for letter, full in zip(letters, with_letters, strict=True):
        if full[: len(ids)] != ids or len(full) != len(ids) + 1:
            raise InputError(
                f"the tokenizer merges option letter {letter!r} with the prompt's end "
                f"{prompt[-8:]!r}; the loglik method needs the letter to be a token of its own"
            )
        out.append(full[-1])
    return out


def encode(
    tokenizer: Any, prompts: Sequence[str], prefixes: Sequence[str], letters: str
) -> tuple[list[list[int]], list[Encoded]]:
    """The distinct prefixes' ids, and each prompt's ids after its prefix.

    Args:
        tokenizer: the model's tokenizer (no special tokens are added, as for the whole prompt).
        prompts: the whole prompts.
        prefixes: each prompt's shared beginning ('' for none); `prompts[i]` starts with it.
        letters: the option letters to score.
    """
    for i, (prompt, prefix) in enumerate(zip(prompts, prefixes, strict=True)):
        if not prompt.startswith(prefix):
            raise ValueError(f"prompt {i} does not start with its prefix")
    distinct = list(dict.fromkeys(p for p in prefixes if p))
    known = {p: g for g, p in enumerate(distinct)}
    # Few large calls: a fast tokenizer encodes a batch on all cores.
    prefix_ids = tokenizer(distinct, add_special_tokens=False)["input_ids"] if distinct else []
    whole = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    texts = [p + letter for p in prompts for letter in letters]
    with_letters = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    encoded, fallbacks, n = [], 0, len(letters)
    for i, (prompt, prefix, ids) in enumerate(zip(prompts, prefixes, whole, strict=True)):
        letter_ids = letter_token_ids(prompt, letters, ids, with_letters[i * n : (i + 1) * n])
        group = known.get(prefix, -1)
        head = prefix_ids[group] if group >= 0 else []
        # The split must not change the ids: the prefix's own encoding has to be where the whole
        # prompt's encoding starts, with at least one token of the question after it.
        if group >= 0 and not (ids[: len(head)] == head and len(ids) > len(head)):
            group, head, fallbacks = -1, [], fallbacks + 1
        encoded.append(Encoded(i, group, ids[len(head) :], letter_ids))
    if fallbacks:
        log.info("mcq loglik: %d prompt(s) tokenized across their prefix run whole", fallbacks)
    return prefix_ids, encoded


PADDING = 0.25
"""A batch takes no question shorter than this share below its longest: its padding would cost
as much compute as real tokens (a small subject's few long questions then run apart)."""


def batches(encoded: Sequence[Encoded], batch_size: int) -> list[list[Encoded]]:
    """Prompts grouped by prefix, then by length (longest first, so memory fails at once), at
    most `batch_size` together and none padded by more than `PADDING` of the batch's width."""
    by_prefix: dict[int, list[Encoded]] = defaultdict(list)
    for e in encoded:
        by_prefix[e.prefix].append(e)
    out: list[list[Encoded]] = []
    for group in by_prefix.values():
        current: list[Encoded] = []
        for e in sorted(group, key=lambda e: (-len(e.ids), e.index)):
            if current and (
                len(current) == batch_size or len(e.ids) < (1 - PADDING) * len(current[0].ids)
            ):
                out.append(current)
                current = []
            current.append(e)
        out.append(current)
    return out


def _cache_argument(backbone: Any) -> str:
    """The decoder's name for a key/value cache: `cache` (transformers >= 5.x) or the older
    `past_key_values`."""
    params = inspect.signature(backbone.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _shares_prefixes(model: Any) -> bool:
    """Whether a prefix's cache can be expanded over a batch: every layer's cache a plain growing
    one (sliding-window layers crop theirs)."""
    config = getattr(model, "config", None)
    types = getattr(config, "layer_types", None) or []
    return all(t == "full_attention" for t in types) and not getattr(
        config, "use_sliding_window", False
    )


class LetterScorer:
    """Runs prefixes once and their questions in batches on `model` (see the module docstring)."""

    def __init__(self, model: Any) -> None:
        from medsft.metrics.likelihood import split_head

        self.model = model
        self.backbone, self.head = split_head(model)
        self.device = next(model.parameters()).device
        self.cache_kw = _cache_argument(self.backbone)
        self.sharing = _shares_prefixes(self.backbone)

    def prefix_cache(self, ids: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each layer's (keys, values) after the prefix `ids` (batch of one)."""
        from transformers import DynamicCache

        cache = DynamicCache()
        self.backbone(
            input_ids=torch.tensor([ids], device=self.device),
            use_cache=True,
            **{self.cache_kw: cache},
        )
        return [(layer.keys, layer.values) for layer in cache.layers]

    def batch(
        self, rows: list[Encoded], prefix: list[tuple[torch.Tensor, torch.Tensor]] | None, pad: int
    ) -> torch.Tensor:
        """log P(letter | prompt) of each row's letters: [rows, letters] on the CPU."""
        from transformers import DynamicCache

        width = max(len(r.ids) for r in rows)
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        for i, r in enumerate(rows):
            input_ids[i, : len(r.ids)] = torch.tensor(r.ids)
        start = 0 if prefix is None else prefix[0][0].shape[-2]
        extra: dict[str, Any] = {"use_cache": False}  # nothing runs after these tokens
        if prefix is not None:
            cache = DynamicCache()
            for layer, (keys, values) in enumerate(prefix):
                # Expanded views: the cache's first update copies them into its own tensors.
                shape = (len(rows), -1, -1, -1)
                cache.update(keys.expand(shape), values.expand(shape), layer)
            extra = {self.cache_kw: cache, "use_cache": True}
        positions = torch.arange(start, start + width, device=self.device).expand(len(rows), -1)
        input_ids = input_ids.to(self.device)
        last = torch.tensor([len(r.ids) - 1 for r in rows], device=self.device)
        rows_at = torch.arange(len(rows), device=self.device)
        if self.head is None:
            out = self.model(input_ids=input_ids, position_ids=positions, **extra)
            logits = out.logits[rows_at, last]
        else:
            out = self.backbone(input_ids=input_ids, position_ids=positions, **extra)
            logits = self.head(out.last_hidden_state[rows_at, last])
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        letter_ids = torch.tensor([r.letter_ids for r in rows], device=self.device)
        return logprobs.gather(1, letter_ids).cpu()


@torch.inference_mode()
def letter_logprobs(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    prefixes: Sequence[str],
    letters: str,
    *,
    batch_size: int = 16,
    on_batch: Callable[[list[int], list[list[float]]], None] | None = None,
    progress: bool = False,
) -> list[list[float]]:
    """log P(letter | prompt) of each letter after each prompt, sharing the prefixes' work.

    Args:
        model: a causal LM (transformers or PEFT), on its device, in eval mode.
        tokenizer: its tokenizer.
        prompts: the whole prompts, each ending where the answer letter would follow.
        prefixes: each prompt's shared beginning (e.g. the instruction and solved examples of its
            subject), or '' for none; run once per distinct prefix.
        letters: the option letters, scored in this order.
        batch_size: questions per forward pass.
        on_batch: called with (prompt indices, their log-probabilities) after each batch, e.g.
            to save them as they come.
        progress: show a progress bar.

    Returns:
        Per prompt, in input order, the letters' log-probabilities.
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not prompts:  # e.g. a rank whose share is empty
        return []
    scorer = LetterScorer(model)
    if not scorer.sharing:
        prefixes = [""] * len(prompts)
    prefix_ids, encoded = encode(tokenizer, prompts, prefixes, letters)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out: list[list[float] | None] = [None] * len(prompts)
    cached: tuple[int, Any] = (-1, None)
    bar = tqdm(total=len(prompts), desc="mcq loglik", unit="q", disable=not progress)
    for rows in batches(encoded, batch_size):
        group = rows[0].prefix
        if group >= 0 and cached[0] != group:  # batches of a prefix come one after another
            cached = (group, scorer.prefix_cache(prefix_ids[group]))
        values = scorer.batch(rows, cached[1] if group >= 0 else None, pad).tolist()
        for r, v in zip(rows, values, strict=True):
            out[r.index] = v
        if on_batch is not None:
            on_batch([r.index for r in rows], values)
        bar.update(len(rows))
    bar.close()
    return out  # type: ignore[return-value]
