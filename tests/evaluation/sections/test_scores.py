"""medsft.evaluation.sections.scores: the scores table, paired tests, slices and signatures."""

from __future__ import annotations

import pytest

from medsft.evaluation import ScoringSettings
from medsft.evaluation.scoring import score_texts
from medsft.evaluation.sections.scores import render_paired, render_scores, render_signatures
from tests.helpers import sample_report

REFS = ["发热时多喝水，体温超过38.5度可服用退烧药。", "高血压患者应限制咖啡因的摄入。"]


@pytest.mark.parametrize("mode", ["set", "multiset"])
def test_the_report_labels_the_vocab_f1_mode(mode):
    preds = ["多喝水。", "少喝咖啡。"]
    metrics = score_texts(preds, REFS, ScoringSettings(n_resamples=0, vocab_f1_mode=mode), "zh")
    report = {
        "metric_tokenizer": "zh",
        "systems": [{"name": "a"}],
        "metrics": {"a": metrics},
        "perplexity": {},
        "paired": [{"a": "a", "b": "b", "metric": "vocab-F1", "delta": 1.0, "p_value": 0.5}],
    }
    md = "\n".join(render_scores(report) + render_paired(report))
    assert f"| vocab-F1 ({mode}) |" in md and f"vocab-F1 ({mode}): " in md
    assert "equals ROUGE-1 F1" in md


def test_every_score_has_its_signature_listed():
    report = sample_report([1, 2])
    lines = render_signatures(report)
    metrics = report["metrics"]["short"]
    assert lines[2:] == [f"- `{e['signature']}`" for e in metrics.values()]
    assert len(lines) - 2 == len(metrics)
