"""Pairwise LLM-as-a-judge with position swap, for comparing two systems' answers.

Each pair is judged twice, once with system A's answer shown as Assistant 1 (order "ab") and once
with system B's answer there (order "ba"), because a single order measures position bias as much
as quality (MT-bench: GPT-4's verdict survived the swap only about two times in three). How the two
verdicts make a pair's outcome, and the rates, are in medsft.metrics.judge_result.

This module is the entry (`judge_pairs`, `ajudge_pairs`); the parts live beside it:

- medsft.metrics.verdict: reading a reply's explicit final verdict (`parse_verdict`);
- medsft.metrics.judge_prompt: packaged prompts per language (`PROMPTS`) and their rendering;
- medsft.metrics.judge_client: the judge's requests (cache, label follow-up) and
  `JudgeConfigError`, on medsft.metrics.endpoint, the client layer shared with endpoint systems
  (retries, errors, the key, when asking stops);
- medsft.metrics.judge_result: `JudgeResult`, `PairRecord`, `JudgeUsage`;
- medsft.metrics.length_control: the length-controlled win rate.

Verdicts: the English prompt asks for one of `LABELS`, the Chinese one (`language="zh"`) for one
of `LABELS_ZH` (助手1更好 / 助手1更差 / 两者相当); `parse_verdict` recognises both sets in any reply.

The judge's settings are one object, `JudgeSettings` (evaluate.py's `judge` section extends it);
`judge_pairs(questions, a, b, settings)` takes it whole, and keyword arguments set fields on top
of it (`judge_pairs(questions, a, b, model="gpt-4o-mini", base_url=...)` makes one).

The API key is read from the environment by name and only handed to the `openai` client; it is
never stored in the cache, the result, any error text or any repr. Cached replies (medsft.cache)
are keyed by what was asked: the endpoint (without credentials, however its URL is spelled:
`localhost` = `127.0.0.1`, a trailing slash or default port changes nothing), the model, the
request parameters and the rendered prompt.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from medsft.cache import JsonlStore, digest
from medsft.metrics.endpoint import SAME_FAILURE_AFTER, UNREACHABLE_AFTER, EndpointClient, run_all
from medsft.metrics.judge_client import JUDGE_WORDING, JudgeClient, JudgeConfigError, JudgeOrder
from medsft.metrics.judge_prompt import (
    DEFAULT_SYSTEM_PROMPT,
    DEFAULT_TEMPLATE,
    LABEL_FOLLOW_UP,
    LABEL_FOLLOW_UP_ZH,
    MEDICAL_RUBRIC,
    PROMPTS,
    TEMPLATE_DIR,
    JudgePrompt,
    JudgePromptText,
    Language,
    load_prompt,
)
from medsft.metrics.judge_result import (
    SCORE,
    JudgeResult,
    JudgeUsage,
    Outcome,
    PairRecord,
    pair_record,
)
from medsft.metrics.length_control import length_controlled_win_rate
from medsft.metrics.servers import public_url, request_fields
from medsft.metrics.stats import bootstrap_interval, mean_statistic
from medsft.metrics.verdict import LABELS, LABELS_ZH, Label, parse_verdict

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "DEFAULT_TEMPLATE",
    "LABELS",
    "LABELS_ZH",
    "LABEL_FOLLOW_UP",
    "LABEL_FOLLOW_UP_ZH",
    "MEDICAL_RUBRIC",
    "PROMPTS",
    "SAME_FAILURE_AFTER",
    "TEMPLATE_DIR",
    "UNREACHABLE_AFTER",
    "JudgeConfigError",
    "JudgePrompt",
    "JudgeResult",
    "JudgeSettings",
    "JudgeUsage",
    "Label",
    "Language",
    "Outcome",
    "PairRecord",
    "ajudge_pairs",
    "judge_pairs",
    "parse_verdict",
]


@dataclass(kw_only=True)
class JudgeSettings:
    """The judge: which model where, its prompt, its request settings (medsft.metrics.judge)."""

    model: str
    """Judge model name, as the endpoint knows it."""
    base_url: str | None = None
    """OpenAI-compatible endpoint (vLLM, Ollama, a proxy); null = OpenAI."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key (never put the key in a config). When it is
    unset and base_url is given, a placeholder key is sent (local servers usually need none)."""
    concurrency: int = 8
    """Requests in flight at once."""
    language: Language = "en"
    """Packaged prompt: `en`, or `zh` (Chinese template, rubric, system message and label
    follow-up; verdicts 助手1更好 / 助手1更差 / 两者相当). Verdicts are recognised in both
    languages either way."""
    template: str | None = None
    """Prompt template file replacing the packaged one ({question}, {answer_1}, {answer_2},
    and {rubric} when a rubric is used)."""
    system_prompt: str | None = None
    """System message; null = the language's packaged one; "" sends none."""
    rubric: bool | str = True
    """true: the packaged medical rubric of `language`; false: none; or a rubric file."""
    temperature: float | None = 0.0
    """Judge temperature; null leaves it to the endpoint (reasoning models such as GPT-5 accept
    only their default)."""
    max_tokens: int | None = None
    """Judge reply length cap (most endpoints); null leaves it to the endpoint."""
    max_completion_tokens: int | None = None
    """The cap as reasoning models (GPT-5, o-series) take it; use instead of max_tokens."""
    timeout: float = 60.0
    """Seconds per request before it is abandoned and retried."""
    max_retries: int = 5
    """Retries per request on rate limits, 5xx, timeouts and dropped connections (the openai
    client's own, with its backoff, honouring Retry-After); also the retries of a malformed 200
    reply."""
    label_retries: int = 1
    """Follow-up requests asking for the label alone when a reply has no verdict, before the
    order is an error."""

    def validate(self) -> None:
        """Raise ValueError, saying what to change, on settings that cannot work."""
        if not self.model or not self.model.strip():
            raise ValueError("judge model must name the judge model")
        if self.concurrency < 1:
            raise ValueError(f"judge concurrency must be >= 1, got {self.concurrency}")
        if self.max_retries < 0 or self.label_retries < 0:
            raise ValueError("judge max_retries and label_retries must be >= 0")
        if self.timeout <= 0:
            raise ValueError(f"judge timeout must be > 0, got {self.timeout}")
        if self.max_tokens is not None and self.max_completion_tokens is not None:
            raise ValueError(
                "give the judge max_tokens or max_completion_tokens, not both (reasoning models "
                "such as GPT-5 take only max_completion_tokens)"
            )

    def request_settings(self) -> dict[str, Any]:
        """The request settings every judge request sends (None: left to the endpoint)."""
        return {
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "max_completion_tokens": self.max_completion_tokens,
        }


def _check_texts(name: str, values: Sequence[str]) -> list[str]:
    values = list(values)
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise TypeError(f"{name}[{i}] must be a str, got {type(value).__name__}")
        if not value.strip():
            raise ValueError(f"{name}[{i}] is empty")
    return values


P = ParamSpec("P")
R = TypeVar("R")


def _blocking(fn: Callable[P, Coroutine[Any, Any, R]], name: str) -> Callable[P, R]:
    """`fn` run to completion with `asyncio.run`, keeping its signature for help() and IDEs."""

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(fn(*args, **kwargs))
        raise RuntimeError(
            f"{name}() cannot run inside a running event loop; use `await {fn.__name__}(...)`"
        )

    run.__name__ = run.__qualname__ = name
    run.__doc__ = f"Blocking form of `{fn.__name__}` (runs it with `asyncio.run`).\n\n{fn.__doc__}"
    return run


def _check_pairs(
    questions: Sequence[str], answers_a: Sequence[str], answers_b: Sequence[str]
) -> tuple[list[str], list[str], list[str]]:
    questions = _check_texts("questions", questions)
    answers_a = _check_texts("answers_a", answers_a)
    answers_b = _check_texts("answers_b", answers_b)
    if not len(questions) == len(answers_a) == len(answers_b):
        raise ValueError(
            f"questions, answers_a and answers_b differ in length: "
            f"{len(questions)}, {len(answers_a)}, {len(answers_b)}"
        )
    if not questions:
        raise ValueError("nothing to judge: questions is empty")
    return questions, answers_a, answers_b


def _schedule(
    judge: JudgeClient,
    prompt: JudgePromptText,
    questions: list[str],
    answers_a: list[str],
    answers_b: list[str],
) -> tuple[list[tuple[str, str]], dict[str, asyncio.Task[JudgeOrder]]]:
    """Each pair's two cache keys (ab, ba), and one task per distinct prompt: identical prompts
    (a repeated question, or A == B) are sent once."""
    endpoint, model = judge.endpoint.key, judge.endpoint.model
    keys: list[tuple[str, str]] = []
    tasks: dict[str, asyncio.Task[JudgeOrder]] = {}
    for question, a, b in zip(questions, answers_a, answers_b, strict=True):
        pair_keys = []
        for first, second in ((a, b), (b, a)):
            messages = prompt.messages(question, first, second)
            # The rendered messages fix template, rubric, question, both answers and their order.
            key = digest([endpoint, model, judge.params, messages])
            if key not in tasks:
                tasks[key] = asyncio.ensure_future(judge.judge(key, messages))
            pair_keys.append(key)
        keys.append((pair_keys[0], pair_keys[1]))
    return keys, tasks


async def ajudge_pairs(
    questions: Sequence[str],
    answers_a: Sequence[str],
    answers_b: Sequence[str],
    settings: JudgeSettings | None = None,
    *,
    cache_path: str | os.PathLike[str] | None = None,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    progress: bool = True,
    **fields: Any,
) -> JudgeResult:
    """Compare system A's answers with system B's using an LLM judge, in both answer orders.

    `judge_pairs` is the blocking form (it runs this with `asyncio.run`); inside an event loop,
    await this one instead. See the module docstring for how outcomes and errors are counted.

    Args:
        questions: one question per pair.
        answers_a: answers of system A (usually the fine-tuned model); rates are A's.
        answers_b: answers of system B, aligned with `questions`.
        settings: the judge (`JudgeSettings`: model, endpoint, prompt, request settings).
        cache_path: JSONL file of replies, appended as they arrive; a rerun asking the same
            endpoint (however its URL is spelled), model, settings and prompt reuses them instead
            of paying again. None: no cache.
        n_resamples: bootstrap resamples for the interval.
        level: coverage of the interval.
        seed: bootstrap seed.
        progress: show a tqdm progress bar.
        **fields: `JudgeSettings` fields, set on top of `settings` (or making them, e.g.
            `judge_pairs(q, a, b, model="gpt-4o-mini")`).

    Raises:
        JudgeConfigError: judging cannot go on: no or a rejected key, an unknown model, a
            request the endpoint rejects before any verdict or naming a setting, the first
            requests failing alike, or an endpoint that cannot be reached (`UNREACHABLE_AFTER`
            requests in a row).
    """
    questions, answers_a, answers_b = _check_pairs(questions, answers_a, answers_b)
    settings = _settings(settings, fields)
    if not os.environ.get(settings.api_key_env) and settings.base_url is None:
        raise JudgeConfigError(
            f"environment variable {settings.api_key_env} is not set: export the judge's API key "
            "there, or pass base_url for a local server that needs no key"
        )
    prompt = load_prompt(
        settings.language, settings.template, settings.rubric, settings.system_prompt
    )
    params = request_fields("openai", settings.request_settings())
    endpoint = EndpointClient(settings, settings.model, JUDGE_WORDING, stop=JudgeConfigError)
    judge = JudgeClient(
        endpoint=endpoint,
        params=params,
        cache=JsonlStore(cache_path, "judge cache"),
        label_retries=settings.label_retries,
        follow_up=prompt.follow_up,
    )
    keys, tasks = _schedule(judge, prompt, questions, answers_a, answers_b)
    try:
        await run_all(
            list(tasks.values()),
            desc=f"judging with {settings.model}",
            unit="call",
            progress=progress,
            failed=lambda order: order.error is not None,
        )
    finally:
        judge.cache.close()
        judge.usage.requests = endpoint.requests
        await endpoint.client.close()

    records = [
        pair_record(
            i, questions[i], answers_a[i], answers_b[i], tasks[ab].result(), tasks[ba].result()
        )
        for i, (ab, ba) in enumerate(keys)
    ]
    return _result(
        records,
        judge.usage,
        settings,
        prompt,
        n_resamples=n_resamples,
        level=level,
        seed=seed,
    )


def _settings(settings: JudgeSettings | None, fields: dict[str, Any]) -> JudgeSettings:
    """`settings` with `fields` set on top, checked."""
    names = {f.name for f in dataclasses.fields(JudgeSettings)}
    unknown = sorted(set(fields) - names)
    if unknown:
        raise TypeError(
            f"unknown judge setting(s) {', '.join(unknown)}; JudgeSettings has {', '.join(sorted(names))}"
        )
    if settings is None:
        if "model" not in fields:
            raise ValueError("model must name the judge model (model=...)")
        settings = JudgeSettings(**fields)
    elif fields:
        settings = dataclasses.replace(settings, **fields)
    settings.validate()
    return settings


def _result(
    records: list[PairRecord],
    usage: JudgeUsage,
    settings: JudgeSettings,
    prompt: JudgePromptText,
    **bootstrap: Any,
) -> JudgeResult:
    judged = [r for r in records if r.outcome != "error"]
    interval = controlled = None
    if judged:
        scores = [SCORE[r.outcome] for r in judged]
        interval = bootstrap_interval(len(judged), mean_statistic(scores), **bootstrap)
        # Length in characters of the stripped answers, as the report's length table counts.
        controlled = length_controlled_win_rate(
            scores,
            [len(r.answer_a.strip()) for r in judged],
            [len(r.answer_b.strip()) for r in judged],
            **bootstrap,
        )
    if len(judged) < len(records):
        log.warning(
            "judge: %d of %d pairs failed and are left out of the rates (see records[].error)",
            len(records) - len(judged),
            len(records),
        )
    return JudgeResult(
        model=settings.model,
        base_url=public_url(settings.base_url),
        records=records,
        usage=usage,
        interval=interval,
        template_sha256=prompt.sha256,
        rubric=settings.rubric is not False,
        length_controlled=controlled,
    )


judge_pairs = _blocking(ajudge_pairs, "judge_pairs")
