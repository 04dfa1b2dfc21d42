"""medsft.evaluation.perplexity: shared across ranks (gloo, 2 processes), equal to one process."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch.multiprocessing as mp

from medsft.chat import qa_messages

ROOT = Path(__file__).resolve().parents[2]
OPTIONS = dict(batch_size=2, max_length=96, enable_thinking=False, progress=False)


def _conversations() -> list:
    rows = json.loads((ROOT / "data/sample/test_zh_med.json").read_text(encoding="utf-8"))[:4]
    conversations = [qa_messages(q, r) for q, r in rows]
    # Its answer lies beyond max_length: skipped (and counted) on whichever rank gets it.
    conversations.insert(2, qa_messages("问" * 200, "答"))
    return conversations


def _model_and_tokenizer():
    from medsft.model.build import load_tokenizer, random_qwen3

    return random_qwen3("tiny").eval(), load_tokenizer("qwen3")


def _rank(rank: int, world: int, init_file: str, out: str) -> None:
    import torch.distributed as dist

    from medsft.evaluation.perplexity import shared_perplexity
    from medsft.evaluation.perplexity import world as rank_and_size

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        assert rank_and_size() == (rank, world)
        model, tokenizer = _model_and_tokenizer()
        result = shared_perplexity(model, tokenizer, _conversations(), **OPTIONS)
        Path(f"{out}.{rank}").write_text(json.dumps(result.__dict__))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_share_the_work_and_agree_with_one_process(tmp_path):
    from medsft.evaluation.perplexity import shared_perplexity
    from medsft.metrics import perplexity

    out = str(tmp_path / "result")
    mp.spawn(_rank, args=(2, str(tmp_path / "init"), out), nprocs=2, join=True)
    model, tokenizer = _model_and_tokenizer()
    single = perplexity(model, tokenizer, _conversations(), **OPTIONS)
    assert shared_perplexity(model, tokenizer, _conversations(), **OPTIONS) == single  # 1 rank
    for rank in (0, 1):
        shared = json.loads(Path(f"{out}.{rank}").read_text())
        assert shared["skipped"] == single.skipped == 1
        assert shared["n_tokens"] == single.n_tokens
        assert shared["per_sample_tokens"] == single.per_sample_tokens
        assert math.isclose(shared["score"], single.score, rel_tol=1e-5)
        for a, b in zip(shared["per_sample"], single.per_sample, strict=True):
            assert (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-5)
        assert shared["signature"] == single.signature  # the whole set's n and skips
