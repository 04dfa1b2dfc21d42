"""The judge's chat-completions client and its abort policy: what is retried, what stops judging.

Retries: the `openai` client's own (`max_retries`): HTTP 408/409/429/5xx, timeouts and dropped
connections, with its backoff and the server's Retry-After. This module adds only what the client
does not do: a retry of a malformed 200 reply, and the label follow-up below. Judging stops at
once (`JudgeConfigError`) on what every request would meet: a rejected key (401/403), an unknown
model (404), a request setting the endpoint rejects (HTTP 400 naming `temperature`, `max_tokens`,
...: reasoning models such as GPT-5 take neither a non-default temperature nor max_tokens, but
`max_completion_tokens`), the first `REJECTED_AFTER` requests all rejected as invalid, or
`UNREACHABLE_AFTER` requests in a row that could not connect. Any other failure is one order's
error (`JudgeOrder.error`), recorded on its pair while the run goes on.

Label retry: a reply without an explicit verdict (medsft.metrics.verdict) is not sent again as is
(at temperature 0 the same request tends to get the same reply, paid twice). The conversation
goes on instead: the reply as the assistant's turn, then the prompt's follow-up as a user turn
asking for the label alone. The reply kept (and cached) is every reply of that conversation,
joined by a blank line, so the reasons and the verdict are both there.

The API key is only handed to the `openai` client and redacted from any error text.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from medsft.cache import JsonlStore
from medsft.metrics.judge_result import JudgeUsage
from medsft.metrics.verdict import Label, parse_verdict

if TYPE_CHECKING:
    from openai import AsyncOpenAI


class JudgeConfigError(RuntimeError):
    """The judge cannot run at all: no API key, a rejected key, or an unknown model/endpoint."""


class _PairError(Exception):
    """One order could not be judged; recorded on the pair, the run goes on."""

    def __init__(self, message: str, raw: str | None = None) -> None:
        super().__init__(message)
        self.raw = raw


class _Malformed(Exception):
    """A 200 reply that is not a usable chat completion."""


@dataclass
class JudgeOrder:
    """The judgement of one answer order: its verdict, the reply kept, or why it failed."""

    label: Label | None
    raw: str | None
    cached: bool
    error: str | None = None


# Attempts of the request in flight in this task: the openai client retries inside one call.
_ATTEMPTS: ContextVar[list[int] | None] = ContextVar("judge_attempts", default=None)

UNREACHABLE_AFTER = 3
"""Requests in a row that failed to connect (after the client's retries) before judging stops."""
REJECTED_AFTER = 3
"""HTTP 400 replies before any verdict after which judging stops (the settings are wrong)."""

# What to change when the endpoint rejects a request setting (OpenAI's `param` of a 400).
_SETTING_ADVICE = {
    "temperature": "set temperature to null (judge.temperature: null); reasoning models such "
    "as GPT-5 accept only their default",
    "max_tokens": "send max_completion_tokens instead (judge.max_tokens: null, "
    "judge.max_completion_tokens: N); reasoning models such as GPT-5 reject max_tokens",
    "max_completion_tokens": "send max_tokens instead (judge.max_completion_tokens: null, "
    "judge.max_tokens: N); this endpoint does not know max_completion_tokens",
}


@dataclass
class JudgeClient:
    """Judges rendered prompts through one endpoint: cache, concurrency, retries, usage."""

    client: AsyncOpenAI = field(repr=False)
    model: str
    params: dict[str, Any]
    cache: JsonlStore
    semaphore: asyncio.Semaphore
    max_retries: int
    label_retries: int
    follow_up: str
    endpoint: str | None
    secret: str | None = field(default=None, repr=False)
    usage: JudgeUsage = field(default_factory=JudgeUsage)
    verdicts: int = 0
    rejected: int = 0
    unreachable: int = 0

    def redact(self, text: str) -> str:
        """`text` with the API key replaced by `***`."""
        return text.replace(self.secret, "***") if self.secret else text

    async def count_request(self, request: Any) -> None:
        """httpx request hook: every HTTP request, the client's own retries included."""
        self.usage.requests += 1
        attempts = _ATTEMPTS.get()
        if attempts is not None:
            attempts[0] += 1

    def cached(self, key: str) -> JudgeOrder | None:
        """The cached judgement under `key` when it holds a verdict (counted as cached usage)."""
        entry = self.cache.get(key)
        if entry is None or parse_verdict(str(entry.get("raw", ""))) is None:
            return None
        usage = entry.get("usage") or {}
        self.usage.cached_judgements += 1
        self.usage.cached_prompt_tokens += int(usage.get("prompt_tokens", 0))
        self.usage.cached_completion_tokens += int(usage.get("completion_tokens", 0))
        return JudgeOrder(parse_verdict(entry["raw"]), entry["raw"], cached=True)

    async def judge(self, key: str, messages: list[dict[str, str]]) -> JudgeOrder:
        """The judgement of one rendered prompt: from the cache, else asked (a failure is the
        order's error; a `JudgeConfigError` stops judging)."""
        cached = self.cached(key)
        if cached is not None:
            return cached
        async with self.semaphore:
            try:
                return await self._judge_uncached(key, messages)
            except _PairError as exc:
                return JudgeOrder(None, exc.raw, cached=False, error=str(exc))

    async def _judge_uncached(self, key: str, messages: list[dict[str, str]]) -> JudgeOrder:
        prompt_tokens = completion_tokens = 0
        replies: list[str] = []
        for _ in range(self.label_retries + 1):
            # After an unlabeled reply, the conversation goes on (see the module docstring).
            request = list(messages)
            for said in replies:
                request += [{"role": "assistant", "content": said}] if said else []
                request.append({"role": "user", "content": self.follow_up})
            raw, p, c = await self._complete(request)
            replies.append(raw)
            prompt_tokens, completion_tokens = prompt_tokens + p, completion_tokens + c
            self.usage.prompt_tokens += p
            self.usage.completion_tokens += c
            label = parse_verdict(raw)
            if label is not None:
                self.verdicts += 1
                kept = _joined(replies)
                usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}
                self.cache.put(
                    {"key": key, "model": self.model, "label": label, "raw": kept, "usage": usage}
                )
                return JudgeOrder(label, kept, cached=False)
        attempts = self.label_retries + 1
        message = f"no verdict label in the judge's reply ({attempts} attempt(s))"
        raise _PairError(message, _joined(replies))

    async def _complete(self, messages: list[dict[str, str]]) -> tuple[str, int, int]:
        """One chat completion. The openai client retries 408/409/429/5xx, timeouts and dropped
        connections itself (honouring Retry-After); a malformed 200 reply is retried here."""
        import openai

        attempts = [0]
        token = _ATTEMPTS.set(attempts)
        try:
            for malformed in range(self.max_retries + 1):
                try:
                    completion = await self.client.chat.completions.create(
                        model=self.model, messages=messages, **self.params
                    )
                    content = _content(completion)
                    self.unreachable = 0
                    return content
                except (_Malformed, openai.APIResponseValidationError, ValueError) as exc:
                    # ValueError: the client could not decode a body sent as JSON.
                    reason = f"malformed response ({self.redact(str(exc))[:200]})"
                    if malformed < self.max_retries:
                        await asyncio.sleep(min(8.0, 0.5 * 2**malformed) * random.uniform(0.5, 1))
                except openai.APIStatusError as exc:
                    self._status_error(exc)
                    reason = f"HTTP {exc.status_code}: {self.redact(exc.message)}"
                    break
                except openai.APITimeoutError:
                    reason = "timeout"
                    break
                except openai.APIConnectionError as exc:
                    reason = f"connection error ({self.redact(str(exc.__cause__ or exc))})"
                    self._unreachable(reason)
                    break
            raise _PairError(f"gave up after {attempts[0]} attempt(s): {reason}")
        finally:
            _ATTEMPTS.reset(token)

    def _status_error(self, exc: Any) -> None:
        """Stop judging on errors every request would get; return for a per-pair error."""
        status = exc.status_code
        if status in (401, 403):
            # The body may echo part of the key, so it is not passed on.
            raise JudgeConfigError(
                f"judge endpoint refused the API key (HTTP {status}); check the key's "
                "environment variable and base_url"
            ) from None
        if status == 404:
            raise JudgeConfigError(
                f"judge endpoint answered 404 for model {self.model!r}: {self.redact(exc.message)}"
            ) from None
        if status != 400:
            return
        self.rejected += 1
        body = exc.body if isinstance(exc.body, dict) else {}
        param = body.get("param") if isinstance(body.get("param"), str) else None
        if param in self.params or param in _SETTING_ADVICE:
            advice = _SETTING_ADVICE.get(param, f"change or drop the judge setting {param}")
            raise JudgeConfigError(
                f"judge endpoint rejected the request setting {param!r} (HTTP 400: "
                f"{self.redact(exc.message)}); {advice}"
            ) from None
        if self.verdicts == 0 and self.rejected >= REJECTED_AFTER:
            raise JudgeConfigError(
                f"judge endpoint rejected the first {self.rejected} requests as invalid (HTTP "
                f"400: {self.redact(exc.message)}); check the judge's model, temperature and "
                "max_tokens / max_completion_tokens settings"
            ) from None
        raise _PairError(f"HTTP 400: {self.redact(exc.message)}") from None

    def _unreachable(self, reason: str) -> None:
        self.unreachable += 1
        if self.unreachable >= UNREACHABLE_AFTER:
            raise JudgeConfigError(
                f"judge endpoint {self.endpoint} is unreachable: {self.unreachable} requests in a "
                f"row failed to connect after {self.max_retries} retries each ({reason}); start "
                "the server or fix base_url"
            )


def _joined(replies: list[str]) -> str:
    """The replies of one judgement (the first, then any label follow-ups), blank-line apart."""
    return "\n\n".join(r for r in replies if r.strip()) or replies[-1]


def _content(completion: Any) -> tuple[str, int, int]:
    """(message content, prompt tokens, completion tokens) of a chat completion."""
    try:
        content = completion.choices[0].message.content
    except (AttributeError, IndexError, TypeError, KeyError):
        raise _Malformed(f"not a chat completion: {str(completion)[:100]!r}") from None
    usage = getattr(completion, "usage", None)
    prompt = getattr(usage, "prompt_tokens", 0) or 0
    generated = getattr(usage, "completion_tokens", 0) or 0
    # None content (a refusal, a filtered reply) goes through the label retry like any unlabeled one.
    return content or "", int(prompt), int(generated)


def request_params(
    temperature: float | None, max_tokens: int | None, max_completion_tokens: int | None
) -> dict[str, Any]:
    """The request settings sent with every judge request (None values left out)."""
    params = {
        "temperature": temperature,
        "max_tokens": max_tokens,
        "max_completion_tokens": max_completion_tokens,
    }
    return {name: value for name, value in params.items() if value is not None}


def make_client(
    secret: str | None,
    base_url: str | None,
    timeout: float,
    max_retries: int,
    on_request: Callable[[Any], Coroutine[Any, Any, None]],
) -> AsyncOpenAI:
    """The `openai` async client, calling `on_request` for every HTTP request it sends."""
    import openai

    http = getattr(openai, "DefaultAsyncHttpx2Client", None) or openai.DefaultAsyncHttpxClient
    return openai.AsyncOpenAI(
        api_key=secret or "EMPTY",
        base_url=base_url,
        timeout=timeout,
        max_retries=max_retries,
        http_client=http(event_hooks={"request": [on_request]}),
    )
