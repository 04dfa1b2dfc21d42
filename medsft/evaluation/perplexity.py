"""Reference perplexity of a model system, shared across data-parallel ranks, with its interval.

With several ranks (evaluate.py --runtime.devices N), every rank scores every N-th conversation
and the parts are gathered, so no rank sits in a collective while another computes for minutes
(NCCL aborts a collective after 30 minutes). Ranks call `shared_perplexity` together, right after
generating together, and get the same result.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from medsft.chat import Message
from medsft.errors import InputError
from medsft.evaluation.config import ScoringSettings
from medsft.ranks import process_group_rank as world


def shared_perplexity(
    model: Any,
    tokenizer: Any,
    conversations: Sequence[Sequence[Message]],
    **options: Any,
) -> Any:
    """`medsft.metrics.perplexity` over all ranks of the process group (every rank calls it).

    Args:
        model: the model, on this rank's device.
        tokenizer: its tokenizer.
        conversations: the whole set (the same on every rank).
        options: batch_size, max_length, enable_thinking, progress (see medsft.metrics).

    Returns:
        A `PerplexityResult` of the whole set, equal (up to float summation order) to a
        single-process one.
    """
    from medsft.metrics import PerplexityResult, perplexity, perplexity_from_nll

    rank, size = world()
    if size == 1:
        return perplexity(model, tokenizer, conversations, **options)
    import torch.distributed as dist

    mine = list(range(rank, len(conversations), size))
    try:
        part = perplexity(model, tokenizer, [conversations[i] for i in mine], **options)
    except ValueError:
        part = None  # no example of this share has a supervised token: all of them skipped
    parts: list[Any] = [None] * size
    dist.all_gather_object(parts, (mine, part))  # before any raise, so no rank is left waiting

    n = len(conversations)
    per_sample, nll, tokens = [math.nan] * n, [0.0] * n, [0] * n
    skipped, signature = 0, None
    for indices, result in parts:
        if result is None:
            skipped += len(indices)
            continue
        skipped += result.skipped
        signature = signature or result.signature
        for j, i in enumerate(indices):
            per_sample[i] = result.per_sample[j]
            nll[i], tokens[i] = result.per_sample_nll[j], result.per_sample_tokens[j]
    total, count = sum(nll), sum(tokens)
    if signature is None or count == 0:
        raise InputError(f"no example has a supervised token within {options.get('max_length')}")
    # Each part signs its own share; the whole set's count and skips replace them.
    signature = re.sub(r"\|n:\d+\|skipped:\d+", f"|n:{n - skipped}|skipped:{skipped}", signature)
    return PerplexityResult(
        perplexity_from_nll(total, count), total, count, per_sample, nll, tokens, skipped, signature
    )


def perplexity_summary(result: Any, scoring: ScoringSettings) -> dict[str, Any]:
    """Token-weighted perplexity with a bootstrap interval over examples (for report.json)."""
    import numpy as np

    from medsft.metrics.stats import bootstrap_interval

    n = np.asarray(result.per_sample_tokens, dtype=float)
    keep = n > 0
    nll, n = np.asarray(result.per_sample_nll, dtype=float)[keep], n[keep]
    out: dict[str, Any] = {
        "score": result.score,
        "loss": result.loss,
        "n_tokens": result.n_tokens,
        "skipped": result.skipped,
        "signature": result.signature,
        "per_sample": [None if math.isnan(x) else x for x in result.per_sample],
    }
    if scoring.n_resamples > 0 and len(n) > 0:
        interval = bootstrap_interval(
            len(n),
            lambda idx: float(np.exp(nll[idx].sum() / n[idx].sum())),
            n_resamples=scoring.n_resamples,
            seed=scoring.seed,
        )
        out.update(low=interval.low, high=interval.high, level=interval.level)
        out["signature"] += f"|ci:95%-percentile-bootstrap(token-weighted)|bs:{scoring.n_resamples}"
    return out
