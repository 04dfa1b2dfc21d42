"""Pairwise LLM-as-a-judge with position swap, for comparing two systems' answers.

Each pair is judged twice, once with system A's answer shown as Assistant 1 (order "ab") and once
with system B's answer there (order "ba"), because a single order measures position bias as much
as quality (MT-bench: GPT-4's verdict survived the swap only about two times in three). How the two
verdicts make a pair's outcome, and the rates, are in medsft.metrics.judge_result.

This module is the entry (`judge_pairs`, `ajudge_pairs`); the parts live beside it:

- medsft.metrics.verdict: reading a reply's explicit final verdict (`parse_verdict`);
- medsft.metrics.judge_prompt: packaged prompts per language (`PROMPTS`) and their rendering;
- medsft.metrics.judge_client: the endpoint client, its retries and when judging stops
  (`JudgeConfigError`);
- medsft.metrics.judge_result: `JudgeResult`, `PairRecord`, `JudgeUsage`;
- medsft.metrics.length_control: the length-controlled win rate.

Verdicts: the English prompt asks for one of `LABELS`, the Chinese one (`language="zh"`) for one
of `LABELS_ZH` (助手1更好 / 助手1更差 / 两者相当); `parse_verdict` recognises both sets in any reply.

The API key is read from the environment by name and only handed to the `openai` client; it is
never stored in the cache, the result, any error text or any repr. Cached replies (medsft.cache)
are keyed by what was asked: the endpoint (without credentials, however its URL is spelled:
`localhost` = `127.0.0.1`, a trailing slash or default port changes nothing), the model, the
request parameters and the rendered prompt.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, ParamSpec, TypeVar

from tqdm.auto import tqdm

from medsft.cache import JsonlStore, digest
from medsft.metrics.endpoint import endpoint_key, public_url
from medsft.metrics.judge_client import (
    REJECTED_AFTER,
    UNREACHABLE_AFTER,
    JudgeClient,
    JudgeConfigError,
    JudgeOrder,
    make_client,
    request_params,
)
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
    "REJECTED_AFTER",
    "TEMPLATE_DIR",
    "UNREACHABLE_AFTER",
    "JudgeConfigError",
    "JudgePrompt",
    "JudgeResult",
    "JudgeUsage",
    "Label",
    "Language",
    "Outcome",
    "PairRecord",
    "ajudge_pairs",
    "judge_pairs",
    "parse_verdict",
]


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


def _check_settings(
    model: str,
    concurrency: int,
    max_retries: int,
    label_retries: int,
    timeout: float,
    max_tokens: int | None,
    max_completion_tokens: int | None,
) -> None:
    if not model or not model.strip():
        raise ValueError("model must name the judge model")
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    if max_retries < 0 or label_retries < 0:
        raise ValueError("max_retries and label_retries must be >= 0")
    if timeout <= 0:
        raise ValueError(f"timeout must be > 0, got {timeout}")
    if max_tokens is not None and max_completion_tokens is not None:
        raise ValueError(
            "give max_tokens or max_completion_tokens, not both (reasoning models such as GPT-5 "
            "take only max_completion_tokens)"
        )


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
    endpoint = endpoint_key(str(judge.client.base_url))
    keys: list[tuple[str, str]] = []
    tasks: dict[str, asyncio.Task[JudgeOrder]] = {}
    for question, a, b in zip(questions, answers_a, answers_b, strict=True):
        pair_keys = []
        for first, second in ((a, b), (b, a)):
            messages = prompt.messages(question, first, second)
            # The rendered messages fix template, rubric, question, both answers and their order.
            key = digest([endpoint, judge.model, judge.params, messages])
            if key not in tasks:
                tasks[key] = asyncio.ensure_future(judge.judge(key, messages))
            pair_keys.append(key)
        keys.append((pair_keys[0], pair_keys[1]))
    return keys, tasks


async def _gather(tasks: dict[str, asyncio.Task[JudgeOrder]], model: str, progress: bool) -> None:
    """Wait for every judgement, with a progress bar; a JudgeConfigError cancels the rest."""
    bar = tqdm(total=len(tasks), desc=f"judging with {model}", unit="call", disable=not progress)
    errors = 0
    try:
        for future in asyncio.as_completed(list(tasks.values())):
            errors += (await future).error is not None
            bar.update()
            if errors:
                bar.set_postfix(errors=errors, refresh=False)
    finally:
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        bar.close()


async def ajudge_pairs(
    questions: Sequence[str],
    answers_a: Sequence[str],
    answers_b: Sequence[str],
    *,
    model: str,
    base_url: str | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    concurrency: int = 8,
    cache_path: str | os.PathLike[str] | None = None,
    language: Language = "en",
    template: str | os.PathLike[str] | None = None,
    rubric: bool | str | os.PathLike[str] = True,
    system_prompt: str | None = None,
    temperature: float | None = 0.0,
    max_tokens: int | None = None,
    max_completion_tokens: int | None = None,
    timeout: float = 60.0,
    max_retries: int = 5,
    label_retries: int = 1,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    progress: bool = True,
) -> JudgeResult:
    """Compare system A's answers with system B's using an LLM judge, in both answer orders.

    `judge_pairs` is the blocking form (it runs this with `asyncio.run`); inside an event loop,
    await this one instead. See the module docstring for how outcomes and errors are counted.

    Args:
        questions: one question per pair.
        answers_a: answers of system A (usually the fine-tuned model); rates are A's.
        answers_b: answers of system B, aligned with `questions`.
        model: judge model name, as the endpoint knows it.
        base_url: OpenAI-compatible endpoint (a vLLM or Ollama server, ...); None for OpenAI.
        api_key_env: environment variable holding the key. When it is unset and `base_url` is
            given, a placeholder key is sent (local servers usually need none).
        concurrency: most requests in flight at once.
        cache_path: JSONL file of replies, appended as they arrive; a rerun asking the same
            endpoint (however its URL is spelled), model, settings and prompt reuses them instead
            of paying again. None: no cache.
        language: `en` or `zh`: the packaged template, rubric, system message and label
            follow-up to use (see `PROMPTS`); verdicts are recognised in both languages.
        template: file replacing the prompt template; it must contain `{question}`,
            `{answer_1}` and `{answer_2}`, and `{rubric}` when a rubric is used.
        rubric: True for the packaged medical rubric, False for none, or a rubric file.
        system_prompt: system message; None: the language's packaged one; "": none.
        temperature: sampling temperature; None leaves it to the endpoint (reasoning models
            such as GPT-5 reject any but their default).
        max_tokens: reply length cap; None leaves it to the endpoint.
        max_completion_tokens: the cap as reasoning models (GPT-5, o-series) take it, instead
            of max_tokens.
        timeout: seconds per request before it is abandoned and retried.
        max_retries: retries per request, by the openai client, on 408/409/429/5xx, timeouts
            and dropped connections (with its exponential backoff, honouring Retry-After); also
            the retries of a malformed 200 reply.
        label_retries: follow-up requests (`LABEL_FOLLOW_UP`, after the unlabeled reply) when a
            reply has no verdict label, before the order is an error.
        n_resamples: bootstrap resamples for the interval.
        level: coverage of the interval.
        seed: bootstrap seed.
        progress: show a tqdm progress bar.

    Raises:
        JudgeConfigError: judging cannot go on: no or a rejected key, an unknown model, a
            request setting the endpoint rejects (HTTP 400), or an endpoint that cannot be
            reached (`UNREACHABLE_AFTER` requests in a row).
    """
    questions, answers_a, answers_b = _check_pairs(questions, answers_a, answers_b)
    _check_settings(
        model, concurrency, max_retries, label_retries, timeout, max_tokens, max_completion_tokens
    )
    secret = os.environ.get(api_key_env) or None
    if secret is None and base_url is None:
        raise JudgeConfigError(
            f"environment variable {api_key_env} is not set: export the judge's API key there, "
            "or pass base_url for a local server that needs no key"
        )
    prompt = load_prompt(language, template, rubric, system_prompt)
    params = request_params(temperature, max_tokens, max_completion_tokens)
    judge = JudgeClient(
        client=None,  # type: ignore[arg-type]  # set below: the client calls back into the judge
        model=model,
        params=params,
        cache=JsonlStore(cache_path, "judge cache"),
        semaphore=asyncio.Semaphore(concurrency),
        max_retries=max_retries,
        label_retries=label_retries,
        follow_up=prompt.follow_up,
        endpoint=None,
        secret=secret,
    )
    judge.client = make_client(secret, base_url, timeout, max_retries, judge.count_request)
    # The endpoint the client really uses (base_url, else OPENAI_BASE_URL, else OpenAI's), so a
    # model name served elsewhere never reuses these verdicts.
    judge.endpoint = public_url(str(judge.client.base_url))
    keys, tasks = _schedule(judge, prompt, questions, answers_a, answers_b)
    try:
        await _gather(tasks, model, progress)
    finally:
        judge.cache.close()
        await judge.client.close()

    records = [
        pair_record(
            i, questions[i], answers_a[i], answers_b[i], tasks[ab].result(), tasks[ba].result()
        )
        for i, (ab, ba) in enumerate(keys)
    ]
    return _result(
        records,
        judge.usage,
        model,
        base_url,
        prompt,
        rubric is not False,
        n_resamples=n_resamples,
        level=level,
        seed=seed,
    )


def _result(
    records: list[PairRecord],
    usage: JudgeUsage,
    model: str,
    base_url: str | None,
    prompt: JudgePromptText,
    rubric: bool,
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
        model=model,
        base_url=public_url(base_url),
        records=records,
        usage=usage,
        interval=interval,
        template_sha256=prompt.sha256,
        rubric=rubric,
        length_controlled=controlled,
    )


judge_pairs = _blocking(ajudge_pairs, "judge_pairs")
