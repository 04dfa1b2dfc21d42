"""medsft.evaluation.sections.scores: the scores table, paired tests, slices and signatures."""

from __future__ import annotations

import pytest

from medsft.evaluation import ScoringSettings
from medsft.evaluation.scoring import score_texts
from medsft.evaluation.sections.scores import render_paired, render_scores, render_signatures
from medsft.metrics import METRICS
from tests.helpers import sample_report

REFS = ["发热时多喝水，体温超过38.5度可服用退烧药。", "高血压患者应限制咖啡因的摄入。"]


@pytest.mark.parametrize(("mode", "name"), [("set", "vocab-F1"), ("multiset", "token-F1")])
def test_each_vocabulary_f1_has_its_own_name_and_the_table_note(mode, name):
    preds = ["多喝水。", "少喝咖啡。"]
    metrics = score_texts(preds, REFS, ScoringSettings(n_resamples=0, vocab_f1_mode=mode), "zh")
    report = {
        "metric_tokenizer": "zh",
        "systems": [{"name": "a"}],
        "metrics": {"a": metrics},
        "perplexity": {},
        "paired": [{"a": "a", "b": "b", "metric": name, "delta": 1.0, "p_value": 0.5}],
    }
    md = "\n".join(render_scores(report) + render_paired(report))
    assert f"| {name} |" in md and f"| a | b | {name} | +1.00 |" in md
    assert METRICS["vocab_f1"].note in md and METRICS["distinct"].note in md


def test_every_score_has_its_signature_listed():
    report = sample_report([1, 2])
    lines = render_signatures(report)
    metrics = report["metrics"]["short"]
    assert lines[2:] == [f"- `{e['signature']}`" for e in metrics.values()]
    assert len(lines) - 2 == len(metrics)
