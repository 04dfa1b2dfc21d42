"""Multiple-choice `loglik` scoring: its speed on CMMLU's medical subjects, and its agreement with
log-probabilities computed by hand with plain transformers.

    python benchmarks/mcq_bench.py                        # ../shared/data/cmmlu_medical, 5-shot
    python benchmarks/mcq_bench.py --source data/sample/mcq_sample.csv --dev data/sample/mcq_dev.csv --shots 1

A tiny random Qwen3 (`random:tiny`, saved and reloaded like any model) scores every question as
evaluate.py's `mcq_set` does (medsft.evaluation.mcq_loglik: each subject's prefix once, questions
batched after it); accuracy is then near chance, which is the point of a random model. The first `--check` questions are scored
again independently: the prompt appended with each letter, a full forward pass of
`AutoModelForCausalLM`, the log-softmax at the letter's position.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from record import write_result

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=str(ROOT.parent / "shared/data/cmmlu_medical/test"))
    parser.add_argument("--dev", default=str(ROOT.parent / "shared/data/cmmlu_medical/dev"))
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--check", type=int, default=40, help="questions checked by hand")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from medsft.evaluation.config import McqSpec
    from medsft.evaluation.mcq import (
        load_mcq,
        mcq_prefix,
        question_block,
        shots_for,
        subject_names,
    )
    from medsft.evaluation.mcq_loglik import letter_logprobs
    from medsft.model.build import load_tokenizer, random_qwen3

    torch.set_num_threads(1)
    spec = McqSpec(source=args.source, dev_source=args.dev, shots=args.shots, limit=args.limit)
    items = load_mcq(spec)
    dev = load_mcq(spec, dev=True) if args.shots else []
    shots = shots_for(items, dev, args.shots)
    names = subject_names(spec, items)[0]  # CMMLU's Chinese names, as evaluate.py prompts
    prefixes = [mcq_prefix(it, s, names) for it, s in zip(items, shots, strict=True)]
    prompts = [p + question_block(it) for p, it in zip(prefixes, items, strict=True)]
    with tempfile.TemporaryDirectory() as tmp:
        random_qwen3("tiny", seed=0).save_pretrained(tmp)
        load_tokenizer("qwen3").save_pretrained(tmp)
        tokenizer = AutoTokenizer.from_pretrained(tmp)
        model = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32).eval()

    started = time.perf_counter()
    letters = "ABCDE"
    values = letter_logprobs(
        model, tokenizer, prompts, prefixes, letters, batch_size=args.batch_size
    )
    seconds = time.perf_counter() - started
    scored = [
        {c: v for c, v in zip(letters, row, strict=True) if c in it.options}
        for row, it in zip(values, items, strict=True)
    ]
    correct = sum(max(s, key=s.get) == it.answer for s, it in zip(scored, items, strict=True))
    tokens = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]

    diffs, agree = [], 0
    for s, prompt in zip(scored[: args.check], prompts[: args.check], strict=True):
        by_hand = {}
        for letter in s:
            ids = tokenizer(prompt + letter, add_special_tokens=False, return_tensors="pt")
            with torch.no_grad():
                logits = model(**ids).logits[0]
            by_hand[letter] = torch.log_softmax(logits[-2], -1)[ids.input_ids[0, -1]].item()
        diffs += [abs(s[c] - by_hand[c]) for c in s]
        agree += max(s, key=s.get) == max(by_hand, key=by_hand.get)
    result = {
        "source": args.source,
        "shots": args.shots,
        "questions": len(items),
        "mean_prompt_tokens": round(sum(tokens) / len(tokens), 1),
        "seconds": round(seconds, 2),
        "questions_per_second": round(len(items) / seconds, 2),
        "accuracy": round(100 * correct / len(items), 2),
        "checked_questions": min(args.check, len(items)),
        "checked_letters": len(diffs),
        "max_abs_logprob_difference": max(diffs),
        "same_prediction": agree,
    }
    print(result)
    write_result("mcq_loglik_tiny_cpu", result, args=vars(args))


if __name__ == "__main__":
    main()
