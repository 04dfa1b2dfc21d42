"""Multiple-choice benchmarks (CMMLU, CMB, CMExam, ...): accuracy per system, method and subject.

Two methods (`mcq_set.methods`):

- `loglik`: the prompt (CMMLU's official format, zero- or k-shot from a dev split) ends with
  `答案是：`; the next-token log-probability of each option letter is computed, and the likeliest
  letter is the prediction. No chat template: the way CMMLU's and lm-evaluation-harness's scripts
  score base and fine-tuned models alike. Each subject's instruction and solved examples run once
  and its questions in batches after them (medsft.evaluation.mcq_loglik: the same numbers as one
  forward pass per prompt), shared out over the ranks with several devices.
- `generate`: the zero-shot prompt as a user message through the chat template, the answer
  generated with the `generation` settings (cached like the test set's answers) and its letters
  extracted (`extract_letters`); answers with no letter are counted as unparseable (and wrong).

A question is right when the predicted letter set equals the answer's (`ABD` needs all three, and
no other). Accuracy gets a bootstrap interval, per subject too, and every pair of (system, method)
a paired bootstrap test on the same questions.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from medsft.cache import JsonlStore, digest
from medsft.data import InvalidExample, Row, read_rows
from medsft.data.sources import check_local_source
from medsft.errors import InputError
from medsft.evaluation.cmmlu_subjects import CMMLU_SUBJECTS
from medsft.evaluation.config import EvalConfig, McqSpec, SystemSpec
from medsft.evaluation.models import SharedModel
from medsft.evaluation.testset import Example
from medsft.ranks import process_group_rank as world

log = logging.getLogger(__name__)

HEADER = "以下是关于{subject}的{kind}选择题，请直接给出正确答案的选项。\n\n"
"""CMMLU's instruction (单项 / 多项: the question type is stated, as CMB's prompts do)."""
ANSWER_CUE = "答案是："
DEFAULT_COLUMNS = {"question": "Question", "answer": "Answer", "subject": "subject", "id": "id"}


@dataclass
class McqItem:
    """One multiple-choice question."""

    index: int
    where: str
    question: str
    options: dict[str, str]
    """Letter -> option text, in letter order."""
    answer: str
    """The right letters, sorted (`B`, or `ABD` for a multi-answer question)."""
    subject: str


def load_mcq(spec: McqSpec, *, dev: bool = False) -> list[McqItem]:
    """The questions of `spec.source` (or of its `dev_source` when `dev`), validated."""
    source = spec.dev_source if dev else spec.source
    what = "mcq_set.dev_source" if dev else "mcq_set.source"
    assert source is not None
    check_local_source(source, what)
    columns = {**DEFAULT_COLUMNS, **{c: c for c in spec.letters}, **(spec.columns or {})}
    unknown = set(columns) - set(DEFAULT_COLUMNS) - set(spec.letters)
    if unknown:
        raise InputError(
            f"mcq_set.columns: unknown roles {sorted(unknown)}; roles are question, answer, "
            f"subject, id and the letters {spec.letters}"
        )
    split = spec.dev_split if dev else spec.split
    items: list[McqItem] = []
    for row in read_rows(source, split=split, subset=spec.subset):
        if spec.limit is not None and not dev and len(items) == spec.limit:
            break
        items.append(_item(row, columns, spec, len(items), what))
    if not items:
        raise InputError(f"{what}: no rows in {source!r}")
    return items


def _item(row: Row, columns: dict[str, str], spec: McqSpec, index: int, what: str) -> McqItem:
    data = row.data
    if isinstance(data, InvalidExample):
        raise InputError(f"{what}: {data}")
    if not isinstance(data, dict):
        raise InputError(f"{what}: {row.where}: expected an object, got {type(data).__name__}")

    def text(role: str) -> str:
        # Kept as written: CMMLU's own prompt keeps a cell's spaces (`A. 1/16 \n`).
        value = data.get(columns[role])
        return str(value) if value is not None else ""

    question = text("question")
    options = {letter: text(letter) for letter in spec.letters if text(letter).strip()}
    answer = "".join(sorted(set(re.sub(r"[\s,，、]", "", text("answer")).upper())))
    problem = None
    if not question.strip():
        problem = f"no question in column {columns['question']!r}"
    elif len(options) < 2:
        problem = f"fewer than two options in columns {[columns[c] for c in spec.letters]}"
    elif not answer or any(a not in options for a in answer):
        problem = (
            f"answer {text('answer')!r} in column {columns['answer']!r} is not among the "
            f"options {''.join(options)}"
        )
    if problem:
        raise InputError(f"{what}: {row.where}: {problem}; map the columns with mcq_set.columns")
    subject = text("subject").strip() or _file_subject(row.where, spec)
    return McqItem(index, row.where, question, options, answer, subject)


def _file_subject(where: str, spec: McqSpec) -> str:
    """CMMLU ships one CSV per subject: the file's name is the subject."""
    path = where.rsplit(":", 1)[0]
    if path.endswith((".csv", ".jsonl", ".json", ".parquet")):
        return Path(path).stem
    return spec.subset or "all"


def subject_names(spec: McqSpec, items: list[McqItem]) -> tuple[dict[str, str], str]:
    """Subject -> its name in the prompt, and where the names come from (for the report).

    CMMLU's files (every subject one of its 67) get CMMLU's own Chinese names, as its `gen_prompt`
    writes them; `mcq_set.subject_names` adds to or overrides them. Other subjects stay as they are.
    """
    given = spec.subject_names or {}
    if {it.subject for it in items} <= CMMLU_SUBJECTS.keys():
        return {**CMMLU_SUBJECTS, **given}, "CMMLU" + (" + mcq_set.subject_names" if given else "")
    return dict(given), "mcq_set.subject_names" if given else "as in the data"


def question_block(item: McqItem) -> str:
    """`题目：…` with the options, ending with the answer cue."""
    options = "".join(f"\n{letter}. {text}" for letter, text in item.options.items())
    return f"题目：{item.question}{options}\n{ANSWER_CUE}"


def mcq_prefix(item: McqItem, shots: list[McqItem], names: dict[str, str] | None = None) -> str:
    """The part of `item`'s prompt before its question: the instruction and the solved examples
    (`…答案是：B\n\n`), the same for every question of a subject and kind.

    `names` maps a subject to its name in the instruction (else the subject as is)."""
    kind = "多项" if len(item.answer) > 1 else "单项"
    subject = (names or {}).get(item.subject, item.subject)
    solved = "".join(f"{question_block(s)}{s.answer}\n\n" for s in shots)
    return HEADER.format(subject=subject, kind=kind) + solved


def mcq_prompt(item: McqItem, shots: list[McqItem], names: dict[str, str] | None = None) -> str:
    """CMMLU's prompt: the instruction, solved examples (`…答案是：B`), then the question.

    `names` maps a subject to its name in the instruction (else the subject as is)."""
    return mcq_prefix(item, shots, names) + question_block(item)


def shots_for(items: list[McqItem], dev: list[McqItem], k: int) -> list[list[McqItem]]:
    """The first `k` dev questions of each item's subject (fewer if the subject has fewer)."""
    by_subject: dict[str, list[McqItem]] = defaultdict(list)
    for d in dev:
        by_subject[d.subject].append(d)
    missing = sorted({it.subject for it in items} - set(by_subject)) if k else []
    if missing:
        raise InputError(
            f"mcq_set.dev_source has no questions of subject(s) {', '.join(missing)}; name "
            "dev files like the test files (CMMLU: dev/<subject>.csv) or set mcq_set.shots: 0"
        )
    return [by_subject[it.subject][:k] if k else [] for it in items]


_CUES = [
    r"答案(?:应该|应当)?(?:是|为|选)?\s*[：:]?\s*([A-Z](?:\s*[、,，和及与]?\s*[A-Z])*)",
    r"(?:answer|Answer|ANSWER)(?: is)?\s*[：:]?\s*\(?([A-Z](?:\s*[,、]?\s*[A-Z])*)",
    r"选(?:择)?(?:项)?\s*[：:]?\s*([A-Z](?:\s*[、,，和及与]?\s*[A-Z])*)",
    r"^\s*[(（]?([A-Z]{1,5})[)）]?(?:[\s.。．、:：]|$)",
]


def extract_letters(answer: str, options: str) -> str | None:
    """The option letters a generated answer chooses (sorted), or None when it names none.

    Looks for `答案是 B` / `答案：A、D` / `answer is C` / `选B` / a leading `B.`; failing those, a
    short reply naming exactly one letter set on its own (`B`, `（C）`).
    """
    for pattern in _CUES:
        if match := re.search(pattern, answer):
            found = {c for c in match.group(1) if c in options}
            if found:
                return "".join(sorted(found))
    # A letter beside a word or a Han character is part of it (A型血, B超, HbA1c), not a choice.
    alone = set(
        re.findall(r"(?<![A-Za-z0-9\u4e00-\u9fff])([A-Z])(?![A-Za-z0-9\u4e00-\u9fff])", answer)
    )
    if alone and alone <= set(options) and len(answer.strip()) <= 20:
        return "".join(sorted(alone))
    return None


@dataclass
class McqRun:
    """One (system, method)'s predictions."""

    system: str
    method: str
    predictions: list[str | None]
    """Letters chosen (None: unparseable)."""
    raw: list[Any]
    """Per question: the letters' log-probabilities (loglik) or the generated answer."""


@dataclass
class McqSet:
    """The benchmark's questions and prompts, read once and asked of every system."""

    items: list[McqItem]
    prompts: list[str]
    """The loglik prompts (k-shot when `shots`)."""
    prefixes: list[str]
    """Each prompt's beginning shared with its subject's other questions (`mcq_prefix`)."""
    names: dict[str, str]
    """Subject -> its name in the prompt (see `subject_names`)."""
    naming: str
    """Where the names come from."""


def load_mcq_set(spec: McqSpec) -> McqSet:
    """The questions of `spec`, their shots and prompts."""
    items = load_mcq(spec)
    dev = load_mcq(spec, dev=True) if spec.shots else []
    shots = shots_for(items, dev, spec.shots)
    names, naming = subject_names(spec, items)
    log.info("mcq_set: %d questions from %s; subject names: %s", len(items), spec.source, naming)
    prefixes = [mcq_prefix(it, s, names) for it, s in zip(items, shots, strict=True)]
    prompts = [p + question_block(it) for p, it in zip(prefixes, items, strict=True)]
    return McqSet(items, prompts, prefixes, names, naming)


def mcq_runs(
    system: SystemSpec,
    kind: str,
    model: SharedModel | None,
    mcq: McqSet,
    config: EvalConfig,
    out_dir: Path,
) -> list[McqRun]:
    """One system's predictions on the benchmark by every method (cached).

    `model` is the system's weights, shared with its test-set answers (None for an endpoint)."""
    spec = config.mcq_set
    assert spec is not None
    if kind == "answers":
        log.info("mcq_set: skipping %s (answers files answer the test set only)", system.name)
        return []
    runs = []
    if "loglik" in spec.methods:
        assert model is not None  # validate_config refuses loglik for endpoint systems
        runs.append(_loglik_run(model, mcq, spec, config, out_dir))
    if "generate" in spec.methods:
        runs.append(_generate_run(system, model, mcq, config, out_dir))
    return runs


def _loglik_run(
    model: SharedModel, mcq: McqSet, spec: McqSpec, config: EvalConfig, out_dir: Path
) -> McqRun:
    """Every rank scores its share of the questions not cached yet (medsft.evaluation.mcq_loglik);
    rank 0 saves them all. Every rank calls this for every system (with one process: rank 0)."""
    from medsft.evaluation.mcq_loglik import letter_logprobs
    from medsft.evaluation.models import CACHE_VERSION, _scoring_device
    from medsft.evaluation.systems import model_fingerprint

    src, name, letters = model.src, model.src.spec.name, spec.letters
    model_key = {"v": CACHE_VERSION, "weights": model_fingerprint(src.weights), "dtype": src.dtype}
    keys = [digest([model_key, "mcq-loglik", p, letters]) for p in mcq.prompts]
    store = JsonlStore(out_dir / "generations" / f"{name}.mcq.jsonl", "mcq log-probabilities")
    rank, size = world()
    todo = _rank_zero_says([i for i, k in enumerate(keys) if not (config.reuse and k in store)])
    log.info("%s: mcq_set (loglik): scoring %d of %d questions", name, len(todo), len(keys))
    scored: dict[int, list[float]] = {}

    def save(indices: list[int], values: list[list[float]]) -> None:
        for i, v in zip(indices, values, strict=True):
            scored[i] = v
            if rank == 0:  # as they come: an interrupted run keeps what it scored
                store.put({"key": keys[i], "index": i, "logprobs": v})

    if todo:
        mine = todo[rank::size]
        loaded = model.get().to(_scoring_device(config.runtime.accelerator)).eval()
        letter_logprobs(
            loaded,
            src.tokenizer,
            [mcq.prompts[i] for i in mine],
            [mcq.prefixes[i] for i in mine],
            letters,
            batch_size=spec.batch_size,
            on_batch=lambda at, values: save([mine[j] for j in at], values),
            progress=config.runtime.progress and rank == 0,
        )
    if todo and size > 1:
        import torch.distributed as dist

        parts: list[Any] = [None] * size
        dist.all_gather_object(parts, scored)
        for part_rank, part in enumerate(parts):
            if part_rank != rank:
                save(list(part), list(part.values()))
    store.close()
    raw, predictions = [], []
    for i, (item, key) in enumerate(zip(mcq.items, keys, strict=True)):
        values = scored[i] if i in scored else store.get(key)["logprobs"]
        logprobs = dict(zip(letters, values, strict=True))
        offered = {c: v for c, v in logprobs.items() if c in item.options}
        raw.append(offered)
        predictions.append(max(offered, key=offered.__getitem__))
    return McqRun(name, "loglik", predictions, raw)


def _rank_zero_says(todo: list[int]) -> list[int]:
    """Rank 0's list on every rank: the others may read the cache before or after rank 0 has
    begun appending to it (or see a stale copy on a shared file system)."""
    if world()[1] == 1:
        return todo
    import torch.distributed as dist

    box = [todo]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _generate_run(
    spec: SystemSpec, model: SharedModel | None, mcq: McqSet, config: EvalConfig, out_dir: Path
) -> McqRun:
    from medsft.evaluation.endpoints import endpoint_system
    from medsft.evaluation.models import model_system

    items = mcq.items
    examples = [
        Example(
            it.index,
            it.where,
            [{"role": "user", "content": mcq_prompt(it, [], mcq.names)}],
            it.question,
            it.answer,
            None,
        )
        for it in items
    ]
    # Cached like the test set's answers, in a folder of their own; no reference perplexity.
    settings = replace(config, scoring=replace(config.scoring, perplexity=False))
    what = "mcq_set (generate)"
    if model is None:
        output = endpoint_system(spec, examples, settings, out_dir / "mcq", what=what)
    else:
        output = model_system(model, examples, None, settings, out_dir / "mcq", what=what)
    answers = output.answers if output is not None else [""] * len(items)
    predictions = [
        extract_letters(a, "".join(it.options)) for a, it in zip(answers, items, strict=True)
    ]
    return McqRun(spec.name, "generate", predictions, answers)


def mcq_report(mcq: McqSet, runs: list[McqRun], config: EvalConfig) -> dict[str, Any]:
    """report.json's `mcq`: accuracy (95% interval), per subject, unparseable, paired tests."""
    from medsft.metrics.stats import bootstrap_interval, mean_statistic, paired_bootstrap

    spec, scoring, items = config.mcq_set, config.scoring, mcq.items
    assert spec is not None
    n_resamples = max(scoring.n_resamples, 1)

    def accuracy(correct: list[float]) -> dict[str, Any]:
        entry: dict[str, Any] = {"n": len(correct), "score": 100 * sum(correct) / len(correct)}
        if scoring.n_resamples > 0:
            ci = bootstrap_interval(
                len(correct), mean_statistic(correct), n_resamples=n_resamples, seed=scoring.seed
            )
            entry.update(low=100 * ci.low, high=100 * ci.high, level=ci.level)
        return entry

    subjects = sorted({it.subject for it in items})
    results, correct_of = {}, {}
    for run in runs:
        name = f"{run.system}/{run.method}"
        correct = [float(p == it.answer) for p, it in zip(run.predictions, items, strict=True)]
        correct_of[name] = correct
        by_subject = {
            s: accuracy([c for c, it in zip(correct, items, strict=True) if it.subject == s])
            for s in subjects
        }
        results[name] = {
            "system": run.system,
            "method": run.method,
            "accuracy": accuracy(correct),
            "unparseable": sum(p is None for p in run.predictions),
            "subjects": by_subject,
            "predictions": run.predictions,
            "raw": run.raw,
        }
    paired = []
    names = list(results)
    if scoring.paired and scoring.n_resamples > 0:
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                test = paired_bootstrap(
                    len(items),
                    mean_statistic(correct_of[a]),
                    mean_statistic(correct_of[b]),
                    n_resamples=n_resamples,
                    seed=scoring.seed,
                )
                paired.append(
                    {
                        "a": a,
                        "b": b,
                        "metric": "accuracy",
                        "delta": 100 * test.delta,
                        "p_value": test.p_value,
                    }
                )
    counts = defaultdict(int)
    for it in items:
        counts[it.subject] += 1
    return {
        "source": spec.source,
        "n": len(items),
        "shots": spec.shots,
        "methods": list(spec.methods),
        "multi_answer": sum(len(it.answer) > 1 for it in items),
        "chance": 100 * sum(map(_chance, items)) / len(items),
        "subjects": dict(sorted(counts.items())),
        "subject_names": mcq.naming,
        "prompt_example": mcq.prompts[0],
        "chat_prompt_example": mcq_prompt(items[0], [], mcq.names),
        "answers": [it.answer for it in items],
        "results": results,
        "paired": paired,
    }


def _chance(item: McqItem) -> float:
    """A uniform guess's accuracy: among the options, or among their non-empty subsets when the
    question has several answers."""
    n = len(item.options)
    return 1 / n if len(item.answer) == 1 else 1 / (2**n - 1)
