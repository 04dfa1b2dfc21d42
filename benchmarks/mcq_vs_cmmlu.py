"""MCQ loglik scoring, side by side: CMMLU's own loop against medsft's, same weights and questions.

    OMP_NUM_THREADS=1 python benchmarks/mcq_vs_cmmlu.py --preset tiny --per-subject 40
    OMP_NUM_THREADS=1 python benchmarks/mcq_vs_cmmlu.py --preset Qwen3-0.6B \
        --subjects anatomy --per-subject 16 --rounds 1            # a handful, on a CPU
    python benchmarks/mcq_vs_cmmlu.py --preset Qwen3-0.6B --device cuda --dtype bfloat16

`cmmlu`: CMMLU's loop, reimplemented from its `src/mp_utils.py` (`format_example`, `gen_prompt`
with the tokenizer and `max_length` 2048, `run_eval`'s pandas-read CSVs) and `src/
hf_causal_model.py`'s `eval`: per question the prompt is built and encoded, one forward pass over
it returns the logits of every position, the last position's logits of A-D give the prediction.
`medsft`: evaluate.py's path (medsft.evaluation.mcq's `load_mcq_set`, then
medsft.evaluation.mcq_loglik: each subject's 5-shot prefix once, questions batched by length, the
vocabulary projected at the answer position only), predictions the likeliest offered letter.

Both score the same questions (the first `--per-subject` of each subject, CMMLU's subject order)
with the same in-memory random `random:<preset>` model and the real Qwen3 tokenizer, in
alternating rounds after one untimed warm-up question each. The prompts are checked to be
byte-identical; the predictions are compared question by question, and the log-probabilities of
A-D (CMMLU's last-position logits through a log-softmax) too. Data: ../shared/data/cmmlu_medical
(CMMLU's medical subjects) when present, else the project's sample questions written out in
CMMLU's layout (4-option single-answer ones, 1 shot). Writes questions/s for both, the ratio and
the agreement to benchmarks/results/mcq_vs_cmmlu_<preset>_<device>.json (or --out).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from record import write_result  # noqa: E402

SHARED = ROOT.parent / "shared/data/cmmlu_medical"
CHOICES = ["A", "B", "C", "D"]


# --- CMMLU's loop (reimplemented from src/mp_utils.py and src/hf_causal_model.py) ---------------


def cmmlu_format_example(df: Any, idx: int, include_answer: bool = True) -> str:
    """CMMLU's `format_example`: `题目：` + question, `\\nA. …` per option, `\\n答案是：`."""
    prompt = "题目：" + df.iloc[idx, 0]
    k = df.shape[1] - 2
    for j in range(k):
        prompt += f"\n{CHOICES[j]}. {df.iloc[idx, j + 1]}"
    prompt += "\n答案是："
    if include_answer:
        prompt += f"{df.iloc[idx, k + 1]}\n\n"
    return prompt


def cmmlu_gen_prompt(
    dev_df: Any, name: str, prompt_end: str, shots: int, tokenizer: Any, max_length: int
) -> str:
    """CMMLU's `gen_prompt` with a tokenizer: the instruction, the shots that fit `max_length`
    (each encoded, every question), then the question."""
    prompt = f"以下是关于{name}的单项选择题，请直接给出正确答案的选项。\n\n"
    start_end = len(tokenizer.encode(prompt) + tokenizer.encode(prompt_end))
    if start_end > max_length:
        return prompt_end
    examples = []
    for i in range(shots):
        example = cmmlu_format_example(dev_df, i)
        examples.append((example, tokenizer.encode(example)))
    while examples and sum(len(e[1]) for e in examples) >= max_length - start_end:
        longest = max(len(e[1]) for e in examples)
        examples = [e for e in examples if len(e[1]) != longest]
    return prompt + "".join(e[0] for e in examples) + prompt_end


def cmmlu_loop(
    model: Any,
    tokenizer: Any,
    data: Path,
    subjects: list[str],
    per_subject: int | None,
    shots: int,
    names: dict[str, str],
    max_length: int = 2048,
) -> tuple[list[str], list[list[float]], list[str]]:
    """Predictions, A-D log-probabilities and prompts, question by question as CMMLU runs them."""
    import pandas as pd

    device = next(model.parameters()).device
    choice_ids = [tokenizer.convert_tokens_to_ids(c) for c in CHOICES]
    preds, logprobs, prompts = [], [], []
    for subject in subjects:
        dev_df = pd.read_csv(data / "dev" / f"{subject}.csv", header=0, index_col=0)
        test_df = pd.read_csv(data / "test" / f"{subject}.csv", header=0, index_col=0)
        n = test_df.shape[0] if per_subject is None else min(per_subject, test_df.shape[0])
        for i in range(n):
            prompt_end = cmmlu_format_example(test_df, i, include_answer=False)
            prompt = cmmlu_gen_prompt(
                dev_df, names.get(subject, subject), prompt_end, shots, tokenizer, max_length
            )
            inputs = tokenizer(prompt, return_tensors="pt").to(device)
            with torch.no_grad():
                last = model(**inputs).logits[:, -1, :].float()
                choice_logits = last[:, choice_ids].cpu().numpy()
                # Not in CMMLU's loop: the letters' log-probabilities, to compare with medsft's.
                logprobs.append(torch.log_softmax(last[0], -1)[choice_ids].tolist())
            preds.append(CHOICES[int(choice_logits[0].argmax())])
            prompts.append(prompt)
    return preds, logprobs, prompts


# --- medsft's path ----------------------------------------------------------------------------


def medsft_path(
    model: Any,
    tokenizer: Any,
    data: Path,
    subjects: list[str],
    per_subject: int | None,
    shots: int,
    batch_size: int,
) -> tuple[list[str], list[list[float]], list[str]]:
    """Predictions, A-D log-probabilities and prompts as evaluate.py's mcq_set computes them."""
    from medsft.evaluation.config import McqSpec
    from medsft.evaluation.mcq import load_mcq_set
    from medsft.evaluation.mcq_loglik import letter_logprobs

    spec = McqSpec(source=str(data / "test"), dev_source=str(data / "dev"), shots=shots)
    mcq = load_mcq_set(spec)
    taken: dict[str, int] = {}
    keep = []
    for i, item in enumerate(mcq.items):
        if item.subject in subjects and taken.get(item.subject, 0) < (per_subject or 10**9):
            taken[item.subject] = taken.get(item.subject, 0) + 1
            keep.append(i)
    keep.sort(key=lambda i: (subjects.index(mcq.items[i].subject), i))
    prompts = [mcq.prompts[i] for i in keep]
    rows = letter_logprobs(
        model,
        tokenizer,
        prompts,
        [mcq.prefixes[i] for i in keep],
        spec.letters,
        batch_size=batch_size,
    )
    preds = []
    for i, row in zip(keep, rows, strict=True):
        offered = {
            c: v for c, v in zip(spec.letters, row, strict=False) if c in mcq.items[i].options
        }
        preds.append(max(offered, key=offered.__getitem__))
    return preds, [row[:4] for row in rows], prompts


# --- data, rounds, figures --------------------------------------------------------------------


def sample_as_cmmlu(folder: Path) -> Path:
    """The project's sample questions in CMMLU's layout: dev/ and test/<subject>.csv, columns
    (index), Question, A-D, Answer; single-answer questions with four options only."""
    for split, name in (("test", "mcq_sample.csv"), ("dev", "mcq_dev.csv")):
        (folder / split).mkdir(parents=True, exist_ok=True)
        rows: dict[str, list[list[str]]] = {}
        with (ROOT / "data/sample" / name).open(encoding="utf-8") as f:
            for row in csv.DictReader(f):
                if len(row["Answer"]) == 1 and not row["E"]:
                    rows.setdefault(row["subject"], []).append(
                        [row["Question"], *(row[c] for c in CHOICES), row["Answer"]]
                    )
        for subject, found in rows.items():
            with (folder / split / f"{subject}.csv").open("w", encoding="utf-8", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["", "Question", *CHOICES, "Answer"])
                writer.writerows([str(i), *r] for i, r in enumerate(found))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", help="random:<preset> model shape")
    parser.add_argument("--data", type=Path, help="CMMLU-layout folder (dev/, test/)")
    parser.add_argument("--subjects", help="comma-separated (default: every test file)")
    parser.add_argument("--per-subject", type=int, help="first N questions of each subject")
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16, help="medsft's mcq_set.batch_size")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="write the results here (default: results/)")
    args = parser.parse_args()

    from medsft.evaluation.cmmlu_subjects import CMMLU_SUBJECTS
    from medsft.model.build import load_tokenizer, random_qwen3

    with tempfile.TemporaryDirectory() as tmp:
        data, shots = args.data, args.shots
        if data is None and SHARED.is_dir():
            data = SHARED
        elif data is None:  # no CMMLU here: the sample in its layout (one dev question each)
            data, shots = sample_as_cmmlu(Path(tmp)), min(args.shots, 1)
        subjects = sorted(p.stem for p in (data / "test").glob("*.csv"))
        if args.subjects:
            subjects = [s for s in subjects if s in args.subjects.split(",")]
        if not subjects:
            sys.exit(f"error: no subject of {args.subjects!r} in {data / 'test'}")
        tokenizer = load_tokenizer("qwen3")
        dtype = getattr(torch, args.dtype)
        model = random_qwen3(args.preset, seed=args.seed, dtype=dtype).to(args.device).eval()
        runs = {
            "cmmlu": lambda n=None: cmmlu_loop(
                model, tokenizer, data, subjects, n or args.per_subject, shots, CMMLU_SUBJECTS
            ),
            "medsft": lambda n=None: medsft_path(
                model, tokenizer, data, subjects, n or args.per_subject, shots, args.batch_size
            ),
        }
        for run in runs.values():
            run(1)  # warm-up: kernels, allocator, file cache
        seconds: dict[str, list[float]] = {name: [] for name in runs}
        results: dict[str, Any] = {}
        for round_ in range(args.rounds):
            for name, run in runs.items():
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                start = time.perf_counter()
                results[name] = run()
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                seconds[name].append(time.perf_counter() - start)
                n = len(results[name][0])
                print(f"round {round_ + 1} {name}: {n / seconds[name][-1]:.2f} questions/s")
    (cmmlu_preds, cmmlu_lp, cmmlu_prompts), (ours, our_lp, our_prompts) = (
        results["cmmlu"],
        results["medsft"],
    )
    n = len(cmmlu_preds)
    assert len(ours) == n, (len(ours), n)
    per_s = {name: n / statistics.median(s) for name, s in seconds.items()}
    figures = {
        "data": str(data) if data == args.data or data == SHARED else "data/sample (as CMMLU)",
        "subjects": subjects,
        "questions": n,
        "shots": shots,
        "mean_prompt_tokens": round(
            statistics.mean(len(tokenizer(p)["input_ids"]) for p in cmmlu_prompts), 1
        ),
        "device": args.device,
        "dtype": args.dtype,
        "rounds": args.rounds,
        "seconds": {name: [round(x, 2) for x in s] for name, s in seconds.items()},
        "questions_per_second": {name: round(v, 3) for name, v in per_s.items()},
        "ratio_medsft_over_cmmlu": round(per_s["medsft"] / per_s["cmmlu"], 2),
        "prompts_identical": sum(a == b for a, b in zip(cmmlu_prompts, our_prompts, strict=True)),
        "predictions_agree": sum(a == b for a, b in zip(cmmlu_preds, ours, strict=True)),
        "max_abs_logprob_difference": max(
            abs(a - b)
            for r, q in zip(cmmlu_lp, our_lp, strict=True)
            for a, b in zip(r, q, strict=True)
        ),
    }
    print(figures)
    device = "cuda" if args.device.startswith("cuda") else "cpu"
    write_result(f"mcq_vs_cmmlu_{args.preset}_{device}", figures, args=vars(args), out=args.out)


if __name__ == "__main__":
    main()
