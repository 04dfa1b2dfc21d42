"""Text metrics: equality with sacrebleu and rouge-score on real Chinese and English text."""

import json
import random
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import sacrebleu
from rouge_score import rouge_scorer
from sacrebleu.metrics.bleu import BLEU
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a
from sacrebleu.tokenizers.tokenizer_zh import TokenizerZh

from medsft.metrics import (
    COMPARABLE,
    METRICS,
    MetricResult,
    bleu,
    bootstrap_interval,
    compare,
    distinct,
    metric_name,
    paired_bootstrap,
    rouge,
    score_metric,
    tokenize,
    vocab_f1,
)

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"

# --------------------------------------------------------------------------------------------
# Data: our references (data/sample), predictions = seeded perturbations of them; the real
# public answers in ../shared/data add a second corpus where present (CI)
# --------------------------------------------------------------------------------------------


def perturb(text: str, rng: random.Random, rate: float = 0.15, words: bool = False) -> str:
    """Delete, replace, insert and locally shuffle characters (or words) of `text`."""
    units = text.split(" ") if words else list(text)
    pool = units[:] or ["x"]
    out: list[str] = []
    for unit in units:
        r = rng.random()
        if r < rate / 3:
            continue
        if r < 2 * rate / 3:
            out.append(rng.choice(pool))
        elif r < rate:
            out.extend([unit, rng.choice(pool)])
        else:
            out.append(unit)
    for _ in range(max(1, len(out) // 40)):  # a few swapped neighbours
        if len(out) > 2:
            i = rng.randrange(len(out) - 1)
            out[i], out[i + 1] = out[i + 1], out[i]
    return (" " if words else "").join(out)


def _jsonl(path, field: str) -> list[str]:
    return [json.loads(line)[field] for line in path.read_text("utf-8").splitlines()]


def _zh_pairs(refs: list[str]):
    rng = random.Random(0)
    return [perturb(r, rng) for r in refs], refs


def _en_pairs(refs: list[str]):
    rng = random.Random(1)
    return [perturb(r, rng, words=True) for r in refs], refs


def _sample_corpus() -> dict:
    """The project's own answers (data/sample): Chinese and English, present in every clone."""
    rows = json.loads((SAMPLE / "test_zh_med.json").read_text("utf-8"))
    huatuo = _jsonl(SAMPLE / "huatuo_sample.jsonl", "answer")
    return {
        "zh": _zh_pairs([answer for _, answer in rows] + huatuo[:8]),
        "en": _en_pairs(_jsonl(SAMPLE / "medquad_sample.jsonl", "Answer")),
        "huatuo": huatuo[:60],
    }


def _shared_corpus(shared_data) -> dict:
    """Real public answers from ../shared/data (CI only): text nobody wrote for these tests."""
    zh = json.loads((shared_data / "course_a3_testsets" / "zh_med.json").read_text("utf-8"))
    path = shared_data / "english_tasks" / "medquad_official_sample1000.jsonl"
    en = [answer[:600] for answer in _jsonl(path, "Answer")[:30]]
    en_course = json.loads((shared_data / "course_a3_testsets" / "en_med.json").read_text("utf-8"))
    huatuo = shared_data / "huatuo26m_lite" / "huatuo26m_lite_qa500.enddonkey.jsonl"
    return {
        "zh": _zh_pairs([answer for _, answer in zh]),
        "en": _en_pairs(en + [answer[:600] for _, answer in en_course]),
        "huatuo": _jsonl(huatuo, "answer")[:60],
    }


@pytest.fixture(scope="module", params=["sample", "shared"])
def corpus(request) -> dict:
    """Every data test runs on our sample answers, and again on ../shared's when it is there."""
    if request.param == "sample":
        return _sample_corpus()
    return _shared_corpus(request.getfixturevalue("shared_data"))


@pytest.fixture(scope="module")
def zh_pairs(corpus):
    """Chinese reference answers against perturbed copies."""
    return corpus["zh"]


@pytest.fixture(scope="module")
def huatuo_answers(corpus):
    return corpus["huatuo"]


@pytest.fixture(scope="module")
def en_pairs(corpus):
    """English reference answers against perturbed copies (whole words deleted, swapped...)."""
    return corpus["en"]


def short(pairs, chars: int = 200):
    """Cut both sides so rouge-score's O(n*m) pure-Python LCS stays fast in the tests."""
    preds, refs = pairs
    return [p[:chars] for p in preds], [r[:chars] for r in refs]


def rouge_score_reference(preds, refs, tokenizer: str, lowercase: bool = False):
    wrapper = SimpleNamespace(tokenize=lambda t: tokenize(t, tokenizer, lowercase=lowercase))
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=wrapper)
    return [scorer.score(r, p) for p, r in zip(preds, refs, strict=True)]


# --------------------------------------------------------------------------------------------
# Import weight
# --------------------------------------------------------------------------------------------


def test_import_does_not_pull_lightning_or_openai():
    code = (
        "import sys, medsft.metrics\n"
        "bad = [m for m in ('lightning', 'pytorch_lightning', 'openai') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------------------------
# Tokenizers
# --------------------------------------------------------------------------------------------


def _fuzz_strings(n: int, seed: int) -> list[str]:
    alphabet = list("ab9 0.,-!&(/:@[`{~_\"'#$%*+;<=>?\\^|}\n\t中文。，、") + [
        "\u3000",
        "\u2014",
        "\u201c",
        "\u2028",
        "\u00a0",
        "&quot;",
        "<skipped>",
        "-\n",
        "\U00020001",
    ]
    rng = random.Random(seed)
    return ["".join(rng.choices(alphabet, k=rng.randrange(0, 14))) for _ in range(n)]


def test_zh_and_13a_tokens_equal_sacrebleu_on_real_and_adversarial_text(
    zh_pairs, en_pairs, huatuo_answers
):
    texts = [*zh_pairs[0], *zh_pairs[1], *huatuo_answers, *en_pairs[1], *_fuzz_strings(5000, 0)]
    zh, t13a = TokenizerZh(), Tokenizer13a()
    for text in texts:
        # sacrebleu right-strips every segment before tokenizing it.
        assert tokenize(text, "zh") == zh(text.rstrip()).split(), repr(text)
        assert tokenize(text, "13a") == t13a(text.rstrip()).split(), repr(text)


def test_default_tokenizer_keeps_chinese_characters(zh_pairs):
    text = zh_pairs[1][0]
    tokens = tokenize(text)
    han = [c for c in text if "\u4e00" <= c <= "\u9fff"]
    assert han and Counter(han) <= Counter(tokens)
    assert "tok:zh" in bleu([text], [text]).signature


def test_char_and_jieba_tokenizers():
    text = "患者HbA1c为7.5%，建议use metformin治疗"
    chars = tokenize(text, "char")
    assert chars[:3] == ["患", "者", "HbA1c"] and "metformin" in chars and "治" in chars
    words = tokenize(text, "jieba")
    assert "".join(words) == text.replace(" ", "") and len(words) < len(chars)
    assert all(w.strip() == w and w for w in words)


def test_identical_chinese_scores_100_unlike_rouge_score_default(zh_pairs):
    # Without the Latin letters and digits (list numbering), nothing is left for [a-z0-9].
    refs = [re.sub(r"[A-Za-z0-9]", "", r) for r in zh_pairs[1][:3]]
    default = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"])
    assert all(s.fmeasure == 0.0 for r in refs for s in default.score(r, r).values())
    ours = rouge(refs, refs)
    assert all(result.score == 100.0 for result in ours.values())


@pytest.mark.parametrize("tokenizer", ["auto", "zh", "char", "jieba", "13a"])
def test_identical_strings_score_100(tokenizer, zh_pairs, en_pairs):
    for refs in (zh_pairs[1][:5], en_pairs[1][:5]):
        assert bleu(refs, refs, tokenizer=tokenizer).score == pytest.approx(100.0)
        assert all(r.score == 100.0 for r in rouge(refs, refs, tokenizer=tokenizer).values())
        for mode in ("multiset", "set"):
            assert vocab_f1(refs, refs, mode=mode, tokenizer=tokenizer).score == 100.0


# --------------------------------------------------------------------------------------------
# BLEU == sacrebleu
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_bleu_equals_sacrebleu_chinese(zh_pairs, order):
    preds, refs = zh_pairs
    ours = bleu(preds, refs, max_ngram_order=order)
    theirs = BLEU(tokenize="zh", max_ngram_order=order).corpus_score(preds, [refs])
    assert ours.score == theirs.score
    assert ours.details["bp"] == theirs.bp
    assert ours.name == f"BLEU-{order}" and f"order:1-{order}" in ours.signature


def test_bleu_equals_sacrebleu_english_options(en_pairs):
    preds, refs = en_pairs
    for smooth, value in [("exp", None), ("floor", 0.2), ("add-k", 1), ("none", None)]:
        for lowercase in (False, True):
            ours = bleu(preds, refs, smooth_method=smooth, smooth_value=value, lowercase=lowercase)
            theirs = sacrebleu.corpus_bleu(
                preds, [refs], smooth_method=smooth, smooth_value=value, lowercase=lowercase
            )
            assert ours.score == theirs.score, (smooth, lowercase)
            assert "tok:13a" in ours.signature and f"smooth:{smooth}" in ours.signature


@pytest.mark.parametrize("tokenizer", ["jieba", "char"])
def test_bleu_with_word_tokenizers_equals_sacrebleu_on_pretokenized_text(zh_pairs, tokenizer):
    preds, refs = zh_pairs
    join = lambda texts: [" ".join(tokenize(t, tokenizer)) for t in texts]  # noqa: E731
    theirs = sacrebleu.corpus_bleu(join(preds), [join(refs)], tokenize="none")
    assert bleu(preds, refs, tokenizer=tokenizer).score == theirs.score


def test_bleu_per_sample_is_sacrebleu_sentence_bleu(zh_pairs):
    preds, refs = zh_pairs
    ours = bleu(preds, refs).per_sample
    theirs = [
        sacrebleu.sentence_bleu(p, [r], tokenize="zh").score
        for p, r in zip(preds, refs, strict=True)
    ]
    assert ours.tolist() == theirs


# --------------------------------------------------------------------------------------------
# ROUGE == rouge-score, vocab F1, distinct
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "tokenizer", "lowercase"),
    [("zh", "zh", False), ("zh", "jieba", False), ("en", "13a", True), ("en", "char", False)],
)
def test_rouge_equals_rouge_score(zh_pairs, en_pairs, data, tokenizer, lowercase):
    preds, refs = short(zh_pairs if data == "zh" else en_pairs)
    ours = rouge(preds, refs, tokenizer=tokenizer, lowercase=lowercase)
    theirs = rouge_score_reference(preds, refs, tokenizer, lowercase)
    for key in ("rouge1", "rouge2", "rougeL"):
        result = ours[key]
        # Bit-identical per sample: same formulas, same operation order.
        assert result.per_sample.tolist() == [100 * s[key].fmeasure for s in theirs]
        assert result.per_sample_precision.tolist() == [100 * s[key].precision for s in theirs]
        assert result.per_sample_recall.tolist() == [100 * s[key].recall for s in theirs]
        assert result.score == pytest.approx(100 * np.mean([s[key].fmeasure for s in theirs]))
        assert 0 < result.score < 100
        assert "corpus:mean-of-samples" in result.signature


def test_vocab_f1_multiset_and_set_definitions(zh_pairs):
    preds, refs = zh_pairs
    multi, as_set = vocab_f1(preds, refs, mode="multiset"), vocab_f1(preds, refs)
    # One name, one definition: the default counts token types, the SQuAD-style count is token-F1.
    assert (as_set.name, multi.name) == ("vocab-F1", "token-F1")
    assert "|overlap:set|" in as_set.signature and multi.signature.startswith("token-F1|")
    for i, (p, r) in enumerate(zip(preds, refs, strict=True)):
        tp, tr = tokenize(p), tokenize(r)
        shared = sum((Counter(tp) & Counter(tr)).values())  # SQuAD-style
        prec, rec = shared / len(tp), shared / len(tr)
        assert multi.per_sample[i] == pytest.approx(100 * 2 * prec * rec / (prec + rec))
        sp, sr = set(tp), set(tr)
        assert as_set.per_sample_precision[i] == pytest.approx(100 * len(sp & sr) / len(sp))
        assert as_set.per_sample_recall[i] == pytest.approx(100 * len(sp & sr) / len(sr))
    assert multi.per_sample.tolist() == rouge(preds, refs)["rouge1"].per_sample.tolist()
    # Repetition is rewarded by the set definition only.
    babble = ["高血压高血压高血压高血压"]
    ref = ["高血压患者应低盐饮食"]
    assert vocab_f1(babble, ref).precision == 100.0
    assert vocab_f1(babble, ref, mode="multiset").precision < 50.0


def test_distinct_matches_definition(huatuo_answers):
    preds = huatuo_answers
    result = distinct(preds, orders=(1, 2))
    for n in (1, 2):
        grams = [tuple(t[i : i + n]) for t in map(tokenize, preds) for i in range(len(t) - n + 1)]
        assert result[f"distinct-{n}"].score == pytest.approx(100 * len(set(grams)) / len(grams))
    assert result["distinct-2"].score > result["distinct-1"].score
    assert distinct(preds + preds)["distinct-1"].score < result["distinct-1"].score
    first = tokenize(preds[0])
    assert result["distinct-1"].per_sample[0] == pytest.approx(100 * len(set(first)) / len(first))


# --------------------------------------------------------------------------------------------
# Bootstrap intervals and paired test
# --------------------------------------------------------------------------------------------


def test_bleu_interval_recomputes_corpus_bleu_on_each_resample(zh_pairs):
    preds, refs = short(zh_pairs, 150)
    ours = bleu(preds, refs, confidence=True, n_resamples=30, seed=7)
    metric = BLEU(tokenize="zh")  # one instance, so sacrebleu's tokenizer cache is reused

    def sacrebleu_on(idx):
        return metric.corpus_score([preds[i] for i in idx], [[refs[i] for i in idx]]).score

    theirs = bootstrap_interval(len(preds), sacrebleu_on, n_resamples=30, seed=7)
    assert (ours.interval.low, ours.interval.high) == pytest.approx((theirs.low, theirs.high))
    assert ours.interval.low < ours.score < ours.interval.high
    assert "bs:30|rs:7" in ours.signature
    again = bleu(preds, refs, confidence=True, n_resamples=30, seed=7)
    other = bleu(preds, refs, confidence=True, n_resamples=30, seed=8)
    assert again.interval == ours.interval and other.interval != ours.interval


def test_intervals_for_mean_metrics_and_distinct(zh_pairs):
    preds, refs = zh_pairs
    for result in [
        *rouge(preds, refs, confidence=True, n_resamples=50).values(),
        vocab_f1(preds, refs, confidence=True, n_resamples=50),
    ]:
        assert result.interval.low <= result.score <= result.interval.high
    assert distinct(preds, orders=1)["distinct-1"].interval is None  # see distinct's docstring


def test_compare_detects_better_system_and_matches_sacrebleu_paired_bootstrap(zh_pairs):
    preds, refs = short(zh_pairs, 150)
    rng = random.Random(5)
    worse = [perturb(r, rng, rate=0.6) for r in refs]
    test = compare("bleu", preds, worse, refs, n_resamples=50, seed=1)
    assert test.delta > 0 and test.p_value < 0.05
    metric = BLEU(tokenize="zh")

    def stat(system):
        return lambda idx: (
            metric.corpus_score([system[i] for i in idx], [[refs[i] for i in idx]]).score
        )

    theirs = paired_bootstrap(len(refs), stat(preds), stat(worse), n_resamples=50, seed=1)
    assert test.p_value == theirs.p_value and test.delta == pytest.approx(theirs.delta)

    same = compare("rougeL", preds, preds, refs, n_resamples=50)
    assert same.delta == 0 and same.p_value == 1.0
    assert compare("vocab_f1", preds, worse, refs, mode="set", n_resamples=50).delta > 0


# --------------------------------------------------------------------------------------------
# Bad input: clear errors or documented values
# --------------------------------------------------------------------------------------------


def test_empty_prediction_scores_zero_for_that_sample(zh_pairs):
    preds, refs = list(zh_pairs[0][:4]), zh_pairs[1][:4]
    preds[1] = ""
    for result in [bleu(preds, refs), *rouge(preds, refs).values(), vocab_f1(preds, refs)]:
        assert result.per_sample[1] == 0.0 and result.per_sample[0] > 0, result.name
    assert distinct(preds)["distinct-1"].per_sample[1] == 0.0
    assert bleu(preds, refs).score == sacrebleu.corpus_bleu(preds, [refs], tokenize="zh").score


def test_mismatched_lengths_name_both():
    with pytest.raises(ValueError, match=r"predictions has 2 items but references has 3"):
        rouge(["a", "b"], ["a", "b", "c"])


@pytest.mark.parametrize("metric", [bleu, rouge, vocab_f1])
def test_bad_items_and_empty_references(metric):
    with pytest.raises(TypeError, match=r"predictions\[1\] is NoneType"):
        metric(["a", None], ["a", "b"])
    with pytest.raises(TypeError, match=r"references\[0\] is int"):
        metric(["a"], [3])
    with pytest.raises(TypeError, match="list of strings"):
        metric("a text", "a text")
    with pytest.raises(ValueError, match=r"references\[1\] has no tokens"):
        metric(["a", "b"], ["a", "  "])
    with pytest.raises(ValueError, match="at least one"):
        metric([], [])
    with pytest.raises(ValueError, match="choose one of auto, zh, char, jieba, 13a"):
        metric(["a"], ["a"], tokenizer="whitespace")


def test_bad_options():
    with pytest.raises(ValueError, match="smooth_method"):
        bleu(["a"], ["a"], smooth_method="laplace")
    with pytest.raises(ValueError, match="max_ngram_order"):
        bleu(["a"], ["a"], max_ngram_order=0)
    with pytest.raises(ValueError, match="rougeLsum"):
        rouge(["a"], ["a"], rouge_types=["rougeLsum"])
    # One check, the same message, wherever a vocab-F1 mode is taken.
    bad_mode = r"unknown mode 'bag'; choose 'multiset'"
    with pytest.raises(ValueError, match=bad_mode):
        vocab_f1(["a"], ["a"], mode="bag")
    with pytest.raises(ValueError, match=bad_mode):
        compare("vocab_f1", ["a"], ["a"], ["a"], mode="bag")
    with pytest.raises(ValueError, match="unknown metric"):
        compare("meteor", ["a"], ["a"], ["a"])
    with pytest.raises(TypeError, match=r"predictions_b\[0\] is bytes"):
        compare("rougeL", ["a"], [b"a"], ["a"])


def test_result_object_and_signature(zh_pairs):
    preds, refs = zh_pairs
    result = bleu(preds, refs, max_ngram_order=2)
    assert isinstance(result, MetricResult) and len(result.per_sample) == len(preds)
    for part in ("BLEU-2", "nrefs:1", "tok:zh", "smooth:exp", f"sacrebleu:{sacrebleu.__version__}"):
        assert part in result.signature
    assert str(result).startswith(result.signature) and f"{result.score:.2f}" in str(result)
    sig = rouge(preds, refs, rouge_types=["rougeL"])["rougeL"].signature
    assert "ROUGE-L" in sig and "equals:rouge-score(same-tokens)" in sig and "case:mixed" in sig


def test_signatures_describe_the_computation_not_the_installed_packages(zh_pairs, monkeypatch):
    from importlib import metadata

    preds, refs = zh_pairs
    signatures = [r.signature for r in rouge(preds, refs).values()]
    real_version = metadata.version

    def without_rouge_score(package):
        if package.replace("_", "-") == "rouge-score":
            raise metadata.PackageNotFoundError(package)
        return real_version(package)

    # rouge-score is only what the numbers were checked against; uninstalling it changes nothing.
    monkeypatch.setattr(metadata, "version", without_rouge_score)
    assert [r.signature for r in rouge(preds, refs).values()] == signatures


# --------------------------------------------------------------------------------------------
# The metrics table
# --------------------------------------------------------------------------------------------


def test_the_table_is_the_one_path_of_every_metric_and_paired_test(zh_pairs):
    preds, refs = short(zh_pairs, 20)
    assert (
        score_metric("bleu", preds, refs, max_ngram_order=2).score
        == bleu(preds, refs, max_ngram_order=2).score
    )
    assert score_metric("rougeL", preds, refs).signature == rouge(preds, refs)["rougeL"].signature
    assert score_metric("distinct", preds, n=2).score == distinct(preds)["distinct-2"].score
    assert tuple(k for k, m in METRICS.items() if m.references) == COMPARABLE
    for key in COMPARABLE:
        option = METRICS[key].option
        needs = {option: "rouge2"} if key == "rouge" else {}
        assert compare(key, preds, preds, refs, n_resamples=5, **needs).delta == 0, option
    assert metric_name("rouge2") == "ROUGE-2" and metric_name("vocab_f1") == "vocab-F1"
    with pytest.raises(ValueError, match="'distinct' scores predictions alone"):
        compare("distinct", preds, preds, refs, n=1)
    with pytest.raises(ValueError, match="'rougeL' takes no option mode; its options: rouge_type"):
        compare("rougeL", preds, preds, refs, mode="set")
    with pytest.raises(ValueError, match="'rouge' needs rouge_type"):
        score_metric("rouge", preds, refs)
    with pytest.raises(ValueError, match="'bleu' needs references"):
        score_metric("bleu", preds)
