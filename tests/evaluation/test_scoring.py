"""medsft.evaluation.scoring: metrics, distinct-n off, answer length and its flag."""

from __future__ import annotations

import pytest

from medsft.evaluation import ScoringSettings
from medsft.evaluation.scoring import flag_lengths, length_summary, score_texts

REFS = ["发热时多喝水，体温超过38.5度可服用退烧药。", "高血压患者应限制咖啡因的摄入。"]


def test_distinct_orders_empty_turns_distinct_off():
    preds = ["多喝水。", "少喝咖啡。"]
    on = score_texts(preds, REFS, ScoringSettings(n_resamples=20), "zh")
    off = score_texts(preds, REFS, ScoringSettings(n_resamples=20, distinct_orders=[]), "zh")
    assert {"distinct-1", "distinct-2"} <= set(on) and not any("distinct" in n for n in off)
    assert {n: e["score"] for n, e in off.items()} == {
        n: e["score"] for n, e in on.items() if "distinct" not in n
    }


def test_length_in_characters_and_tokens_and_the_cut_off_share():
    summary = length_summary(["一二三", " abc def \n", "一二三四五六七"], "zh", cut_off=1)
    assert summary["mean_chars"] == round((3 + 7 + 7) / 3, 1) and summary["median_chars"] == 7
    assert summary["mean_tokens"] == round((3 + 2 + 7) / 3, 1) and summary["median_tokens"] == 3
    assert summary["hit_max_new_tokens"] == pytest.approx(1 / 3)
    assert length_summary(["a"], "13a")["hit_max_new_tokens"] is None


def test_systems_beyond_twice_or_half_the_baseline_length_are_flagged():
    lengths = {
        name: {"mean_chars": chars}
        for name, chars in [("reference", 500), ("gpt", 100), ("long", 201), ("ok", 199),
                            ("short", 49), ("empty", 0)]
    }  # fmt: skip
    flag_lengths(lengths, "gpt")
    flags = {name: v["length_flag"] for name, v in lengths.items()}
    assert flags == {"reference": False, "gpt": False, "long": True, "ok": False, "short": True,
                     "empty": True}  # fmt: skip
    assert lengths["long"]["ratio_to_baseline"] == 2.01
    no_baseline = {"a": {"mean_chars": 1}}
    flag_lengths(no_baseline, None)
    assert no_baseline == {"a": {"mean_chars": 1}}
