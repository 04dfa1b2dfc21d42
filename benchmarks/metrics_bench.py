"""Time medsft.metrics against sacrebleu + rouge-score on long Chinese answers, and check equality.

Workload (the issue's target): BLEU + ROUGE-1/2/L + vocabulary F1 on 5,000 pairs of 300-character
Chinese answers, on one core. References are windows of real Huatuo26M-Lite answers from
../shared/data (synthetic Chinese-like text when that folder is absent); predictions are seeded
perturbations (deleted, replaced, inserted and swapped characters).

The reference pipeline is sacrebleu.corpus_bleu(tokenize="zh") on all pairs, rouge-score's
RougeScorer with sacrebleu's own zh tokenizer, and a plain Counter-based (SQuAD-style) vocabulary
F1. rouge-score needs ~20 ms per pair here, so by default it is timed on a subset and extrapolated
linearly (its cost per pair does not depend on the corpus); the output says so.

    OMP_NUM_THREADS=1 python benchmarks/metrics_bench.py [--pairs 5000] [--rouge-subset 250]

Exits with status 1 if any of our numbers differs from the reference libraries.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing medsft
HUATUO = ROOT.parent / "shared" / "data" / "huatuo26m_lite" / "huatuo26m_lite_qa500.enddonkey.jsonl"


def load_text(seed: int) -> tuple[str, str]:
    """One long Chinese text to cut windows from, and where it came from."""
    if HUATUO.is_file():
        answers = [json.loads(line)["answer"] for line in HUATUO.read_text("utf-8").splitlines()]
        return "".join(answers), f"real Huatuo26M-Lite answers ({HUATUO.name})"
    rng = random.Random(seed)
    # Frequent medical characters and punctuation, so n-gram statistics are not trivial.
    alphabet = "患者医生治疗建议检查症状疾病药物血压糖尿病高低正常情况可能需要及时注意饮食运动的了是在和有，。、0123456789"
    words = ["".join(rng.choices(alphabet, k=rng.randint(1, 4))) for _ in range(400)]
    return "".join(rng.choices(words, k=40000)), "synthetic text (../shared/data not found)"


def perturb(text: str, pool: str, rng: random.Random, rate: float) -> str:
    out: list[str] = []
    for ch in text:
        r = rng.random()
        if r < rate / 3:
            continue
        if r < 2 * rate / 3:
            out.append(rng.choice(pool))
        elif r < rate:
            out.extend([ch, rng.choice(pool)])
        else:
            out.append(ch)
    for _ in range(len(out) // 30):
        i = rng.randrange(len(out) - 1)
        out[i], out[i + 1] = out[i + 1], out[i]
    return "".join(out)


def build_pairs(n: int, chars: int, seed: int) -> tuple[list[str], list[str], str]:
    text, source = load_text(seed)
    rng = random.Random(seed)
    refs, preds = [], []
    for _ in range(n):
        start = rng.randrange(len(text) - chars)
        ref = text[start : start + chars]
        refs.append(ref)
        preds.append(perturb(ref, text, rng, rate=rng.uniform(0.05, 0.5)))
    return preds, refs, source


def pin_to_one_core() -> str:
    if hasattr(os, "sched_setaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}"
    return "not pinned (no sched_setaffinity on this OS)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5000)
    parser.add_argument("--chars", type=int, default=300)
    parser.add_argument(
        "--rouge-subset", type=int, default=250, help="pairs rouge-score is timed on (0 = all)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    core = pin_to_one_core()
    preds, refs, source = build_pairs(args.pairs, args.chars, args.seed)
    n = len(refs)
    print(f"{n} pairs of {args.chars}-character Chinese answers from {source}; {core}")

    # --- ours: cold caches, first thing in the process ---
    import medsft.metrics as M

    t0 = time.perf_counter()
    ours_bleu = M.bleu(preds, refs)
    t1 = time.perf_counter()
    ours_rouge = M.rouge(preds, refs)
    t2 = time.perf_counter()
    ours_vf1 = M.vocab_f1(preds, refs)
    t3 = time.perf_counter()
    ours = {"BLEU": t1 - t0, "ROUGE-1/2/L": t2 - t1, "vocab F1": t3 - t2}

    # --- reference libraries on the same inputs ---
    import sacrebleu
    from rouge_score import rouge_scorer
    from sacrebleu.tokenizers.tokenizer_zh import TokenizerZh

    t0 = time.perf_counter()
    ref_bleu = sacrebleu.corpus_bleu(preds, [refs], tokenize="zh")
    ref = {"BLEU": time.perf_counter() - t0}

    zh = TokenizerZh()
    tokenizer = SimpleNamespace(tokenize=lambda text: zh(text.rstrip()).split())
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=tokenizer)
    m = n if args.rouge_subset <= 0 else min(args.rouge_subset, n)
    t0 = time.perf_counter()
    ref_rouge = [scorer.score(r, p) for p, r in zip(preds[:m], refs[:m], strict=True)]
    ref["ROUGE-1/2/L"] = (time.perf_counter() - t0) * n / m

    # A fresh tokenizer instance: sacrebleu caches per instance, and a standalone vocab-F1 script
    # would tokenize from scratch.
    zh_fresh = TokenizerZh()

    def squad_f1(p: str, r: str) -> float:
        tp, tr = zh_fresh(p.rstrip()).split(), zh_fresh(r.rstrip()).split()
        shared = sum((Counter(tp) & Counter(tr)).values())
        if not shared:
            return 0.0
        prec, rec = shared / len(tp), shared / len(tr)
        return 2 * prec * rec / (prec + rec)

    t0 = time.perf_counter()
    ref_vf1 = [squad_f1(p, r) for p, r in zip(preds, refs, strict=True)]
    ref["vocab F1"] = time.perf_counter() - t0

    # --- equality ---
    checks = {
        "BLEU corpus == sacrebleu.corpus_bleu": ours_bleu.score == ref_bleu.score,
        f"ROUGE-1/2/L P,R,F per pair == rouge-score (first {m} pairs)": all(
            getattr(result, field)[i] == 100 * getattr(ref_rouge[i][key], name)
            for key, result in ours_rouge.items()
            for field, name in (
                ("per_sample", "fmeasure"),
                ("per_sample_precision", "precision"),
                ("per_sample_recall", "recall"),
            )
            for i in range(m)
        ),
        "vocab F1 per pair == Counter-based SQuAD F1": all(
            abs(a - 100 * b) < 1e-9 for a, b in zip(ours_vf1.per_sample, ref_vf1, strict=True)
        ),
    }

    print(f"\n{'metric':<14}{'ours (s)':>10}{'reference (s)':>16}{'speed-up':>10}")
    for key in ours:
        note = " (extrapolated)" if key.startswith("ROUGE") and m < n else ""
        print(f"{key:<14}{ours[key]:>10.2f}{ref[key]:>16.2f}{ref[key] / ours[key]:>9.0f}x{note}")
    total_ours, total_ref = sum(ours.values()), sum(ref.values())
    print(f"{'total':<14}{total_ours:>10.2f}{total_ref:>16.2f}{total_ref / total_ours:>9.0f}x")
    if m < n:
        print(f"rouge-score was timed on {m} of {n} pairs and scaled by {n / m:.0f}.")
    print(
        "ours tokenizes each text once and shares n-gram counts across metrics, so BLEU's time\n"
        "includes all tokenization and vocab F1 reuses ROUGE-1's counts: compare the totals."
    )
    print(f"\nBLEU {ours_bleu.score:.4f} (sacrebleu {ref_bleu.score:.4f})")
    for key, result in ours_rouge.items():
        print(f"{key} {result.score:.4f}")
    print(f"vocab F1 {ours_vf1.score:.4f}")
    print(f"target: < 10 s for all of ours -> {'met' if total_ours < 10 else 'MISSED'}")
    for name, ok in checks.items():
        print(f"[{'OK' if ok else 'MISMATCH'}] {name}")
    from record import write_result

    figures = {
        "data": source,
        "pairs": n,
        "chars": args.chars,
        "core": core,
        "ours_s": ours,
        "reference_s": ref,
        "rouge_score_timed_pairs": m,
        "rouge_score_extrapolated": m < n,
        "total_ours_s": total_ours,
        "total_reference_s": total_ref,
        "speed_up": total_ref / total_ours,
        "scores": {
            "bleu": ours_bleu.score,
            "sacrebleu": ref_bleu.score,
            **{key: result.score for key, result in ours_rouge.items()},
            "vocab_f1": ours_vf1.score,
        },
        "checks": checks,
    }
    write_result("metrics_bench", figures, args=vars(args))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
