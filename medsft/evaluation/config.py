"""What evaluate.py reads from its config and command line, and the checks run before anything slow.

Each dataclass field is documented in an attribute docstring, which `python evaluate.py --help`
shows. `validate_config` fails early, saying how to fix the config; `judge_status` decides whether
the judge runs.
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple
from urllib.parse import urlsplit

from medsft.data.schema import DataSource, Preset
from medsft.errors import ConfigError
from medsft.hub import RANDOM_PREFIX, ensure_hub_reachable, is_hub_id
from medsft.metrics import judge, read_labels
from medsft.metrics.servers import ServerKind, UnsupportedSetting, request_fields
from medsft.model.build import DType, resolve_trained
from medsft.model.generate import GenerationSettings
from medsft.model.trained import IncompleteModel

log = logging.getLogger(__name__)

Kind = Literal["auto", "model", "run", "answers", "endpoint"]
Server = Literal["auto", "openai", "vllm", "sglang", "transformers"]
JsonValue = str | bool | int | float | None | dict | list
"""A JSON value as written in the config. Typed `Any`, jsonargparse would read a string holding
JSON (`'{"repetition_penalty": 1.1}'`) into a mapping; a union with `str` first keeps it a str."""
McqMethod = Literal["loglik", "generate"]
ANSWER_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


@dataclass
class DataSpec(DataSource):
    """A question set, read with the same column mapping as training (medsft.data.DataSource:
    source, preset, columns, split, subset, system_prompt, skip_invalid, encoding)."""

    source: str = "data/sample/test_zh_med.json"
    """Local file, directory or glob (JSON, JSONL, Parquet, CSV), or a hub dataset id."""
    preset: Preset = "course"
    """Column preset, a name of medsft.data.schema.PRESETS (README's Data table); `course`:
    [question, reference] lists."""
    split: str = "test"
    """Hub split to read."""
    system_prompt: str | None = None
    """System message for rows without one (use the one the model was trained with)."""
    limit: int | None = None
    """Use only the first `limit` rows."""
    slice_column: str | None = None
    """Break every metric down by this column (Huatuo's `label`, a department, a subject)."""
    duplicates: Literal["drop", "keep", "error"] = "drop"
    """Rows asking the same question (the same conversation up to the answer) again: `drop`
    keeps the first and counts the others (in the log and report), `keep` scores each (the
    question then weighs double), `error` stops with the rows named."""


@dataclass
class McqSpec:
    """A multiple-choice benchmark (CMMLU, CMB, CMExam, ...), scored by accuracy (medsft.evaluation.mcq).

    Rows hold a question, options `A`..`E` (empty ones are dropped) and the answer letter(s)
    (`ABD`: a multi-answer question, scored as exact set match). CMMLU's CSV layout (an unnamed
    index, Question, A-D, Answer; one file per subject) reads as is.
    """

    source: str
    """Local file, directory or glob (CSV, JSONL, JSON, Parquet), or a hub dataset id."""
    columns: dict[str, str] | None = None
    """Role -> column overrides; roles: question, answer, subject, id and the letters A..E.
    Defaults: Question, Answer, subject (else the file's name: CMMLU's one CSV per subject), id,
    and A..E."""
    split: str = "test"
    """Hub split to read."""
    subset: str | None = None
    """Hub dataset configuration name (e.g. a CMMLU subject)."""
    limit: int | None = None
    """Use only the first `limit` questions."""
    methods: list[McqMethod] = field(default_factory=lambda: ["loglik"])
    """`loglik`: the log-probability of each option letter after the prompt (CMMLU's and
    lm-evaluation-harness's way, for base and tuned models alike);
    `generate`: the answer generated with the chat template (`generation` settings) and its
    letter(s) extracted (the way chat models are scored on CMB); unparseable answers are counted
    apart (and scored wrong)."""
    shots: int = 0
    """Solved examples before each question (loglik), taken from `dev_source` (same subject)."""
    dev_source: str | None = None
    """Where the shots come from (CMMLU's dev/ folder); a hub id reads its `dev_split`."""
    dev_split: str = "dev"
    """Hub split of the shots."""
    letters: str = "ABCDE"
    """Option letters, in order."""
    subject_names: dict[str, str] | None = None
    """Subject -> its name in the prompt, e.g. CMMLU's file names to their Chinese names
    (`{anatomy: 解剖学, clinical_knowledge: 临床知识}`, as CMMLU's own script prompts)."""
    batch_size: int = 16
    """Questions per forward pass (loglik, per device): each subject's few-shot prefix runs once
    and its questions, batched by length, run after it (medsft.evaluation.mcq_loglik)."""


@dataclass
class LeakageSettings:
    """The training data to check the test set against."""

    train_set: DataSpec = field(
        default_factory=lambda: DataSpec(
            source="FreedomIntelligence/Huatuo26M-Lite", preset="huatuo", split="train"
        )
    )
    """The training data, read with its training column mapping (preset / columns); by
    default train.py's: Huatuo26M-Lite with the `huatuo` preset."""
    unit: Literal["auto", "char", "word"] = "auto"
    """Overlap tokens: `char` (Chinese), `word` (space-separated languages), or `auto` (char
    when the test questions hold Han characters)."""
    seed_length: int = 8
    """Shortest overlap looked for, in tokens (shorter shared runs are too common to mean
    anything: 8 characters, or 8 words)."""
    threshold: float = 0.5
    """Flag items sharing at least this share of their tokens in one run with a training row
    (and at least `min_length` tokens)."""
    min_length: int | None = None
    """Flag only runs at least this long, in tokens; null = 13 characters for Chinese, 8 words
    otherwise. Short questions share stock phrases (8-character 的早期症状是什么 in a
    10-character question) without being copied."""
    show: int = 10
    """Flagged items listed in report.md (all are in report.json)."""


@dataclass
class SystemSpec:
    """One system to evaluate."""

    name: str
    """Label in the report; also the file name of its generations (letters, digits, -_.)."""
    path: str
    """Hub id, local model dir, `random:<preset>`, a training run dir (`logs/demo/version_0`,
    `logs/demo/latest`, `logs/demo/version_*`: the newest), an adapter or merged export, or an
    answers file (JSONL/JSON/CSV/Parquet): objects, or a JSON list of [question, reference,
    answer] triples or [question, answer] pairs; for an endpoint, the model name it serves
    (`gpt-4o-mini`, vLLM's --served-model-name)."""
    kind: Kind = "auto"
    """`model` (base model), `run` (trained adapter/model), `answers` (file), `endpoint` (an
    OpenAI-compatible chat endpoint; `path` is the model name it knows), or `auto` (`endpoint`
    when base_url is set)."""
    dtype: DType = "auto"
    """Weight dtype of a model system; `auto` = bf16 on a capable GPU, else fp32."""
    tokenizer: str | None = None
    """Tokenizer of a `model` system if not the model's own (`qwen3` = bundled)."""
    question_column: str | None = "question"
    """Answers file: column holding the question, to align rows with the test set; null aligns
    by row order (triples and pairs are aligned by their question too)."""
    answer_column: str = "answer"
    """Answers file: column holding the answer."""
    think_column: str | None = None
    """Answers file: column holding reasoning, if any."""
    base_url: str | None = None
    """Endpoint: an OpenAI-compatible server (vLLM, SGLang: `http://127.0.0.1:8000/v1`); null =
    OpenAI."""
    api_key_env: str = "OPENAI_API_KEY"
    """Endpoint: environment variable holding the API key (never put the key in a config)."""
    reasoning: bool = False
    """Endpoint: a reasoning model (GPT-5, o-series): sends max_completion_tokens and no
    temperature or top_p (such models take only their defaults)."""
    server: Server = "auto"
    """Endpoint: the kind of server, which decides where the generation settings the OpenAI API
    lacks go (top_k, repetition_penalty, the thinking switch): `vllm` and `sglang` take them as
    extra fields, `transformers` (`transformers serve`) in its `generation_config` JSON string
    (with do_sample), all three the thinking switch in `chat_template_kwargs`; `openai` takes
    none, and the run stops naming such a setting. `auto`: `openai` without base_url, else told
    once from the server's `/models` listing (`openai` when it does not say)."""
    extra_body: dict[str, JsonValue] | None = None
    """Endpoint: extra request fields, sent as written (strings stay strings, e.g. `transformers
    serve`'s `generation_config: '{"min_p": 0.05}'`); a key here replaces what the generation
    settings would send under it."""
    concurrency: int = 8
    """Endpoint: requests in flight at once."""
    timeout: float = 300.0
    """Endpoint: seconds per request."""
    max_retries: int = 5
    """Endpoint: retries per request on 429, 5xx, timeouts and dropped connections (the openai
    client's own, honouring Retry-After)."""


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
    vocab_f1_mode: Literal["multiset", "set"] = "set"
    """Vocabulary F1 overlap: `set` (vocab-F1: distinct tokens shared, as the course studies
    computed it) or `multiset` (named token-F1: SQuAD-style token counts, which equals ROUGE-1 F1
    with the same tokens, so the report would show one number twice)."""
    distinct_orders: list[int] = field(default_factory=lambda: [1, 2])
    """Distinct-n for each n; [] turns distinct-n off."""
    n_resamples: int = 1000
    """Bootstrap resamples for the 95% intervals and paired tests (0 = no intervals)."""
    seed: int = 0
    """Bootstrap seed."""
    paired: bool = True
    """Paired bootstrap test of every pair of systems on every metric against the references
    (medsft.metrics.METRICS: BLEU, ROUGE, vocab-F1; not distinct-n)."""
    perplexity: bool = True
    """Perplexity of each model system on the references (and on val_set)."""
    ppl_batch_size: int = 4
    """Examples per forward pass for perplexity."""
    ppl_max_length: int = 2048
    """Truncate rendered reference conversations to this many tokens."""
    examples: int = 3
    """Questions shown side by side in report.md."""


@dataclass(kw_only=True)
class SecondJudge:
    """`judge.compare_with`: another judge model; its prompt, language, rubric, concurrency,
    timeout and retries are the first judge's, so the two differ in the model alone."""

    model: str
    """The second judge's model name, as its endpoint knows it."""
    base_url: str | None = None
    """Its OpenAI-compatible endpoint; null = OpenAI."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding its key (a placeholder is sent when unset and base_url is
    given)."""
    temperature: float | None = 0.0
    """Its temperature; null leaves it to the endpoint (GPT-5-family models)."""
    max_tokens: int | None = None
    """Its reply length cap; null leaves it to the endpoint."""
    max_completion_tokens: int | None = None
    """The cap as reasoning models take it; use instead of max_tokens."""


@dataclass(kw_only=True)
class JudgeSettings(judge.JudgeSettings):
    """LLM-as-a-judge of each system against the baseline: the judge's own settings
    (medsft.metrics.judge.JudgeSettings, passed to it whole), and when and how evaluate.py runs
    it."""

    enabled: bool | None = None
    """null: judge when an endpoint is configured (base_url set, or the key's environment
    variable set); true: require it; false: never."""
    model: str = "gpt-4o-mini"
    """Judge model name, as the endpoint knows it."""
    system_prompt: str | None = None
    """File holding the system message; null = the language's packaged one (an empty file
    sends none)."""
    cache: bool = True
    """Reuse judge replies from `<output_dir>/judge_cache.jsonl`."""
    max_failed_share: float = 0.05
    """Judge status `partial` (in report.json and report.md, with counts) when more than this
    share of a system's pairs could not be judged (their rates leave those pairs out)."""
    labels: str | None = None
    """JSONL file of people's verdicts on judged pairs (format: docs/design.md, "How far to
    trust the judge"): the judge's agreement with them, per system; checked before anything
    runs."""
    compare_with: SecondJudge | None = None
    """A second judge of the same pairs with the same prompt (another model or endpoint), for
    the agreement of the two judges; it doubles the judging's cost."""

    def second_settings(self) -> judge.JudgeSettings:
        """The second judge (`compare_with`) as `judge_pairs` takes it: these settings with its
        model, endpoint, key and request settings."""
        if self.compare_with is None:
            raise ValueError("no second judge: set judge.compare_with")
        fields = {
            f.name: getattr(self.compare_with, f.name) for f in dataclasses.fields(SecondJudge)
        }
        return dataclasses.replace(self, compare_with=None, **fields)


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
    mcq_set: McqSpec | None = None
    """A multiple-choice benchmark scored beside the test set (model systems only)."""
    leakage: LeakageSettings | None = None
    """Check the test set against training data (medsft.evaluation.leakage)."""
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


def infer_kind(spec: SystemSpec) -> Kind:
    """What a system path is, when `kind: auto`."""
    if spec.kind != "auto":
        return spec.kind
    if spec.base_url is not None:
        return "endpoint"
    path = spec.path
    if path.startswith(RANDOM_PREFIX):
        return "model"
    if path.endswith(ANSWER_SUFFIXES):
        return "answers"
    if glob.has_magic(path) or Path(path).name == "latest":
        return "run"
    p = Path(path)
    if p.is_dir():
        if (p / "config.json").exists() and not (p / "adapter_config.json").exists():
            return "model"
        return "run"
    return "model"  # a hub id


def resolve_run_dir(path: str) -> Path:
    """A run directory; `<dir>/latest` or a glob picks the newest run that holds a model.

    Newest = most recently saved adapter/model (then the highest version number). A run whose
    trained folder is incomplete is refused (medsft.model.trained.IncompleteModel) when it is
    the one asked for, or the newest: evaluating an older run instead would be silent.
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
        resolve_trained(p)
        return p
    found = []
    for candidate in glob.glob(pattern):
        try:
            model_dir, problem = resolve_trained(candidate), None
        except IncompleteModel as err:
            model_dir, problem = err.folder, err
        except FileNotFoundError:
            continue  # a run still training, or one that failed before saving
        version = re.search(r"(\d+)$", Path(candidate).name)
        when = model_dir.stat().st_mtime_ns
        found.append((when, int(version[1]) if version else -1, candidate, problem))
    if not found:
        raise FileNotFoundError(
            f"no finished training run matches {pattern!r} (none holds adapter/ or model/); "
            "train first, e.g. python train.py --config configs/demo.yaml"
        )
    newest = max(found, key=lambda f: f[:3])
    if newest[3] is not None:
        raise newest[3]
    return Path(newest[2])


def endpoint_settings(spec: SystemSpec, generation: GenerationSettings) -> dict[str, Any]:
    """What every request of an endpoint system asks for, by setting name (the per-question
    seed of sampling aside), before `request_fields` places it for the server."""
    if spec.reasoning:
        # Reasoning models (GPT-5, o-series) take only their default sampling and this cap.
        return {"max_completion_tokens": generation.max_new_tokens}
    asked: dict[str, Any] = {"max_tokens": generation.max_new_tokens, "temperature": 0.0}
    if generation.do_sample:
        asked.update(
            temperature=generation.temperature,
            top_p=generation.top_p,
            top_k=generation.top_k,
            do_sample=True,
        )
    if generation.repetition_penalty != 1.0:
        asked["repetition_penalty"] = generation.repetition_penalty
    asked["enable_thinking"] = generation.enable_thinking
    return asked


_OFF_VALUE = {"top_k": "0", "repetition_penalty": "1.0", "enable_thinking": "false"}


def endpoint_fields(
    spec: SystemSpec, generation: GenerationSettings, server: ServerKind, how: str
) -> dict[str, Any]:
    """The request fields of an endpoint system for a server of kind `server` (`how`: how the
    kind was decided, for the message); ConfigError when a setting cannot be sent there."""
    try:
        return request_fields(server, endpoint_settings(spec, generation), spec.extra_body)
    except UnsupportedSetting as err:
        raise ConfigError(
            f"system {spec.name!r}: generation.{err.name} = {err.value!r} cannot be sent: it is "
            f"no OpenAI chat-completions field, and the server kind is {server} ({how}); set "
            "the system's server to vllm, sglang or transformers if the server is one, send it "
            "in the system's extra_body as the server takes it, or set "
            f"generation.{err.name}: {_OFF_VALUE.get(err.name, 'its default')}"
        ) from None


def validate_config(config: EvalConfig, *, warn: bool = True) -> list[Kind]:
    """Check the config before anything slow runs; returns each system's kind.

    Args:
        config: the evaluation config.
        warn: log settings the run would ignore (False: a check that runs again with them).
    """
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
    out = Path(config.output_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(
            f"output_dir {config.output_dir!r} is a file; the report and caches need a folder: "
            "choose another --output_dir"
        )
    config.generation.validate()
    _validate_scoring(config.scoring, warn)
    if config.mcq_set is not None:
        _validate_mcq(config.mcq_set)
    kinds = [infer_kind(s) for s in config.systems]
    for spec, kind in zip(config.systems, kinds, strict=True):
        _check_system(spec, kind, config.generation)
        if kind == "endpoint" and config.mcq_set and "loglik" in config.mcq_set.methods:
            raise ValueError(
                f"system {spec.name!r} is an endpoint: mcq_set.methods loglik needs the model's "
                "next-token log-probabilities, which a chat endpoint does not give; use "
                "mcq_set.methods: [generate], or evaluate loglik on the model itself"
            )
    judge_status(config)
    return kinds


def _safe_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
        raise ValueError(
            f"system name {name!r} may hold only letters, digits, '-', '_' and '.' (it names files)"
        )
    return name


def _validate_scoring(scoring: ScoringSettings, warn: bool) -> None:
    if scoring.n_resamples < 0 or scoring.ppl_batch_size < 1 or scoring.ppl_max_length < 8:
        raise ValueError(
            "scoring.n_resamples must be >= 0, ppl_batch_size >= 1, ppl_max_length >= 8"
        )
    if not scoring.bleu_orders and not scoring.rouge_types:
        raise ValueError("scoring needs at least one of bleu_orders and rouge_types")
    if any(n < 1 for n in [*scoring.bleu_orders, *scoring.distinct_orders]):
        raise ValueError("scoring.bleu_orders and scoring.distinct_orders take orders >= 1")
    if warn and scoring.paired and scoring.n_resamples == 0:
        log.warning(
            "scoring.paired is on but scoring.n_resamples is 0: paired tests need bootstrap "
            "resamples, so the report will have none (set n_resamples > 0, or paired: false)"
        )


def _validate_mcq(mcq: McqSpec) -> None:
    if not mcq.methods:
        raise ValueError("mcq_set.methods is empty; use [loglik], [generate] or both")
    if mcq.shots < 0 or (mcq.shots and mcq.dev_source is None):
        raise ValueError(
            "mcq_set.shots must be >= 0, and k-shot needs mcq_set.dev_source (e.g. CMMLU's dev/)"
        )
    if not re.fullmatch(r"[A-Z]{2,26}", mcq.letters) or len(set(mcq.letters)) != len(mcq.letters):
        raise ValueError(f"mcq_set.letters must be distinct capital letters, got {mcq.letters!r}")
    if mcq.limit is not None and mcq.limit < 1:
        raise ValueError(f"mcq_set.limit must be >= 1 or null, got {mcq.limit}")
    if mcq.batch_size < 1:
        raise ValueError(f"mcq_set.batch_size must be >= 1, got {mcq.batch_size}")


def _check_system(spec: SystemSpec, kind: Kind, generation: GenerationSettings) -> None:
    """Fail now, not after generating the other systems."""
    if kind == "endpoint":
        _check_endpoint(spec, generation)
    elif kind == "run":
        from medsft.training.runs import read_run_config

        read_run_config(resolve_run_dir(spec.path))  # read now (the ablation table reads it)
    elif kind == "answers" and not os.path.exists(spec.path):
        raise FileNotFoundError(f"system {spec.name!r}: answers file {spec.path!r} does not exist")
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


def _check_base_url(base_url: str, what: str, key_env: str) -> None:
    """A URL safe to save in config.yaml and the report: no key in it."""
    parts = urlsplit(base_url)
    if parts.username or parts.password or parts.query:
        raise ValueError(
            f"{what} must not carry credentials or a query string; export the key in the "
            f"environment variable named by api_key_env ({key_env})"
        )


def _check_endpoint(spec: SystemSpec, generation: GenerationSettings) -> None:
    where = f"system {spec.name!r}"
    if spec.base_url:
        _check_base_url(spec.base_url, f"{where}: base_url", spec.api_key_env)
    elif not os.environ.get(spec.api_key_env):
        raise ValueError(
            f"{where}: an OpenAI endpoint needs its key: export {spec.api_key_env} (the system's "
            "api_key_env), or set base_url to your own server (vLLM, SGLang)"
        )
    if spec.concurrency < 1 or spec.timeout <= 0 or spec.max_retries < 0:
        raise ValueError(
            f"{where}: concurrency must be >= 1, timeout > 0 and max_retries >= 0; got "
            f"{spec.concurrency}, {spec.timeout} and {spec.max_retries}"
        )
    if spec.base_url is None and spec.server not in ("auto", "openai"):
        raise ValueError(
            f"{where}: server: {spec.server} needs the server's base_url (without base_url the "
            "system asks OpenAI)"
        )
    # A kind known without asking the server: a setting it cannot take stops the run now.
    if spec.server != "auto":
        endpoint_fields(spec, generation, spec.server, "the system's server setting")
    elif spec.base_url is None:
        endpoint_fields(spec, generation, "openai", "OpenAI's API")


class JudgeStatus(NamedTuple):
    """Whether the judge runs, decided before anything slow runs."""

    run: bool
    reason: str
    """Why not, or which endpoint it asks."""


def judge_status(config: EvalConfig) -> JudgeStatus:
    """Whether the judge runs and why (not), decided before anything slow runs; a bad
    `judge.labels` file raises InputError naming its line and field."""
    judge = config.judge
    _check_judge_settings(judge)
    if judge.labels is not None:
        read_labels(judge.labels, [s.name for s in config.systems])
    if judge.enabled is False:
        return JudgeStatus(False, "disabled (judge.enabled: false)")
    if config.baseline is None:
        if judge.enabled:
            raise ValueError("judge.enabled: true needs a baseline: set baseline to a system name")
        return JudgeStatus(False, "no baseline system (set baseline: <system name>)")
    has_key = bool(os.environ.get(judge.api_key_env))
    if judge.base_url is None and not has_key:
        reason = (
            f"no judge endpoint configured: set --judge.base_url for an OpenAI-compatible server, "
            f"or export {judge.api_key_env} for OpenAI"
        )
        if judge.enabled:
            raise ValueError(f"judge.enabled: true but {reason}")
        return JudgeStatus(False, reason)
    second = judge.compare_with
    if second is not None and second.base_url is None and not os.environ.get(second.api_key_env):
        raise ValueError(
            f"judge.compare_with asks OpenAI but {second.api_key_env} is not set: export the key "
            "there (judge.compare_with.api_key_env), or set judge.compare_with.base_url"
        )
    return JudgeStatus(True, judge.base_url or "OpenAI")


def _check_judge_settings(judge: JudgeSettings) -> None:
    judge.validate()
    if not 0 <= judge.max_failed_share <= 1:
        raise ValueError(
            f"judge.max_failed_share must be a share in [0, 1] (e.g. 0.05), got "
            f"{judge.max_failed_share}"
        )
    if judge.base_url:
        _check_base_url(judge.base_url, "judge.base_url", judge.api_key_env)
    if judge.compare_with is not None:
        second = judge.second_settings()
        second.validate()
        if second.base_url:
            _check_base_url(second.base_url, "judge.compare_with.base_url", second.api_key_env)
    files = {"template": judge.template, "system_prompt": judge.system_prompt}
    files["rubric"] = judge.rubric if isinstance(judge.rubric, str) else None
    for name, path in files.items():
        if path is not None and not os.path.isfile(path):
            raise FileNotFoundError(f"judge.{name}: file {path!r} does not exist")
