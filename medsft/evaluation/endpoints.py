"""Endpoint systems: answers from an OpenAI-compatible chat endpoint (OpenAI, vLLM, SGLang, ...).

The questions are the model systems' (each test example's messages, system prompt included) and
so are the `generation` settings, mapped onto the chat completions API: greedy decoding sends
temperature 0; sampling sends temperature, top_p and each question's own seed (`prompt_seed`);
max_new_tokens is sent as `max_tokens`, or as `max_completion_tokens` with no temperature or
top_p for a reasoning model (`reasoning: true`: GPT-5, o-series take nothing else). A server of
one's own (`base_url` set: vLLM, SGLang) also gets what that API lacks, in `extra_body`: top_k,
repetition_penalty and Qwen3's thinking switch (`chat_template_kwargs`).

Answers are saved in `generations/<system>.jsonl` (medsft.cache) as they arrive, keyed by the
endpoint (`endpoint_key`: one spelling per server), the model, the messages and the request
settings: a rerun sends nothing, an interrupted one sends only what is missing. Retries are the
openai client's own (429, 5xx, timeouts, dropped connections; Retry-After honoured). A reply cut at
the token limit (`finish_reason: length`) is kept as it is, marked in its row and counted in the
report as a model system's cut answers are; never passed off as finished. Requests that still fail
stop the run after the others were saved, saying how many; a refused key, an unknown model or a
rejected setting stops it at once. The key is read from the environment variable `api_key_env`
and handed to the client only: it is in no file, log line or error message.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medsft.cache import JsonlStore, digest
from medsft.errors import UserError
from medsft.evaluation.config import EvalConfig, SystemSpec
from medsft.evaluation.generate import GenerationSettings, prompt_seed, split_think
from medsft.evaluation.models import is_global_zero
from medsft.evaluation.systems import SystemOutput
from medsft.evaluation.testset import Example
from medsft.metrics.endpoint import endpoint_key, public_url

log = logging.getLogger(__name__)

OPENAI_URL = "https://api.openai.com/v1"
CACHE_VERSION = 1


class EndpointError(UserError, RuntimeError):
    """An endpoint system could not be answered; the message says what to do."""


def request_params(spec: SystemSpec, settings: GenerationSettings) -> dict[str, Any]:
    """What every request of this system sends besides the model and messages (and the seed)."""
    params: dict[str, Any] = {}
    if spec.reasoning:
        params["max_completion_tokens"] = settings.max_new_tokens
    else:
        params["max_tokens"] = settings.max_new_tokens
        params["temperature"] = settings.temperature if settings.do_sample else 0.0
        if settings.do_sample:
            params["top_p"] = settings.top_p
    extra = spec.extra_body
    if extra is None and spec.base_url is not None:
        extra = {"chat_template_kwargs": {"enable_thinking": settings.enable_thinking}}
        if settings.do_sample and settings.top_k > 0:
            extra["top_k"] = settings.top_k
        if settings.repetition_penalty != 1.0:
            extra["repetition_penalty"] = settings.repetition_penalty
    if extra:
        params["extra_body"] = extra
    return params


@dataclass
class _Request:
    key: str
    index: int
    messages: list[dict[str, str]]
    params: dict[str, Any]


def endpoint_system(
    spec: SystemSpec,
    examples: list[Example],
    config: EvalConfig,
    out_dir: Path,
    *,
    what: str = "test set",
) -> SystemOutput | None:
    """The endpoint's answers to `examples`, asked for what the cache lacks (rank 0 only).

    Args:
        spec: the system (`kind: endpoint`; `path` is the model name the endpoint knows).
        examples: the questions, as for model systems.
        config: generation settings and `reuse`.
        out_dir: the cache goes to `out_dir/generations/<name>.jsonl`.
        what: the set answered, as the log names it.
    """
    if not is_global_zero():
        return None  # one process asks the endpoint; other ranks have nothing to do
    settings = config.generation
    params = request_params(spec, settings)
    url = spec.base_url or OPENAI_URL
    shown = public_url(spec.base_url) or "OpenAI"
    requests = []
    for ex in examples:
        messages = [dict(m) for m in ex.prompt]
        key = digest([CACHE_VERSION, endpoint_key(url), spec.path, messages, params])
        sent = {**params, "seed": prompt_seed(settings.seed, key)} if settings.do_sample else params
        requests.append(_Request(key, ex.index, messages, sent))
    store = JsonlStore(out_dir / "generations" / f"{spec.name}.jsonl", "endpoint answers")
    todo = list({r.key: r for r in requests if not (config.reuse and r.key in store)}.values())
    log.info(
        "%s: %s: asking %s (%s) for %d of %d answers",
        spec.name,
        what,
        shown,
        spec.path,
        len(todo),
        len(requests),
    )
    started = time.perf_counter()
    try:
        failures = asyncio.run(_ask_all(spec, todo, store, config.runtime.progress)) if todo else []
    finally:
        store.close()
    seconds = time.perf_counter() - started
    if failures:
        raise EndpointError(
            f"system {spec.name!r}: {len(failures)} of {len(todo)} requests to {shown} failed "
            f"after the client's {spec.max_retries} retries each (first: {failures[0]}); the "
            f"{len(todo) - len(failures)} answers received are saved in {store.path}: rerun to "
            "ask for the rest only"
        )
    rows = [{**store.entries[r.key], "index": i} for i, r in enumerate(requests)]
    store.rewrite(rows)
    return _output(spec, shown, rows, len(todo), seconds, store.path)


def _output(
    spec: SystemSpec,
    shown: str,
    rows: list[dict[str, Any]],
    asked: int,
    seconds: float,
    path: Path | None,
) -> SystemOutput:
    finish = Counter(row["finish_reason"] for row in rows)
    cut = finish["length"]
    if cut:
        log.warning(
            "%s: %d of %d answers were cut at the token limit (finish_reason: length); they are "
            "counted as cut in the report; raise generation.max_new_tokens to let them finish",
            spec.name,
            cut,
            len(rows),
        )
    new_tokens = [int(row["new_tokens"]) for row in rows]
    generation = {
        "endpoint": shown,
        "model": spec.path,
        "generated": asked,
        "reused": len(rows) - asked,
        "seconds": round(seconds, 3),
        "new_tokens": sum(new_tokens),
        "tokens_per_second": round(sum(new_tokens) / seconds, 2) if asked and seconds else 0.0,
        "world_size": 1,
        "finish_reasons": {"stop": finish["stop"], "length": cut, **finish},
        "mean_new_tokens": round(sum(new_tokens) / len(rows), 1),
        "file": str(path),
    }
    return SystemOutput(
        name=spec.name,
        kind="endpoint",
        source=f"{spec.path} @ {shown}",
        answers=[row["answer"] for row in rows],
        thinks=[row["think"] for row in rows],
        generation=generation,
        new_tokens=new_tokens,
    )


async def _ask_all(
    spec: SystemSpec, todo: list[_Request], store: JsonlStore, progress: bool
) -> list[str]:
    """Ask for every request (at most `concurrency` at once), saving each answer as it comes.
    Returns the reasons of the requests that failed; raises EndpointError on what every request
    would meet."""
    import openai
    from tqdm.auto import tqdm

    secret = os.environ.get(spec.api_key_env)
    client = openai.AsyncOpenAI(
        api_key=secret or "EMPTY",
        base_url=spec.base_url,
        timeout=spec.timeout,
        max_retries=spec.max_retries,
    )
    semaphore = asyncio.Semaphore(spec.concurrency)

    async def ask(request: _Request) -> str | None:
        async with semaphore:
            try:
                completion = await client.chat.completions.create(
                    model=spec.path, messages=request.messages, **request.params
                )
            except openai.APIStatusError as exc:
                return _status_error(spec, exc, request.params, secret)
            except (openai.APITimeoutError, openai.APIConnectionError) as exc:
                return _redact(f"{type(exc).__name__}: {exc}", secret)
        row = _row(completion, request)
        if row is None:
            return "malformed reply (no choices)"
        store.put(row)
        return None

    tasks = [asyncio.ensure_future(ask(r)) for r in todo]
    failures = []
    bar = tqdm(total=len(tasks), desc=f"{spec.name} via endpoint", unit="q", disable=not progress)
    try:
        for future in asyncio.as_completed(tasks):
            reason = await future
            bar.update()
            if reason is not None:
                failures.append(reason)
    finally:
        bar.close()
        for task in tasks:
            task.cancel()
        await client.close()
    return failures


def _row(completion: Any, request: _Request) -> dict[str, Any] | None:
    try:
        choice = completion.choices[0]
    except (AttributeError, IndexError, TypeError):
        return None
    text = choice.message.content or ""
    # vLLM/SGLang with a reasoning parser return the think block apart; otherwise it is inline.
    reasoning = getattr(choice.message, "reasoning_content", None)
    think, answer = (reasoning, text) if reasoning else split_think(text)
    usage = getattr(completion, "usage", None)
    return {
        "key": request.key,
        "question": request.messages[-1]["content"],
        "text": text,
        "think": think,
        "answer": answer,
        "finish_reason": choice.finish_reason or "unknown",
        "prompt_tokens": getattr(usage, "prompt_tokens", 0) or 0,
        "new_tokens": getattr(usage, "completion_tokens", 0) or 0,
        "served_by": getattr(completion, "model", None),
    }


_SETTING_ADVICE = {
    "temperature": "a reasoning model (GPT-5, o-series) takes only its default: set the "
    "system's reasoning: true",
    "top_p": "a reasoning model (GPT-5, o-series) takes only its default: set the system's "
    "reasoning: true",
    "max_tokens": "a reasoning model (GPT-5, o-series) takes max_completion_tokens: set the "
    "system's reasoning: true",
    "max_completion_tokens": "this endpoint takes max_tokens: set the system's reasoning: false",
}


def _status_error(spec: SystemSpec, exc: Any, params: dict[str, Any], secret: str | None) -> str:
    """The reason a request failed, or EndpointError when every request would fail alike."""
    status, message = exc.status_code, _redact(str(exc.message), secret)
    where = f"system {spec.name!r}: endpoint {public_url(spec.base_url) or 'OpenAI'}"
    if status in (401, 403):
        # The body may echo part of the key: not passed on.
        raise EndpointError(
            f"{where} refused the API key (HTTP {status}); export it in ${spec.api_key_env} "
            "(the system's api_key_env) and check base_url"
        ) from None
    if status == 404:
        raise EndpointError(f"{where} has no model {spec.path!r} (HTTP 404: {message})") from None
    body = exc.body if isinstance(exc.body, dict) else {}
    param = body.get("param")
    if status == 400 and isinstance(param, str) and (param in params or param in _SETTING_ADVICE):
        advice = _SETTING_ADVICE.get(param, f"drop {param} from the system's extra_body")
        raise EndpointError(f"{where} rejected {param!r} (HTTP 400: {message}); {advice}") from None
    return f"HTTP {status}: {message}"


def _redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text
