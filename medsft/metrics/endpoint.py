"""The one client layer for OpenAI-compatible chat endpoints, shared by the judge
(medsft.metrics.judge), endpoint systems (medsft.evaluation.endpoints) and LLM paraphrases
(medsft.data.paraphrase).

What it does once for all three:

- **The client** (`EndpointClient`): the `openai` async client, imported when a client is made
  (medsft.metrics stays light), every HTTP request counted, at most `concurrency` in flight.
- **Retries**: the openai client's own (`max_retries`: HTTP 408/409/429/5xx, timeouts, dropped
  connections, with its backoff and the server's Retry-After); here, a malformed 200 reply (a body
  that is not JSON or not a chat completion, or an empty answer where one is needed), up to
  `max_retries` times with backoff.
- **What stops asking** (`EndpointStop`, one line saying what to fix): a refused key (401/403),
  an unknown model or route (404), a request the server rejects (400/422) before any answer came
  back or naming a setting or the model sent, the first `SAME_FAILURE_AFTER` requests failing
  alike before any answer (a circuit breaker: the same server error would meet every request),
  or `UNREACHABLE_AFTER` requests in a row that could not connect. Any other failure is that
  request's (`RequestFailed`): the caller records it and goes on. After answers came back, a
  rejected request without a named setting is that request's own problem (a prompt too long for
  the context, a filtered one).
- **The server's reason in every error**: `server_message` reads OpenAI's `error.message`,
  FastAPI's `detail`, `message`, or the body's first line (the openai client keeps only
  `error.message`).
- **The key**: read from the environment variable the settings name, handed to the client
  only, redacted from all error text; the bodies of 401/403 replies are not shown (a server may
  echo part of the key, which redaction of the whole key would miss).
- **The server kind**: `EndpointClient.probe` tells a server's kind from its `/models`
  listing, `EndpointClient.server_kind` the kind to send for (a setting, or `auto`); which fields
  each kind takes, and how an endpoint is named, are medsft.metrics.servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from medsft.errors import UserError
from medsft.metrics.servers import OPENAI_URL, ServerKind, endpoint_key, public_url, server_kind

if TYPE_CHECKING:
    from openai import AsyncOpenAI

log = logging.getLogger(__name__)

UNREACHABLE_AFTER = 3
"""Requests in a row that failed to connect (after the client's retries) before asking stops."""
SAME_FAILURE_AFTER = 3
"""Failures alike, before any answer, after which asking stops (the circuit breaker)."""


class EndpointStop(UserError, RuntimeError):
    """Asking on cannot help: every request would fail alike. The message says what to fix."""


class RequestFailed(Exception):
    """One request failed after the retries; the caller records it and the run goes on."""


class Connection(Protocol):
    """Where and how to ask: the fields the judge's settings and an endpoint system share."""

    base_url: str | None
    api_key_env: str
    timeout: float
    max_retries: int
    concurrency: int


@dataclass(frozen=True)
class Wording:
    """How the stop messages name the caller and its settings (what the user changes)."""

    who: str
    """Who is asking where, e.g. `judge endpoint {endpoint}` (`{endpoint}`: the URL the client
    uses, without credentials)."""
    model_setting: str
    """Where the model name is set, e.g. `judge.model`."""
    key_setting: str
    """Where the key's environment variable is named, e.g. `judge.api_key_env`."""
    advice: Mapping[str, str] = field(default_factory=dict)
    """Request field -> what to change when the server rejects it."""
    setting: str = "change or drop the setting that sends {param}"
    """What to change for a rejected field without advice (`{param}` is its name)."""
    server_setting: str = "server"
    """Where the server kind is set, e.g. `paraphrase.server`."""


@dataclass
class Reply:
    """One chat completion as the callers use it."""

    content: str
    reasoning: str | None
    """The think block a server returned apart (vLLM, SGLang and `transformers serve`'s
    `reasoning_content`), if any."""
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    model: str | None
    """The model the server says answered."""


class _Malformed(Exception):
    """A 200 reply that is not a usable chat completion."""


# Attempts of the request in flight in this task: the openai client retries inside one call.
_ATTEMPTS: ContextVar[list[int] | None] = ContextVar("endpoint_attempts", default=None)
# The client whose concurrency slot this task holds (see EndpointClient.slot).
_HOLDER: ContextVar[EndpointClient | None] = ContextVar("endpoint_slot", default=None)


def redact(text: str, secret: str | None) -> str:
    """`text` with `secret` replaced by `***`."""
    return text.replace(secret, "***") if secret else text


def server_message(exc: Any, limit: int = 300) -> str:
    """The server's own reason for an HTTP error: OpenAI's `error.message`, FastAPI's `detail`
    (a validation error's list too), `message`, `error`, else the body's first line."""
    body = exc.body
    text = ""
    if isinstance(body, dict):
        for name in ("message", "detail", "error", "msg"):
            value = body.get(name)
            if isinstance(value, dict):
                value = value.get("message") or value.get("detail")
            if isinstance(value, list):  # FastAPI's 422: [{"loc": [...], "msg": ...}, ...]
                value = "; ".join(
                    f"{'.'.join(map(str, v.get('loc', [])))}: {v.get('msg')}"
                    if isinstance(v, dict)
                    else str(v)
                    for v in value
                )
            if isinstance(value, str) and value.strip():
                text = value
                break
        else:
            text = json.dumps(body, ensure_ascii=False)
    elif isinstance(body, str):
        text = body
    if not text.strip():
        response = getattr(exc, "response", None)
        text = getattr(response, "text", "") or ""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    first = lines[0] if lines else f"HTTP {exc.status_code} with no message"
    return first if len(first) <= limit else first[:limit] + "..."


class EndpointClient:
    """Asks one model at one OpenAI-compatible endpoint (see the module docstring).

    Use as `async with EndpointClient(...) as client:` (the HTTP client is closed on exit).

    Args:
        connection: base_url, api_key_env, timeout, max_retries, concurrency.
        model: the model name the endpoint knows.
        wording: how stop messages name the caller's settings.
        stop: the `EndpointStop` subclass to raise.
    """

    def __init__(
        self,
        connection: Connection,
        model: str,
        wording: Wording,
        stop: type[EndpointStop] = EndpointStop,
    ) -> None:
        import openai

        self.model = model
        self.wording = wording
        self.stop = stop
        self.api_key_env = connection.api_key_env
        self.max_retries = connection.max_retries
        self.timeout = connection.timeout
        self._secret = os.environ.get(connection.api_key_env) or None
        self._semaphore = asyncio.Semaphore(connection.concurrency)
        self._first_sent = False
        self._first_done = asyncio.Event()
        self._stopped: str | None = None
        """The message of the stop, once asking stopped."""
        self.requests = 0
        """HTTP requests sent, the client's own retries included."""
        self.answered = 0
        self.failures: list[str] = []
        """Reasons of the requests that failed (`RequestFailed`), in order."""
        self.unreachable = 0
        http = getattr(openai, "DefaultAsyncHttpx2Client", None) or openai.DefaultAsyncHttpxClient
        self.client: AsyncOpenAI = openai.AsyncOpenAI(
            api_key=self._secret or "EMPTY",
            base_url=connection.base_url,
            timeout=connection.timeout,
            max_retries=connection.max_retries,
            http_client=http(event_hooks={"request": [self._count_request]}),
        )
        # The endpoint the client really uses (base_url, else OPENAI_BASE_URL, else OpenAI's).
        self.endpoint = public_url(str(self.client.base_url)) or OPENAI_URL
        self.key = endpoint_key(str(self.client.base_url))

    @property
    def who(self) -> str:
        """Who asks where, as stop messages begin."""
        return self.wording.who.format(endpoint=self.endpoint)

    def __repr__(self) -> str:
        return f"EndpointClient(endpoint={self.endpoint!r}, model={self.model!r})"

    async def __aenter__(self) -> EndpointClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.close()

    def redact(self, text: str) -> str:
        """`text` with the API key replaced by `***`."""
        return redact(text, self._secret)

    async def _count_request(self, request: Any) -> None:
        self.requests += 1
        attempts = _ATTEMPTS.get()
        if attempts is not None:
            attempts[0] += 1

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the `concurrency` slots across several requests (a conversation, such
        as the judge's label follow-up); requests inside take no other."""
        if _HOLDER.get() is self:
            yield
            return
        async with self._semaphore:
            token = _HOLDER.set(self)
            try:
                yield
            finally:
                _HOLDER.reset(token)

    async def probe(self) -> ServerKind | None:
        """The server's kind, told from its `/models` listing (one request); None when the
        listing does not say or the server has none. A refused key or an unreachable server
        stops here."""
        import openai

        try:
            # Few retries: a server without the listing may answer 5xx, which the client retries.
            listing = self.client.with_options(max_retries=min(self.max_retries, 1)).models
            page = await listing.list()
        except openai.APIStatusError as exc:
            if exc.status_code in (401, 403):
                self._refused_key(exc.status_code)
            return None
        except openai.APIConnectionError as exc:
            raise self.stop(
                f"{self.who} is unreachable ({self.redact(str(exc.__cause__ or exc))}); "
                "start the server or fix base_url"
            ) from None
        except (openai.APIResponseValidationError, ValueError):
            return None
        return server_kind([m.model_dump() for m in page.data])

    async def server_kind(self, setting: ServerKind | Literal["auto"]) -> tuple[ServerKind, str]:
        """The kind of server to send requests for, and how it was decided: `setting` unless
        `auto`; `openai` for OpenAI's own API; else told by the server's `/models` listing (one
        request), `openai` when the listing does not say."""
        if setting != "auto":
            return setting, f"{self.wording.server_setting} setting"
        if self.endpoint == OPENAI_URL:
            return "openai", "OpenAI's API"
        probed = await self.probe()
        if probed is None:
            log.info(
                "%s: the server's /models listing does not say which server it is: sending "
                "OpenAI fields only (set %s: vllm, sglang or transformers to send more)",
                self.who,
                self.wording.server_setting,
            )
            return "openai", "its /models listing named no other kind"
        log.info("%s: the server is %s (from its /models listing)", self.who, probed)
        return probed, "told by its /models listing"

    async def complete(
        self, messages: list[dict[str, str]], params: Mapping[str, Any], *, empty_ok: bool = False
    ) -> Reply:
        """One chat completion, retried as the module docstring says. The first request goes
        alone: a wrong key, model or setting then stops after one request, not `concurrency`.

        Args:
            messages: the conversation.
            params: the other request fields (`request_fields`).
            empty_ok: accept a reply without content (else it is retried as malformed, unless
                cut at the token limit: the limit, not the server, left it empty).

        Raises:
            RequestFailed: this request failed; others may still be answered.
            EndpointStop: (the `stop` class) no request would be answered.
        """
        if not self._first_done.is_set():
            if self._first_sent:
                await self._first_done.wait()
            else:
                self._first_sent = True
                try:
                    return await self._complete(messages, params, empty_ok)
                finally:
                    self._first_done.set()
        return await self._complete(messages, params, empty_ok)

    async def _complete(
        self, messages: list[dict[str, str]], params: Mapping[str, Any], empty_ok: bool
    ) -> Reply:
        async with self.slot():
            # Requests waiting for a slot when asking stopped are not sent.
            if self._stopped is not None:
                raise self.stop(self._stopped)
            try:
                return await self._send(messages, params, empty_ok)
            except EndpointStop as exc:
                self._stopped = str(exc)
                raise

    async def _send(
        self, messages: list[dict[str, str]], params: Mapping[str, Any], empty_ok: bool
    ) -> Reply:
        import openai

        attempts = [0]
        token = _ATTEMPTS.set(attempts)
        try:
            for malformed in range(self.max_retries + 1):
                try:
                    completion = await self.client.chat.completions.create(
                        model=self.model, messages=messages, **params
                    )
                    reply = _reply(completion, empty_ok)
                except (_Malformed, openai.APIResponseValidationError, ValueError) as exc:
                    # ValueError: the client could not decode a body sent as JSON.
                    reason = f"malformed reply ({self.redact(str(exc))[:200]})"
                    if malformed < self.max_retries:
                        await asyncio.sleep(min(8.0, 0.5 * 2**malformed) * random.uniform(0.5, 1))
                    continue
                except openai.APIStatusError as exc:
                    reason = self._status_failure(exc, params)
                except openai.APITimeoutError:
                    reason = f"timed out after {self.timeout:g} s"
                except openai.APIConnectionError as exc:
                    reason = f"connection error ({self.redact(str(exc.__cause__ or exc))})"
                    self._unreachable(reason)
                else:
                    self.unreachable = 0
                    self.answered += 1
                    return reply
                break
            raise self._failed(reason, attempts[0])
        finally:
            _ATTEMPTS.reset(token)

    def _failed(self, reason: str, attempts: int) -> RequestFailed:
        """The request's failure; the circuit breaker stops when the first ones are alike."""
        self.failures.append(reason)
        first = self.failures[:SAME_FAILURE_AFTER]
        if not self.answered and len(first) == SAME_FAILURE_AFTER and len(set(first)) == 1:
            raise self.stop(
                f"{self.who}: the first {SAME_FAILURE_AFTER} requests all failed alike "
                f"after the client's {self.max_retries} retries each ({reason}); stopped there "
                "rather than send the same request for every question: fix the server or the "
                "settings and rerun"
            )
        return RequestFailed(f"gave up after {attempts} attempt(s): {reason}")

    def _refused_key(self, status: int) -> None:
        # The body may echo part of the key, which redacting the whole key would not catch.
        raise self.stop(
            f"{self.who} refused the API key (HTTP {status}); export it in "
            f"${self.api_key_env} ({self.wording.key_setting}) and check base_url"
        ) from None

    def _status_failure(self, exc: Any, params: Mapping[str, Any]) -> str:
        """The reason of a request the server answered with an HTTP error, or a stop when every
        request would get it (see the module docstring)."""
        status = exc.status_code
        self.unreachable = 0
        if status in (401, 403):
            self._refused_key(status)
        message = self.redact(server_message(exc))
        who, model = self.who, self.model
        if status == 404:
            raise self.stop(
                f"{who} answered HTTP 404 for model {model!r}: {message}; set "
                f"{self.wording.model_setting} to a model it serves, and check base_url"
            ) from None
        if status not in (400, 422):
            return f"HTTP {status}: {message}"
        param = _named_setting(exc, message, params, self.wording.advice)
        if param is not None:
            advice = self.wording.advice.get(param) or self.wording.setting.format(param=param)
            raise self.stop(
                f"{who} rejected the request setting {param!r} (HTTP {status}: {message}); {advice}"
            ) from None
        if model and re.search(rf"(?<![\w/.-]){re.escape(model)}(?![\w/.-])", message):
            raise self.stop(
                f"{who} rejected the model name {model!r} (HTTP {status}: {message}); set "
                f"{self.wording.model_setting} to the name the server serves"
            ) from None
        if not self.answered:
            sent = ", ".join(sorted(_sent_names(params))) or "none"
            raise self.stop(
                f"{who} rejected the request (HTTP {status}: {message}); check "
                f"{self.wording.model_setting} ({model!r}) and the settings sent ({sent})"
            ) from None
        return f"HTTP {status}: {message}"

    def _unreachable(self, reason: str) -> None:
        self.unreachable += 1
        if self.unreachable >= UNREACHABLE_AFTER:
            raise self.stop(
                f"{self.who} is unreachable: {self.unreachable} requests in a row failed "
                f"to connect after {self.max_retries} retries each ({reason}); start the server "
                "or fix base_url"
            )


def _sent_names(params: Mapping[str, Any]) -> set[str]:
    """The setting names a request sends: its fields, extra_body's, and those inside
    `chat_template_kwargs` and a `generation_config` JSON string."""
    names = {n for n in params if n != "extra_body"}
    for name, value in (params.get("extra_body") or {}).items():
        names.add(name)
        if isinstance(value, str) and name == "generation_config":
            try:
                value = json.loads(value)
            except ValueError:
                continue
        if isinstance(value, dict):
            names.update(value)
    return names


def _named_setting(
    exc: Any, message: str, params: Mapping[str, Any], advice: Mapping[str, str]
) -> str | None:
    """The request setting a 400/422 names: OpenAI's `param`, else one sent that the message
    names."""
    param = getattr(exc, "param", None)
    sent = _sent_names(params)
    if isinstance(param, str) and (param in sent or param in advice):
        return param
    for name in sorted(sent, key=len, reverse=True):
        if re.search(rf"(?<!\w){re.escape(name)}(?!\w)", message):
            return name
    return None


def _reply(completion: Any, empty_ok: bool) -> Reply:
    try:
        choice = completion.choices[0]
        content = choice.message.content
    except (AttributeError, IndexError, TypeError, KeyError):
        raise _Malformed(f"not a chat completion: {str(completion)[:100]!r}") from None
    reasoning = getattr(choice.message, "reasoning_content", None) or None
    finish = choice.finish_reason or "unknown"
    if not empty_ok and not (content or "").strip() and not reasoning and finish != "length":
        raise _Malformed(f"an empty answer (finish_reason {finish})")
    usage = getattr(completion, "usage", None)
    return Reply(
        content=content or "",
        reasoning=reasoning,
        finish_reason=finish,
        prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
        completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
        model=getattr(completion, "model", None),
    )


T = TypeVar("T")


async def run_all(
    tasks: Sequence[asyncio.Future[T]],
    *,
    desc: str,
    unit: str,
    progress: bool,
    failed: Callable[[T], bool],
) -> None:
    """Wait for every task with a progress bar counting failures; the first exception (a stop)
    cancels the others and propagates. Read results from the tasks."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(tasks), desc=desc, unit=unit, disable=not progress)
    errors = 0
    try:
        for future in asyncio.as_completed(tasks):
            errors += bool(failed(await future))
            bar.update()
            if errors:
                bar.set_postfix(errors=errors, refresh=False)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        bar.close()
