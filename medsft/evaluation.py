"""Generate, score and compare systems on a test set, and write a report (see evaluate.py).

A *system* is a base model (hub id, local directory or `random:` preset), a training run (its
adapter or full model; `logs/demo/latest` or a glob picks the newest run), a merged export, or a
file of ready answers (e.g. a GPT baseline). Model systems answer the test questions through
medsft.generate; every system is scored against the references with medsft.metrics (bootstrap
intervals, paired tests), model systems get the perplexity of the references, and an LLM judge
compares each system with the baseline system in both answer orders.

Everything slow is cached in the output directory, so scoring and judging rerun for free:

- `generations/<system>.jsonl`: one line per question, keyed by a hash of the model (weights
  fingerprint: a hub model's commit as loaded, or local file digests; the dtype it loads in),
  the generation settings and the exact prompt tokens. A changed model, config or question
  regenerates just what changed. A sampled answer is seeded from its own key, so it does not
  depend on which other answers were generated with it or reused.
- `generations/<system>.ppl.json`: perplexities, keyed the same way.
- `judge_cache.jsonl`: judge replies (medsft.metrics.judge).

Outputs: `report.json`, `report.md`, `metrics.png`, `training_<system>.png` for runs (curves from
their TensorBoard logs), `judge_<system>.json` (per-pair verdicts) and `config.yaml`.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import math
import os
import re
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from medsft.chat import Message, qa_messages
from medsft.data import InvalidExample, column_map, is_local, read_rows, to_messages
from medsft.generate import GenerationSettings, encode_prompt, prompt_seed, split_think
from medsft.model import (
    RANDOM_PREFIX,
    DType,
    ensure_hub_reachable,
    is_hub_id,
    resolve_dtype,
    resolve_trained,
)

log = logging.getLogger(__name__)

Preset = Literal["huatuo", "course", "alpaca", "messages", "reasoning", "medquad"]
Kind = Literal["auto", "model", "run", "answers"]
EMPTY_ANSWER = "(no answer)"
"""What the judge is shown for an empty answer (it refuses empty texts)."""
_CACHE_VERSION = 1
_HASH_LIMIT = 256 * 2**20  # files up to this size are hashed by content, larger ones by stat


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------
@dataclass
class DataSpec:
    """A question set, read with the same column mapping as training (medsft.data)."""

    source: str = "data/sample/test_zh_med.json"
    """Local file, directory or glob (JSON, JSONL, Parquet, CSV), or a hub dataset id."""
    preset: Preset = "course"
    """Column preset: course ([question, reference] lists), huatuo, reasoning, alpaca, ..."""
    columns: dict[str, str] | None = None
    """Role -> column overrides (question, answer, think, system, messages, input, id)."""
    split: str = "test"
    """Hub split to read."""
    subset: str | None = None
    """Hub dataset configuration name."""
    system_prompt: str | None = None
    """System message for rows without one (use the one the model was trained with)."""
    limit: int | None = None
    """Use only the first `limit` rows."""


@dataclass
class SystemSpec:
    """One system to evaluate."""

    name: str
    """Label in the report; also the file name of its generations (letters, digits, -_.)."""
    path: str
    """Hub id, local model dir, `random:<preset>`, a training run dir (`logs/demo/version_0`,
    `logs/demo/latest`, `logs/demo/version_*`: the newest), an adapter or merged export, or an
    answers file (JSONL/JSON/CSV/Parquet)."""
    kind: Kind = "auto"
    """`model` (base model), `run` (trained adapter/model), `answers` (file), or `auto`."""
    dtype: DType = "auto"
    """Weight dtype of a model system; `auto` = bf16 on a capable GPU, else fp32."""
    tokenizer: str | None = None
    """Tokenizer of a `model` system if not the model's own (`qwen3` = bundled)."""
    question_column: str | None = "question"
    """Answers file: column holding the question, to align rows with the test set; null aligns
    by row order."""
    answer_column: str = "answer"
    """Answers file: column holding the answer."""
    think_column: str | None = None
    """Answers file: column holding reasoning, if any."""


@dataclass
class ScoringSettings:
    """Text metrics, intervals and perplexity."""

    tokenizer: str = "auto"
    """Metric tokenizer: auto (zh if the references have Han characters, else 13a), zh, char,
    jieba or 13a. Fixed once for all systems so their scores are comparable."""
    bleu_orders: list[int] = field(default_factory=lambda: [1, 2, 4])
    """Cumulative BLEU-n for each n."""
    rouge_types: list[str] = field(default_factory=lambda: ["rouge1", "rouge2", "rougeL"])
    """ROUGE variants."""
    vocab_f1_mode: Literal["multiset", "set"] = "multiset"
    """Vocabulary F1 overlap: multiset (SQuAD-style) or set."""
    distinct_orders: list[int] = field(default_factory=lambda: [1, 2])
    """Distinct-n for each n."""
    n_resamples: int = 1000
    """Bootstrap resamples for the 95% intervals and paired tests (0 = no intervals)."""
    seed: int = 0
    """Bootstrap seed."""
    paired: bool = True
    """Paired bootstrap test of every pair of systems on BLEU, ROUGE and vocab-F1."""
    perplexity: bool = True
    """Perplexity of each model system on the references (and on val_set)."""
    ppl_batch_size: int = 4
    """Examples per forward pass for perplexity."""
    ppl_max_length: int = 2048
    """Truncate rendered reference conversations to this many tokens."""
    examples: int = 3
    """Questions shown side by side in report.md."""


@dataclass
class JudgeSettings:
    """LLM-as-a-judge of each system against the baseline (medsft.metrics.judge)."""

    enabled: bool | None = None
    """null: judge when an endpoint is configured (base_url set, or the key's environment
    variable set); true: require it; false: never."""
    model: str = "gpt-4o-mini"
    """Judge model name, as the endpoint knows it."""
    base_url: str | None = None
    """OpenAI-compatible endpoint (vLLM, Ollama, a proxy); null = OpenAI."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key (never put the key in a config)."""
    concurrency: int = 8
    """Requests in flight at once."""
    rubric: bool = True
    """Include the packaged medical rubric in the prompt."""
    temperature: float | None = 0.0
    """Judge temperature; null leaves it to the endpoint."""
    max_tokens: int | None = None
    """Judge reply length cap."""
    timeout: float = 60.0
    """Seconds per request."""
    max_retries: int = 5
    """Retries per request on rate limits, 5xx and timeouts."""
    cache: bool = True
    """Reuse judge replies from `<output_dir>/judge_cache.jsonl`."""


@dataclass
class RuntimeSettings:
    """Where generation runs (Lightning Trainer arguments)."""

    accelerator: str = "auto"
    """`auto`, `cpu` or `gpu`."""
    devices: int | str = 1
    """Devices for data-parallel generation (`auto` = all GPUs; several use the ddp strategy)."""
    strategy: str = "auto"
    """Lightning strategy; `auto` = ddp for several devices."""
    progress: bool = True
    """Show progress bars."""


@dataclass
class EvalConfig:
    """Everything evaluate.py reads from its config and command line."""

    systems: list[SystemSpec] = field(default_factory=list)
    """Systems to evaluate and compare (see SystemSpec)."""
    test_set: DataSpec = field(default_factory=DataSpec)
    """Questions with reference answers."""
    val_set: DataSpec | None = None
    """Optional extra set for the perplexity of each model system (e.g. the training's val data)."""
    baseline: str | None = None
    """Name of the system the judge compares every other system with (e.g. a GPT baseline)."""
    output_dir: str = "outputs/eval"
    """Report, plots and caches go here."""
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    """Decoding settings for model systems."""
    scoring: ScoringSettings = field(default_factory=ScoringSettings)
    """Metrics and perplexity."""
    judge: JudgeSettings = field(default_factory=JudgeSettings)
    """LLM judge."""
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)
    """Devices."""
    reuse: bool = True
    """Reuse saved generations and perplexities whose keys still match (false: redo them)."""


# --------------------------------------------------------------------------------------------
# Test set
# --------------------------------------------------------------------------------------------
@dataclass
class Example:
    """One test question."""

    index: int
    where: str
    """File and line (or hub row), for messages."""
    prompt: list[Message]
    """The conversation up to the answer to generate (system, history, question)."""
    question: str
    """The last user message."""
    reference: str
    """The reference answer, without any think block."""
    reference_think: str | None

    @property
    def conversation(self) -> list[Message]:
        """Prompt plus the reference answer (think block as in training), for perplexity."""
        # qa_messages formats the answer turn; the prompt keeps any system message and history.
        answer = qa_messages(self.question, self.reference, think=self.reference_think)[-1]
        return [*self.prompt, answer]


def load_examples(spec: DataSpec, *, what: str = "test_set") -> list[Example]:
    """Read a test set: question = the last user message, reference = the last assistant one.

    Raises ValueError naming the file and line of a row without a question or reference.
    """
    if spec.limit is not None and spec.limit < 1:
        raise ValueError(f"{what}.limit must be >= 1 or null, got {spec.limit}")
    if (
        is_local(spec.source)
        and not glob.has_magic(spec.source)
        and not os.path.exists(spec.source)
    ):
        raise FileNotFoundError(f"{what}.source {spec.source!r} does not exist")
    columns = column_map(spec.preset, spec.columns)
    examples = []
    for row in read_rows(spec.source, split=spec.split, subset=spec.subset):
        if spec.limit is not None and len(examples) == spec.limit:
            break
        try:
            messages, _ = to_messages(row, columns, spec.system_prompt)
        except InvalidExample as err:
            raise ValueError(
                f"{what}: {err}. Every row needs a question and a reference answer; fix the row "
                f"or map the right columns with {what}.preset / {what}.columns"
            ) from None
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        prompt = messages[:last]
        users = [m for m in prompt if m["role"] == "user"]
        if not users:
            raise ValueError(f"{what}: {row.where}: no user message before the reference answer")
        think, reference = split_think(messages[last]["content"])
        examples.append(
            Example(len(examples), row.where, prompt, users[-1]["content"], reference, think)
        )
    if not examples:
        raise ValueError(f"{what}: no rows in {spec.source!r}")
    return examples


# --------------------------------------------------------------------------------------------
# Systems
# --------------------------------------------------------------------------------------------
def resolve_run_dir(path: str) -> Path:
    """A run directory; `<dir>/latest` or a glob picks the newest run that holds a model.

    Newest = most recently saved adapter/model (then the highest version number).
    """
    p = Path(path)
    if glob.has_magic(path):
        pattern = path
    elif p.name == "latest" and not p.exists():
        pattern = str(p.parent / "version_*")
    else:
        if not p.exists():
            raise FileNotFoundError(
                f"{path} does not exist; give a training run dir (logs/<name>/version_N), "
                "logs/<name>/latest for the newest, an adapter dir or a merged export"
            )
        return p
    found = []
    for candidate in glob.glob(pattern):
        try:
            model_dir = resolve_trained(candidate)
        except FileNotFoundError:
            continue  # a run still training, or one that failed before saving
        version = re.search(r"(\d+)$", Path(candidate).name)
        found.append((model_dir.stat().st_mtime_ns, int(version[1]) if version else -1, candidate))
    if not found:
        raise FileNotFoundError(
            f"no finished training run matches {pattern!r} (none holds adapter/ or model/); "
            "train first, e.g. python train.py --config configs/demo.yaml"
        )
    return Path(max(found)[2])


def infer_kind(spec: SystemSpec) -> Kind:
    """What a system path is, when `kind: auto`."""
    if spec.kind != "auto":
        return spec.kind
    path = spec.path
    if path.startswith(RANDOM_PREFIX):
        return "model"
    if path.endswith((".jsonl", ".json", ".csv", ".parquet")):
        return "answers"
    if glob.has_magic(path) or Path(path).name == "latest":
        return "run"
    p = Path(path)
    if p.is_dir():
        if (p / "config.json").exists() and not (p / "adapter_config.json").exists():
            return "model"
        return "run"
    return "model"  # a hub id


def _file_digest(path: Path) -> str:
    stat = path.stat()
    if stat.st_size > _HASH_LIMIT:
        # Hashing gigabytes of weights on every run costs more than regenerating small sets.
        return f"stat:{stat.st_size}:{stat.st_mtime_ns}"
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(2**20), b""):
            h.update(chunk)
    return h.hexdigest()


def _dir_fingerprint(path: Path) -> dict[str, str]:
    skip = {"tokenizer.json", "vocab.json", "merges.txt", "README.md"}
    return {
        str(f.relative_to(path)): _file_digest(f)
        for f in sorted(path.rglob("*"))
        if f.is_file() and f.name not in skip
    }


def model_fingerprint(name_or_path: str) -> dict[str, Any]:
    """What identifies a model's weights: a preset name, a hub commit, or local file digests."""
    if name_or_path.startswith(RANDOM_PREFIX):
        return {"model": name_or_path}  # seeded: rebuilt identically
    path = Path(name_or_path)
    if path.is_dir():
        out: dict[str, Any] = {"files": _dir_fingerprint(path)}
        adapter = path / "adapter_config.json"
        if adapter.exists():
            base = json.loads(adapter.read_text())["base_model_name_or_path"]
            out["base"] = model_fingerprint(base)
        return out
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(name_or_path, "config.json")
    commit = Path(cached).parent.name if isinstance(cached, str) else None
    return {"model": name_or_path, "commit": commit}


def _hub_commits(fingerprint: dict[str, Any]) -> list[str | None]:
    """The hub commits a model fingerprint names (its own, its adapter's base's); None: unknown."""
    commits = [fingerprint["commit"]] if "commit" in fingerprint else []
    return commits + (_hub_commits(fingerprint["base"]) if "base" in fingerprint else [])


def _digest(value: Any) -> str:
    blob = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass
class SystemOutput:
    """A system's answers to the test set and what it cost to get them."""

    name: str
    kind: str
    source: str
    """The resolved path (e.g. the run directory that `latest` picked)."""
    answers: list[str]
    thinks: list[str | None]
    generation: dict[str, Any] = field(default_factory=dict)
    perplexity: dict[str, Any] = field(default_factory=dict)
    run_dir: Path | None = None
    model_loaded: bool = False


def _safe_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
        raise ValueError(
            f"system name {name!r} may hold only letters, digits, '-', '_' and '.' (it names files)"
        )
    return name


class _Generations:
    """`generations/<system>.jsonl`: saved replies, looked up by their key."""

    def __init__(self, path: Path):
        self.path = path
        self.rows: dict[str, dict[str, Any]] = {}
        if path.exists():
            with path.open(encoding="utf-8") as f:
                for line in f:
                    try:
                        row = json.loads(line)
                        self.rows[row["key"]] = row
                    except (ValueError, KeyError, TypeError):
                        continue  # a line cut short by an interrupted run is regenerated

    def write(self, rows: list[dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        tmp.replace(self.path)


def is_global_zero() -> bool:
    """Whether this process is rank 0 (or the only one): it writes files, logs and the report."""
    from lightning.pytorch.utilities import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def _release_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _scoring_device(runtime: RuntimeSettings) -> str:
    import torch

    # Lightning moves the model back to the CPU when predict ends; perplexity wants the GPU.
    if runtime.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "cuda"
    return "cpu"


def _perplexity_summary(result: Any, scoring: ScoringSettings) -> dict[str, Any]:
    """Token-weighted perplexity with a bootstrap interval over examples."""
    import numpy as np

    from medsft.metrics.stats import bootstrap_interval

    n = np.asarray(result.per_sample_tokens, dtype=float)
    keep = n > 0
    nll, n = np.asarray(result.per_sample_nll, dtype=float)[keep], n[keep]
    out: dict[str, Any] = {
        "score": result.score,
        "loss": result.loss,
        "n_tokens": result.n_tokens,
        "skipped": result.skipped,
        "signature": result.signature,
        "per_sample": [None if math.isnan(x) else x for x in result.per_sample],
    }
    if scoring.n_resamples > 0 and len(n) > 0:
        interval = bootstrap_interval(
            len(n),
            lambda idx: float(np.exp(nll[idx].sum() / n[idx].sum())),
            n_resamples=scoring.n_resamples,
            seed=scoring.seed,
        )
        out.update(low=interval.low, high=interval.high, level=interval.level)
        out["signature"] += f"|ci:95%-percentile-bootstrap(token-weighted)|bs:{scoring.n_resamples}"
    return out


def _model_system(
    spec: SystemSpec,
    kind: str,
    examples: list[Example],
    val_examples: list[Example] | None,
    config: EvalConfig,
    out_dir: Path,
) -> SystemOutput | None:
    """Generate (or reuse) a model system's answers and its reference perplexities."""
    from medsft.model import load_base_model, load_tokenizer, load_trained, tokenizer_source

    settings, scoring = config.generation, config.scoring
    run_dir = resolve_run_dir(spec.path) if kind == "run" else None
    if run_dir is not None:
        weights = str(resolve_trained(run_dir))
        tokenizer = load_tokenizer(tokenizer_source(weights))
        source = str(run_dir)
    else:
        weights = spec.path
        tokenizer = load_tokenizer(spec.tokenizer or spec.path)
        source = spec.path
    # The dtype the weights load in (`auto` differs between a GPU and a CPU machine).
    dtype = str(resolve_dtype(spec.dtype)).removeprefix("torch.")

    prompts = [
        encode_prompt(tokenizer, ex.prompt, enable_thinking=settings.enable_thinking)
        for ex in examples
    ]
    store = _Generations(out_dir / "generations" / f"{spec.name}.jsonl")
    meta_path = store.path.with_suffix(".meta.json")
    ppl_path = store.path.with_suffix(".ppl.json")
    ppl_cache = json.loads(ppl_path.read_text()) if config.reuse and ppl_path.exists() else {}
    ppl_sets = {"test": examples, **({"val": val_examples} if val_examples else {})}

    def lookup(fingerprint: dict[str, Any]) -> tuple:
        """Keys of the answers and perplexities of these weights, and what is not saved yet."""
        model_key = {"v": _CACHE_VERSION, "weights": fingerprint, "dtype": dtype}
        gen_key = [model_key, settings.fingerprint()]
        keys = [_digest([gen_key, p]) for p in prompts]
        # A hub model not downloaded yet has no commit: no saved answer is known to be its.
        reuse = config.reuse and None not in _hub_commits(fingerprint)
        cached = {k: store.rows[k] for k in keys if reuse and k in store.rows}
        todo = [i for i, k in enumerate(keys) if k not in cached]
        ppl_keys = {
            name: _digest([
                model_key, tokenizer.chat_template, settings.enable_thinking,
                scoring.ppl_max_length, scoring.n_resamples, scoring.seed,
                [ex.conversation for ex in exs],
            ])
            for name, exs in ppl_sets.items()
        }  # fmt: skip
        ppl_todo = [
            name for name in ppl_sets
            if scoring.perplexity
            and (not reuse or ppl_cache.get(name, {}).get("key") != ppl_keys[name])
        ]  # fmt: skip
        return keys, cached, todo, ppl_keys, ppl_todo

    fingerprint = model_fingerprint(weights)
    keys, cached, todo, ppl_keys, ppl_todo = lookup(fingerprint)

    model = None
    if todo or (ppl_todo and is_global_zero()):
        log.info("%s: loading %s", spec.name, source)
        if run_dir is not None:
            model, _ = load_trained(run_dir, dtype=spec.dtype)
        else:
            model = load_base_model(spec.path, dtype=spec.dtype).eval()
        if _hub_commits(fingerprint):
            # Identified again now that the weights are loaded: a hub model downloaded just now
            # has its commit only now, and the answers must be saved under the key that the next
            # run computes (before loading) for the same weights.
            loaded = model_fingerprint(weights)
            if loaded != fingerprint and todo:
                # Every rank loaded (todo is the same on all), so all of them re-key alike.
                fingerprint = loaded
                keys, cached, todo, ppl_keys, ppl_todo = lookup(fingerprint)
            elif loaded != fingerprint:
                # Loaded on rank 0 for perplexity only: the hub's revision moved since the
                # answers were saved. Ranks > 0 did not load, so answers are not redone here.
                log.warning(
                    "%s: the loaded weights (%s) are not those its saved answers were generated "
                    "with (%s); set reuse: false to regenerate them",
                    spec.name, _hub_commits(loaded), _hub_commits(fingerprint),
                )  # fmt: skip
                ppl_keys, ppl_todo = lookup(loaded)[3:]

    generation: dict[str, Any]
    if todo:
        from medsft.generate import generate

        log.info("%s: generating %d of %d answers", spec.name, len(todo), len(examples))
        # A sampled answer's seed comes from its own cache key (which holds settings.seed): the
        # same key gets the same answer whatever else is generated, or cached, beside it.
        seeds = [prompt_seed(settings.seed, keys[i]) for i in todo] if settings.do_sample else None
        run = generate(
            model, tokenizer, [prompts[i] for i in todo], settings,
            accelerator=config.runtime.accelerator, devices=config.runtime.devices,
            strategy=config.runtime.strategy, progress=config.runtime.progress, seeds=seeds,
        )  # fmt: skip
        for i, completion in zip(todo, run.completions, strict=True):
            cached[keys[i]] = {
                "key": keys[i],
                "question": examples[i].question,
                **{k: v for k, v in asdict(completion).items() if k != "index"},
            }
        generation = {
            "generated": len(todo),
            "reused": len(examples) - len(todo),
            "seconds": round(run.seconds, 3),
            "new_tokens": run.new_tokens,
            "tokens_per_second": round(run.tokens_per_second, 2),
            "world_size": run.world_size,
        }
        if is_global_zero():
            store.write([{"index": i, **cached[k]} for i, k in enumerate(keys)])
            meta_path.write_text(json.dumps(generation, indent=2))
    else:
        previous = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        generation = {
            "generated": 0,
            "reused": len(examples),
            "previous_run": {
                k: previous.get(k) for k in ("seconds", "new_tokens", "tokens_per_second")
            },
        }
        log.info("%s: reusing %d saved answers from %s", spec.name, len(examples), store.path)

    if not is_global_zero():
        # Other ranks only help generate; scoring and the report are rank 0's.
        del model
        _release_memory()
        return None

    rows = [cached[k] for k in keys]
    generation.update(
        finish_reasons=dict(sorted(
            {r: sum(row["finish_reason"] == r for row in rows) for r in ("stop", "length")}.items()
        )),
        mean_new_tokens=round(sum(row["new_tokens"] for row in rows) / len(rows), 1),
        file=str(store.path),
    )  # fmt: skip

    perplexity: dict[str, Any] = {}
    if scoring.perplexity:
        from medsft.metrics.likelihood import perplexity as compute_ppl

        if ppl_todo:
            model.to(_scoring_device(config.runtime))
        for name, exs in ppl_sets.items():
            if name in ppl_todo:
                conversations = [ex.conversation for ex in exs]
                result = compute_ppl(
                    model, tokenizer, conversations, batch_size=scoring.ppl_batch_size,
                    max_length=scoring.ppl_max_length, enable_thinking=settings.enable_thinking,
                    progress=config.runtime.progress,
                )  # fmt: skip
                ppl_cache[name] = {"key": ppl_keys[name], **_perplexity_summary(result, scoring)}
            perplexity[name] = {k: v for k, v in ppl_cache[name].items() if k != "key"}
        if ppl_todo:
            ppl_path.parent.mkdir(parents=True, exist_ok=True)
            ppl_path.write_text(json.dumps(ppl_cache, ensure_ascii=False, indent=1))
    model_loaded = model is not None
    del model
    _release_memory()
    return SystemOutput(
        name=spec.name,
        kind=kind,
        source=source,
        answers=[row["answer"] for row in rows],
        thinks=[row["think"] for row in rows],
        generation=generation,
        perplexity=perplexity,
        run_dir=run_dir if run_dir is not None and run_dir.is_dir() else None,
        model_loaded=model_loaded,
    )


def _answers_system(spec: SystemSpec, examples: list[Example]) -> SystemOutput:
    """Answers read from a file, aligned with the test set by question text (or by row order)."""
    path = spec.path
    if not os.path.exists(path):
        raise FileNotFoundError(f"system {spec.name!r}: answers file {path!r} does not exist")
    rows = []
    for row in read_rows(path):
        if isinstance(row.data, InvalidExample):
            raise ValueError(f"system {spec.name!r}: {row.data}")
        if not isinstance(row.data, dict):
            raise ValueError(
                f"system {spec.name!r}: {row.where}: expected an object with "
                f"{spec.answer_column!r}, got {type(row.data).__name__}"
            )
        answer = row.data.get(spec.answer_column)
        if not isinstance(answer, str):
            raise ValueError(
                f"system {spec.name!r}: {row.where}: no string {spec.answer_column!r} column; "
                "set the system's answer_column"
            )
        question = row.data.get(spec.question_column) if spec.question_column else None
        if spec.question_column and not isinstance(question, str):
            raise ValueError(
                f"system {spec.name!r}: {row.where}: no string {spec.question_column!r} column; "
                "set question_column, or question_column: null to align answers by row order"
            )
        think = row.data.get(spec.think_column) if spec.think_column else None
        rows.append((row.where, question, answer, think))

    if spec.question_column is None:
        if len(rows) < len(examples):
            raise ValueError(
                f"system {spec.name!r}: {path} has {len(rows)} answers for {len(examples)} "
                "questions (aligned by row order)"
            )
        aligned = rows[: len(examples)]
    else:
        by_question: dict[str, list] = defaultdict(list)
        for item in rows:
            by_question[item[1].strip()].append(item)
        aligned = []
        for ex in examples:
            matches = by_question.get(ex.question.strip())
            if not matches:
                raise ValueError(
                    f"system {spec.name!r}: {path} has no answer to test question {ex.index} "
                    f"({ex.where}): {ex.question[:60]!r}; answer every test question, or set "
                    "question_column: null to align by row order"
                )
            aligned.append(matches.pop(0) if len(matches) > 1 else matches[0])
    answers, thinks = [], []
    for _, _, answer, think in aligned:
        if think is None:
            think, answer = split_think(answer)
        answers.append(answer)
        thinks.append(think)
    return SystemOutput(spec.name, "answers", path, answers, thinks)


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------
def _metric_entry(result: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"score": result.score, "signature": result.signature}
    if result.interval is not None:
        entry.update(
            low=result.interval.low, high=result.interval.high, level=result.interval.level
        )
    if result.precision is not None:
        entry.update(precision=result.precision, recall=result.recall)
    entry["per_sample"] = [round(float(x), 4) for x in result.per_sample]
    return entry


def score_texts(
    predictions: Sequence[str], references: Sequence[str], scoring: ScoringSettings, tokenizer: str
) -> dict[str, dict[str, Any]]:
    """Every text metric of medsft.metrics, keyed by its name (BLEU-4, ROUGE-L, ...)."""
    from medsft.metrics import bleu, distinct, rouge, vocab_f1

    ci = dict(
        confidence=scoring.n_resamples > 0,
        n_resamples=max(scoring.n_resamples, 1),
        seed=scoring.seed,
        tokenizer=tokenizer,
    )
    results = [bleu(predictions, references, max_ngram_order=n, **ci) for n in scoring.bleu_orders]
    results += rouge(predictions, references, rouge_types=scoring.rouge_types, **ci).values()
    results.append(vocab_f1(predictions, references, mode=scoring.vocab_f1_mode, **ci))
    results += distinct(predictions, orders=scoring.distinct_orders, tokenizer=tokenizer).values()
    return {r.name: _metric_entry(r) for r in results}


def _metric_tokenizer(scoring: ScoringSettings, references: Sequence[str]) -> str:
    # Decided once from the references: `auto` per call would let a system's gibberish (or an
    # English answer) switch the tokenizer and make its scores incomparable with the others'.
    from medsft.metrics.text import resolve_tokenizer

    return resolve_tokenizer(scoring.tokenizer, references)


def _paired_tests(
    outputs: list[SystemOutput], references: list[str], scoring: ScoringSettings, tokenizer: str
) -> list[dict[str, Any]]:
    from medsft.metrics import compare

    metrics = [("bleu", {"max_ngram_order": n}, f"BLEU-{n}") for n in scoring.bleu_orders]
    metrics += [
        (t, {}, f"ROUGE-{t[5:].upper()}")
        for t in scoring.rouge_types
        if t in ("rouge1", "rouge2", "rougeL")
    ]
    metrics.append(("vocab_f1", {"mode": scoring.vocab_f1_mode}, "vocab-F1"))
    tests = []
    for i, a in enumerate(outputs):
        for b in outputs[i + 1 :]:
            for metric, options, label in metrics:
                test = compare(
                    metric, a.answers, b.answers, references, tokenizer=tokenizer,
                    n_resamples=scoring.n_resamples, seed=scoring.seed, **options,
                )  # fmt: skip
                tests.append(
                    {
                        "a": a.name,
                        "b": b.name,
                        "metric": label,
                        "delta": test.delta,
                        "p_value": test.p_value,
                    }
                )
    return tests


def _think_summary(
    output: SystemOutput, examples: list[Example], scoring: ScoringSettings, tokenizer: str
) -> dict[str, Any]:
    with_think = [t for t in output.thinks if t]
    out: dict[str, Any] = {
        "with_think": len(with_think),
        "mean_think_chars": round(sum(map(len, with_think)) / len(with_think), 1)
        if with_think
        else 0,
    }
    refs = [ex.reference_think for ex in examples]
    if all(refs) and with_think:
        # Reasoning data: the think block is scored against the reference reasoning, apart.
        out["metrics"] = score_texts([t or "" for t in output.thinks], refs, scoring, tokenizer)
    return out


# --------------------------------------------------------------------------------------------
# Judge
# --------------------------------------------------------------------------------------------
def judge_status(config: EvalConfig) -> tuple[bool, str]:
    """(run the judge?, why not / which endpoint), decided before anything slow runs."""
    judge = config.judge
    if judge.base_url:
        parts = urlsplit(judge.base_url)
        if parts.username or parts.password or parts.query:
            raise ValueError(
                "judge.base_url must not carry credentials or a query string; export the key in "
                f"the environment variable named by judge.api_key_env ({judge.api_key_env})"
            )
    if judge.enabled is False:
        return False, "disabled (judge.enabled: false)"
    if config.baseline is None:
        if judge.enabled:
            raise ValueError("judge.enabled: true needs a baseline: set baseline to a system name")
        return False, "no baseline system (set baseline: <system name>)"
    has_key = bool(os.environ.get(judge.api_key_env))
    if judge.base_url is None and not has_key:
        reason = (
            f"no judge endpoint configured: set --judge.base_url for an OpenAI-compatible server, "
            f"or export {judge.api_key_env} for OpenAI"
        )
        if judge.enabled:
            raise ValueError(f"judge.enabled: true but {reason}")
        return False, reason
    return True, judge.base_url or "OpenAI"


def run_judge(
    outputs: list[SystemOutput], examples: list[Example], config: EvalConfig, out_dir: Path
) -> dict[str, Any]:
    """Each system's judged win rates against the baseline (both answer orders)."""
    from medsft.metrics.judge import JudgeConfigError, judge_pairs

    judge = config.judge
    baseline = next(o for o in outputs if o.name == config.baseline)
    questions = [ex.question for ex in examples]
    results: dict[str, Any] = {}
    summary: dict[str, Any] = {
        "status": "ok",
        "baseline": baseline.name,
        "model": judge.model,
        "endpoint": judge.base_url or "OpenAI",
        "results": results,
    }

    def shown(answers: list[str]) -> list[str]:
        return [a if a.strip() else EMPTY_ANSWER for a in answers]

    for output in outputs:
        if output.name == baseline.name:
            continue
        try:
            result = judge_pairs(
                questions, shown(output.answers), shown(baseline.answers),
                model=judge.model, base_url=judge.base_url, api_key_env=judge.api_key_env,
                concurrency=judge.concurrency,
                cache_path=out_dir / "judge_cache.jsonl" if judge.cache else None,
                rubric=judge.rubric, temperature=judge.temperature, max_tokens=judge.max_tokens,
                timeout=judge.timeout, max_retries=judge.max_retries,
                n_resamples=max(config.scoring.n_resamples, 1), seed=config.scoring.seed,
                progress=config.runtime.progress,
            )  # fmt: skip
        except JudgeConfigError as err:
            log.warning("judge failed: %s", err)
            summary.update(status="failed", reason=str(err))
            return summary
        full = result.to_dict(include_records=True)
        (out_dir / f"judge_{output.name}.json").write_text(
            json.dumps(full, ensure_ascii=False, indent=1), encoding="utf-8"
        )
        results[output.name] = result.to_dict(include_records=False)
        results[output.name]["empty_answers_shown"] = sum(not a.strip() for a in output.answers)
    return summary


# --------------------------------------------------------------------------------------------
# Training curves
# --------------------------------------------------------------------------------------------
def training_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Scalars logged to TensorBoard in a run directory: {tag: [(step, value), ...]}."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    candidates = [run_dir, run_dir.parent]
    event_dir = next((d for d in candidates if list(d.glob("events.out.tfevents.*"))), None)
    if event_dir is None:
        return {}
    accumulator = EventAccumulator(str(event_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {
        tag: [(event.step, float(event.value)) for event in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------
def _yerr(bounds: list) -> Any:
    import numpy as np

    # Distinct-n's bootstrap interval lies below its estimate (resampling repeats answers), and
    # matplotlib refuses negative error bars: such a side is drawn as zero.
    return np.maximum(np.array(bounds, dtype=float), 0.0)


def _plot_metrics(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    systems = [s["name"] for s in report["systems"]]
    names = list(next(iter(report["metrics"].values())).keys())
    panels = ["text"]
    ppl_systems = [s for s in systems if "test" in report["perplexity"].get(s, {})]
    if ppl_systems:
        panels.append("ppl")
    judged = report["judge"].get("results") or {}
    if judged:
        panels.append("judge")
    widths = [max(len(names), 3)] + [max(len(ppl_systems), 1.5)] * ("ppl" in panels)
    widths += [max(len(judged), 1.5)] * ("judge" in panels)
    fig, axes = plt.subplots(
        1, len(panels), figsize=(2 + 0.9 * sum(widths), 4.5), squeeze=False,
        gridspec_kw={"width_ratios": widths},
    )  # fmt: skip
    axes = axes[0]
    x = np.arange(len(names))
    width = 0.8 / len(systems)
    for k, system in enumerate(systems):
        entries = [report["metrics"][system][n] for n in names]
        scores = np.array([e["score"] for e in entries])
        err = None
        if all("low" in e for e in entries):
            err = _yerr(
                [scores - [e["low"] for e in entries], [e["high"] for e in entries] - scores]
            )
        axes[0].bar(
            x + (k - (len(systems) - 1) / 2) * width,
            scores,
            width,
            yerr=err,
            capsize=3,
            label=system,
        )
    axes[0].set_xticks(x, names, rotation=30, ha="right")
    axes[0].set_ylabel("score (0-100), 95% bootstrap CI")
    axes[0].set_title("Text metrics vs references")
    axes[0].legend(fontsize="small")
    col = 1
    if "ppl" in panels:
        ax = axes[col]
        col += 1
        entries = [report["perplexity"][s]["test"] for s in ppl_systems]
        scores = np.array([e["score"] for e in entries])
        err = None
        if all("low" in e for e in entries):
            err = _yerr(
                [scores - [e["low"] for e in entries], [e["high"] for e in entries] - scores]
            )
        ax.bar(ppl_systems, scores, yerr=err, capsize=3, color="tab:gray")
        ax.set_yscale("log")
        ax.set_title("Reference PPL (lower = better)", fontsize=10)
        ax.tick_params(axis="x", rotation=30)
    if "judge" in panels:
        ax = axes[col]
        names_j = list(judged)
        rates = np.array([judged[s]["adjusted_win_rate"] or 0.0 for s in names_j])
        intervals = [judged[s]["interval"] for s in names_j]
        err = None
        if all(intervals):
            err = _yerr(
                [rates - [i["low"] for i in intervals], [i["high"] for i in intervals] - rates]
            )
        ax.bar(names_j, rates, yerr=err, capsize=3, color="tab:green")
        ax.axhline(0.5, color="black", linewidth=0.8, linestyle="--")
        ax.set_ylim(0, 1)
        ax.set_title(f"Adj. win rate vs {report['judge']['baseline']}", fontsize=10)
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_training(name: str, scalars: dict[str, list[tuple[int, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses = [t for t in scalars if t.endswith("loss")]
    ppl = [t for t in scalars if t.endswith("ppl")]
    panels = [p for p in (losses, ppl) if p]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, tags in zip(axes[0], panels, strict=True):
        for tag in tags:
            steps, values = zip(*scalars[tag], strict=True)
            ax.plot(steps, values, marker="o" if len(steps) < 20 else None, markersize=3, label=tag)
        ax.set_xlabel("step")
        ax.set_ylabel("perplexity" if tags is ppl else "loss (nats/token)")
        if tags is ppl:
            ax.set_yscale("log")
        ax.legend()
    fig.suptitle(f"Training curves: {name}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _fmt(entry: dict[str, Any] | None, digits: int = 2) -> str:
    if not entry or entry.get("score") is None:
        return "–"
    text = f"{entry['score']:.{digits}f}"
    if "low" in entry:
        text += f" [{entry['low']:.{digits}f}, {entry['high']:.{digits}f}]"
    return text


def _cell(text: str | None, limit: int = 300) -> str:
    if text is None:
        return "–"
    text = text.strip()
    text = text if len(text) <= limit else text[:limit] + "…"
    return text.replace("|", "\\|").replace("\n", "<br>") or "*(empty)*"


def render_markdown(report: dict[str, Any]) -> str:
    """report.md from report.json's content."""
    systems = [s["name"] for s in report["systems"]]
    test = report["test_set"]
    lines = [
        "# Evaluation report",
        "",
        f"Test set: `{test['source']}` (preset `{test['preset']}`, {test['n']} questions). "
        f"Generated {report['created']} by medsft {report['medsft_version']}; resolved config in "
        "`config.yaml`, answers in `generations/`.",
        "",
        "## Systems",
        "",
        "| system | kind | source | answers | generation |",
        "|---|---|---|---|---|",
    ]
    for s in report["systems"]:
        gen = s.get("generation") or {}
        if not gen:
            how = "from file"
        elif gen.get("generated"):
            how = (
                f"{gen['generated']} generated in {gen['seconds']:.1f} s, "
                f"{gen['tokens_per_second']:.1f} tok/s ({gen['world_size']} device(s))"
            )
        else:
            how = f"{gen['reused']} reused from a previous run"
        if gen:
            finish = gen["finish_reasons"]
            how += (
                f"; {finish['stop']} stopped at end of turn, {finish['length']} hit max_new_tokens"
                f" (mean {gen['mean_new_tokens']} tokens)"
            )
        empty = sum(not a.strip() for a in s["answers"])
        lines.append(
            f"| {s['name']} | {s['kind']} | `{s['source']}` | {len(s['answers'])}"
            f"{f' ({empty} empty)' if empty else ''} | {how} |"
        )
    names = list(next(iter(report["metrics"].values())).keys())
    has_ppl = any(report["perplexity"].get(s) for s in systems)
    level = "95%"
    lines += [
        "",
        f"## Scores against the references ({level} bootstrap intervals)",
        "",
        f"Metric tokenizer: `{report['metric_tokenizer']}`. "
        "Perplexity: token-weighted, of the *reference* answers under each model (lower is better).",
        "",
        "| system | " + " | ".join(names) + (" | PPL (test) | PPL (val)" if has_ppl else "") + " |",
        "|---" * (len(names) + 1 + 2 * has_ppl) + "|",
    ]
    for s in systems:
        row = [_fmt(report["metrics"][s][n]) for n in names]
        if has_ppl:
            ppl = report["perplexity"].get(s, {})
            row += [_fmt(ppl.get("test")), _fmt(ppl.get("val"))]
        lines.append(f"| {s} | " + " | ".join(row) + " |")
    if report.get("paired"):
        lines += [
            "",
            "### Paired bootstrap tests (A − B, two-sided p)",
            "",
            "| A | B | metric | Δ | p |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {t['a']} | {t['b']} | {t['metric']} | {t['delta']:+.2f} | {t['p_value']:.3f} |"
            for t in report["paired"]
        ]
    think = {s: v for s, v in report["think"].items() if v["with_think"]}
    if think:
        lines += [
            "",
            "### Thinking",
            "",
            "| system | answers with a think block | mean chars |",
            "|---|---|---|",
        ]
        lines += [
            f"| {s} | {v['with_think']} | {v['mean_think_chars']} |" for s, v in think.items()
        ]
        for s, v in think.items():
            if "metrics" in v:
                scored = ", ".join(f"{k} {_fmt(e)}" for k, e in v["metrics"].items())
                lines.append(f"\n{s}'s think blocks vs the reference reasoning: {scored}")
    judge = report["judge"]
    lines += ["", "## Judge", ""]
    if judge["status"] == "skipped":
        lines.append(f"Skipped: {judge['reason']}.")
    elif judge["status"] == "failed":
        lines.append(f"Failed: {judge['reason']}")
    else:
        lines += [
            f"Judge `{judge['model']}` at {judge['endpoint']}, every pair judged in both answer "
            f"orders against **{judge['baseline']}**. A pair counts as a win or loss only when "
            "both orders agree; otherwise it is a tie (inconsistent).",
            "",
            "| system | win | tie | loss | adjusted win rate (95% CI) | consistency | errors | "
            "judged |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for s, r in judge["results"].items():
            interval = r["interval"]
            rate = "–" if r["adjusted_win_rate"] is None else f"{r['adjusted_win_rate']:.2f}"
            if interval:
                rate += f" [{interval['low']:.2f}, {interval['high']:.2f}]"
            consistency = "–" if r["consistency_rate"] is None else f"{r['consistency_rate']:.0%}"
            lines.append(
                f"| {s} | {r['counts']['win']} | {r['counts']['tie']} | {r['counts']['loss']} | "
                f"{rate} | {consistency} | {r['n_errors']} | {r['n_judged']}/{r['n_pairs']} |"
            )
        usage = [r["usage"] for r in judge["results"].values()]
        lines += [
            "",
            f"Requests: {sum(u['requests'] for u in usage)}; tokens billed: "
            f"{sum(u['total_tokens'] for u in usage)}; replies reused from the cache: "
            f"{sum(u['cached_judgements'] for u in usage)}. Verdicts per pair in "
            "`judge_<system>.json`.",
        ]
    if report.get("training"):
        lines += ["", "## Training", ""]
        for s, t in report["training"].items():
            finals = ", ".join(
                f"{tag} {v['last']:.4g} (min {v['min']:.4g})"
                for tag, v in t["scalars"].items()
                if tag.endswith(("loss", "ppl"))
            )
            lines += [f"**{s}** (`{t['run_dir']}`): {finals or 'no scalars logged'}.", ""]
            if t.get("plot"):
                lines += [f"![training curves of {s}]({t['plot']})", ""]
    lines += ["", "## Plots", "", "![metrics](metrics.png)", "", "## Examples", ""]
    for ex in report["examples"]:
        lines += [
            f"### Q{ex['index']}: {_cell(ex['question'], 200)}",
            "",
            "| | answer |",
            "|---|---|",
            f"| reference | {_cell(ex['reference'])} |",
        ]
        lines += [f"| {s} | {_cell(ex['answers'][s])} |" for s in systems]
        lines.append("")
    lines += ["## Signatures", ""]
    first = report["metrics"][systems[0]]
    lines += [f"- `{e['signature']}`" for e in first.values()]
    for s in systems:
        for name, ppl in report["perplexity"].get(s, {}).items():
            lines.append(f"- {s} ({name}): `{ppl['signature']}`")
    return "\n".join(lines) + "\n"


def _example_indices(n: int, k: int) -> list[int]:
    if k <= 0:
        return []
    if k >= n:
        return list(range(n))
    return sorted({round(i * (n - 1) / max(k - 1, 1)) for i in range(k)})


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------
def validate_config(config: EvalConfig) -> list[Kind]:
    """Check the config before anything slow runs; returns each system's kind."""
    if not config.systems:
        raise ValueError("no systems to evaluate: list them under systems (name, path[, kind])")
    names = [_safe_name(s.name) for s in config.systems]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"system names must be unique; repeated: {', '.join(duplicates)}")
    if config.baseline is not None and config.baseline not in names:
        raise ValueError(
            f"baseline {config.baseline!r} is not a system; choose one of {', '.join(names)}"
        )
    config.generation.validate()
    scoring = config.scoring
    if scoring.n_resamples < 0 or scoring.ppl_batch_size < 1 or scoring.ppl_max_length < 8:
        raise ValueError(
            "scoring.n_resamples must be >= 0, ppl_batch_size >= 1, ppl_max_length >= 8"
        )
    if not scoring.bleu_orders and not scoring.rouge_types:
        raise ValueError("scoring needs at least one of bleu_orders and rouge_types")
    kinds = [infer_kind(s) for s in config.systems]
    for spec, kind in zip(config.systems, kinds, strict=True):
        if kind == "run":
            resolve_run_dir(spec.path)  # fails now, not after generating the other systems
        elif kind == "answers" and not os.path.exists(spec.path):
            raise FileNotFoundError(
                f"system {spec.name!r}: answers file {spec.path!r} does not exist"
            )
        elif kind == "model" and is_hub_id(spec.path):
            ensure_hub_reachable(spec.path)  # seconds now, not after the other systems ran
        elif (
            kind == "model"
            and not spec.path.startswith(RANDOM_PREFIX)
            and not os.path.exists(spec.path)
        ):
            raise FileNotFoundError(
                f"system {spec.name!r}: model directory {spec.path!r} does not exist"
            )
    judge_status(config)
    return kinds


def evaluate(config: EvalConfig, *, resolved_config: str | None = None) -> dict[str, Any] | None:
    """Generate, score, judge and report. Returns the report (None on ranks other than 0).

    Args:
        config: the evaluation config.
        resolved_config: YAML of the resolved config, saved as `<output_dir>/config.yaml`.
    """
    from medsft import __version__

    kinds = validate_config(config)
    run_judge_, judge_reason = judge_status(config)
    out_dir = Path(config.output_dir)
    examples = load_examples(config.test_set)
    val_examples = load_examples(config.val_set, what="val_set") if config.val_set else None
    if any(ex.reference_think for ex in examples) and not config.generation.enable_thinking:
        raise ValueError(
            f"{config.test_set.source}: the references have think blocks but "
            "generation.enable_thinking is false; set it to true for reasoning data"
        )
    if is_global_zero():
        out_dir.mkdir(parents=True, exist_ok=True)
        if resolved_config is not None:
            (out_dir / "config.yaml").write_text(resolved_config, encoding="utf-8")
    log.info("test set: %d questions from %s", len(examples), config.test_set.source)

    outputs: list[SystemOutput] = []
    started = time.perf_counter()
    for spec, kind in zip(config.systems, kinds, strict=True):
        if kind == "answers":
            outputs.append(_answers_system(spec, examples))
            continue
        output = _model_system(spec, kind, examples, val_examples, config, out_dir)
        if output is not None:
            outputs.append(output)
    if not is_global_zero():
        return None

    references = [ex.reference for ex in examples]
    scoring = config.scoring
    tokenizer = _metric_tokenizer(scoring, references)
    report: dict[str, Any] = {
        "medsft_version": __version__,
        "created": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "output_dir": str(out_dir),
        "test_set": {
            "source": config.test_set.source,
            "preset": config.test_set.preset,
            "n": len(examples),
            "sha256": _digest([[ex.prompt, ex.reference] for ex in examples]),
        },
        "val_set": {"source": config.val_set.source, "n": len(val_examples)}
        if val_examples
        else None,
        "metric_tokenizer": tokenizer,
        "systems": [
            {
                "name": o.name,
                "kind": o.kind,
                "source": o.source,
                "model_loaded": o.model_loaded,
                "generation": o.generation,
                "answers": o.answers,
            }
            for o in outputs
        ],
        "metrics": {
            o.name: score_texts(o.answers, references, scoring, tokenizer) for o in outputs
        },
        "perplexity": {o.name: o.perplexity for o in outputs if o.perplexity},
        "think": {o.name: _think_summary(o, examples, scoring, tokenizer) for o in outputs},
        "paired": _paired_tests(outputs, references, scoring, tokenizer)
        if scoring.paired and scoring.n_resamples > 0 and len(outputs) > 1
        else [],
    }
    if run_judge_:
        report["judge"] = run_judge(outputs, examples, config, out_dir)
    else:
        log.info("judge skipped: %s", judge_reason)
        report["judge"] = {"status": "skipped", "reason": judge_reason, "baseline": config.baseline}

    report["training"] = {}
    for o in outputs:
        if o.run_dir is None:
            continue
        scalars = training_scalars(o.run_dir)
        entry: dict[str, Any] = {
            "run_dir": str(o.run_dir),
            "scalars": {
                tag: {"last": points[-1][1], "min": min(v for _, v in points), "steps": len(points)}
                for tag, points in scalars.items()
                if points
            },
        }
        if scalars:
            plot = f"training_{o.name}.png"
            _plot_training(o.name, scalars, out_dir / plot)
            entry["plot"] = plot
        report["training"][o.name] = entry

    report["examples"] = [
        {
            "index": i,
            "question": examples[i].question,
            "reference": examples[i].reference,
            "answers": {o.name: o.answers[i] for o in outputs},
        }
        for i in _example_indices(len(examples), scoring.examples)
    ]
    _plot_metrics(report, out_dir / "metrics.png")
    report["plots"] = [
        "metrics.png",
        *(t["plot"] for t in report["training"].values() if "plot" in t),
    ]
    report["seconds"] = round(time.perf_counter() - started, 2)
    (out_dir / "report.json").write_text(
        json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8"
    )
    (out_dir / "report.md").write_text(render_markdown(report), encoding="utf-8")
    log.info("report written to %s", out_dir / "report.md")
    return report
