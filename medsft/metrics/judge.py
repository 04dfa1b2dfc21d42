"""Pairwise LLM-as-a-judge with position swap, for comparing two systems' answers.

Each pair is judged twice, once with system A's answer shown as Assistant 1 (order "ab") and once
with system B's answer there (order "ba"), because a single order measures position bias as much
as quality (MT-bench: GPT-4's verdict survived the swap only about two times in three).

Outcome of a pair, from system A's point of view:

- both orders give the same verdict about A (ab 'better' + ba 'worse' -> win; ab 'worse' + ba
  'better' -> loss; 'equal' twice -> tie): that outcome, *consistent*;
- any other combination, including one order 'equal' and the other decisive: a tie, reported as
  *inconsistent* (the MT-bench convention; a half-decided pair is not evidence of a win);
- an order that failed (HTTP errors past the retries, or no verdict label even after the label
  retry): outcome 'error'; the pair is left out of every rate and counted in `n_errors`.

Verdicts: the English prompt asks for one of `LABELS`, the Chinese one (`language="zh"`) for one
of `LABELS_ZH` (助手1更好 / 助手1更差 / 两者相当); `parse_verdict` recognises both sets in any reply.

Retries: the `openai` client's own (`max_retries`): HTTP 408/409/429/5xx, timeouts and dropped
connections, with its backoff and the server's Retry-After. This module adds only what the client
does not do: a retry of a malformed 200 reply, and the label follow-up below. Judging stops at
once (`JudgeConfigError`) on what every request would meet: a rejected key (401/403), an unknown
model (404), a request setting the endpoint rejects (HTTP 400 naming `temperature`, `max_tokens`,
...: reasoning models such as GPT-5 take neither a non-default temperature nor max_tokens, but
`max_completion_tokens`), the first `REJECTED_AFTER` requests all rejected as invalid, or
`UNREACHABLE_AFTER` requests in a row that could not connect.

Label retry: a reply without a verdict label is not sent again as is (at temperature 0 the same
request tends to get the same reply, paid twice). The conversation goes on instead: the reply as
the assistant's turn, then `LABEL_FOLLOW_UP` as a user turn asking for the label alone. The
reply kept (`raw_ab`/`raw_ba`, the cache) is then every reply of that conversation, joined by a
blank line, so the reasons and the verdict are both there.

Rates are shares of the judged (non-error) pairs. The adjusted win rate is (wins + ties / 2) / n,
and its interval is a seeded percentile bootstrap over pairs.

Token usage: `JudgeUsage.prompt_tokens` / `completion_tokens` are what this run was billed (every
200 reply, including one that lacked a label and was retried); replies served from the cache are
counted separately in `cached_*`, with the usage recorded when they were first paid for.

The API key is read from the environment by name and only handed to the `openai` client; it is
never stored in the cache, the result, any error text or any repr. Cached replies (medsft.cache)
are keyed by what was asked: the endpoint (without credentials, however its URL is spelled:
`localhost` = `127.0.0.1`, a trailing slash or default port changes nothing), the model, the
request parameters and the rendered prompt.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import math
import os
import random
import re
from collections.abc import Callable, Coroutine, Sequence
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar

from tqdm.auto import tqdm

from medsft.cache import JsonlStore, digest
from medsft.metrics.endpoint import endpoint_key, public_url
from medsft.metrics.stats import Interval, bootstrap_interval, mean_statistic

if TYPE_CHECKING:
    from openai import AsyncOpenAI

log = logging.getLogger(__name__)

Label = Literal["better", "worse", "equal"]
Outcome = Literal["win", "loss", "tie", "error"]
Language = Literal["en", "zh"]

LABELS: dict[Label, str] = {
    "better": "Assistant 1 is better than Assistant 2",
    "worse": "Assistant 1 is worse than Assistant 2",
    "equal": "Assistant 1 is equal to Assistant 2",
}
"""The three verdict sentences the English judge prompt asks the reply to end with."""

LABELS_ZH: dict[Label, str] = {"better": "助手1更好", "worse": "助手1更差", "equal": "两者相当"}
"""The three verdicts of the Chinese judge prompt. `parse_verdict` recognises both sets in any
reply (markup and spaces between the words allowed), whichever prompt asked."""

LABEL_FOLLOW_UP = (
    "Your reply did not end with a verdict. Reply with exactly one of the following three "
    "sentences and nothing else:\n" + "\n".join(LABELS.values())
)
"""The user turn sent after a reply without a verdict label (the label retry)."""

LABEL_FOLLOW_UP_ZH = (
    "你的回复最后没有给出结论。请只回复以下三句之一，不要写其他内容：\n"
    + "\n".join(LABELS_ZH.values())
)
"""The label retry's user turn for the Chinese prompt."""

TEMPLATE_DIR = Path(__file__).parent / "templates"
DEFAULT_TEMPLATE = TEMPLATE_DIR / "judge_pairwise.txt"
MEDICAL_RUBRIC = TEMPLATE_DIR / "medical_rubric.txt"
DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful, precise and impartial assistant for checking the quality of answers."
)


@dataclass(frozen=True)
class JudgePrompt:
    """The packaged prompt of one language: template, medical rubric, system message, follow-up."""

    template: Path
    rubric: Path
    system_prompt: str
    follow_up: str


PROMPTS: dict[Language, JudgePrompt] = {
    "en": JudgePrompt(DEFAULT_TEMPLATE, MEDICAL_RUBRIC, DEFAULT_SYSTEM_PROMPT, LABEL_FOLLOW_UP),
    "zh": JudgePrompt(
        TEMPLATE_DIR / "judge_pairwise_zh.txt",
        TEMPLATE_DIR / "medical_rubric_zh.txt",
        "你是一名乐于助人、严谨而公正的助手，负责评估回答的质量。",
        LABEL_FOLLOW_UP_ZH,
    ),
}
"""Packaged prompts by language (`ajudge_pairs(language=...)`)."""

# Markdown, quotes and any spacing may sit between the words of a label.
_GAP = r"[\W_]*"
_LABEL_RE = re.compile(
    rf"\bassistant{_GAP}1{_GAP}is{_GAP}(?P<en>better|worse|equal){_GAP}(?:than|to){_GAP}"
    rf"assistant{_GAP}2(?!\d)"
    rf"|助手{_GAP}1(?!\d){_GAP}更(?P<zh>好|差)|两者{_GAP}相当",
    re.IGNORECASE,
)
_ZH_LABEL: dict[str, Label] = {"好": "better", "差": "worse"}
_PLACEHOLDER_RE = re.compile(r"\{(question|answer_1|answer_2|rubric)\}")
_REQUIRED_PLACEHOLDERS = ("{question}", "{answer_1}", "{answer_2}")

# Verdict about system A, given the label of the order it was shown in.
_A_VIEW: dict[str, dict[Label, Outcome]] = {
    "ab": {"better": "win", "worse": "loss", "equal": "tie"},
    "ba": {"better": "loss", "worse": "win", "equal": "tie"},
}
_SCORE: dict[Outcome, float] = {"win": 1.0, "tie": 0.5, "loss": 0.0}


class JudgeConfigError(RuntimeError):
    """The judge cannot run at all: no API key, a rejected key, or an unknown model/endpoint."""


def parse_verdict(reply: str) -> Label | None:
    """The last verdict label in a judge reply ('better', 'worse' or 'equal'), or None.

    Args:
        reply: the judge's raw reply; markdown, quotes and whitespace around the label are fine.
    """
    matches = list(_LABEL_RE.finditer(reply or ""))
    if not matches:
        return None
    last = matches[-1]
    if last["en"]:
        return last["en"].lower()  # type: ignore[return-value]
    return _ZH_LABEL[last["zh"]] if last["zh"] else "equal"


def _reasons(reply: str) -> str:
    """The judge's explanation: the reply before its last label, tidied of markup."""
    matches = list(_LABEL_RE.finditer(reply))
    head = reply[: matches[-1].start()] if matches else reply
    return head.rstrip(" \t\n*_`\"'“”>#:").strip()


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PairRecord:
    """The judgement of one question, in both orders. 'ab' = A's answer shown as Assistant 1."""

    index: int
    question: str
    answer_a: str
    answer_b: str
    outcome: Outcome
    """For system A: 'win', 'loss', 'tie' (inconsistent pairs included) or 'error'."""
    consistent: bool | None
    """Whether both orders gave the same verdict about A; None for an error."""
    verdict_ab: Label | None
    verdict_ba: Label | None
    raw_ab: str | None
    """The judge's full reply in order ab (also kept for a reply without a label)."""
    raw_ba: str | None
    reasons_ab: str | None
    reasons_ba: str | None
    cached_ab: bool = False
    cached_ba: bool = False
    error: str | None = None


@dataclass
class JudgeUsage:
    """Requests and tokens; `cached_*` are replies reused from the cache, not billed again."""

    requests: int = 0
    """HTTP requests sent, failed attempts included."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_judgements: int = 0
    cached_prompt_tokens: int = 0
    cached_completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens billed in this run."""
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, repr=False)
class JudgeResult:
    """Outcome of `judge_pairs`: rates for system A against system B, plus per-pair records."""

    model: str
    base_url: str | None
    """Endpoint, without any credentials in the URL."""
    records: list[PairRecord]
    usage: JudgeUsage
    interval: Interval | None
    """Bootstrap interval of the adjusted win rate; None when no pair was judged."""
    template_sha256: str
    """Hash of the system prompt, template and rubric, to tell reports from different prompts."""
    rubric: bool = True
    counts: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        counts = {"win": 0, "loss": 0, "tie": 0, "error": 0, "inconsistent": 0}
        for record in self.records:
            counts[record.outcome] += 1
            counts["inconsistent"] += record.consistent is False
        object.__setattr__(self, "counts", counts)

    @property
    def n_pairs(self) -> int:
        """Pairs submitted."""
        return len(self.records)

    @property
    def n_errors(self) -> int:
        """Pairs left out of the rates because an order failed."""
        return self.counts["error"]

    @property
    def n_judged(self) -> int:
        """Pairs with a verdict in both orders; the denominator of every rate."""
        return self.n_pairs - self.n_errors

    def _rate(self, count: int) -> float:
        return count / self.n_judged if self.n_judged else math.nan

    @property
    def win_rate(self) -> float:
        """Share of judged pairs A wins in both orders."""
        return self._rate(self.counts["win"])

    @property
    def loss_rate(self) -> float:
        """Share of judged pairs A loses in both orders."""
        return self._rate(self.counts["loss"])

    @property
    def tie_rate(self) -> float:
        """Share of judged pairs that are ties, inconsistent ones included."""
        return self._rate(self.counts["tie"])

    @property
    def adjusted_win_rate(self) -> float:
        """(wins + ties / 2) / judged pairs."""
        return self._rate(self.counts["win"] + self.counts["tie"] / 2)

    @property
    def consistency_rate(self) -> float:
        """Share of judged pairs whose verdict survived the position swap."""
        return self._rate(self.n_judged - self.counts["inconsistent"])

    def to_dict(self, include_records: bool = True) -> dict[str, Any]:
        """JSON-serialisable summary (NaN rates become None).

        Args:
            include_records: also list every per-pair record.
        """

        def finite(x: float) -> float | None:
            return None if math.isnan(x) else x

        out: dict[str, Any] = {
            "model": self.model,
            "base_url": self.base_url,
            "template_sha256": self.template_sha256,
            "rubric": self.rubric,
            "n_pairs": self.n_pairs,
            "n_judged": self.n_judged,
            "n_errors": self.n_errors,
            "counts": dict(self.counts),
            "win_rate": finite(self.win_rate),
            "loss_rate": finite(self.loss_rate),
            "tie_rate": finite(self.tie_rate),
            "adjusted_win_rate": finite(self.adjusted_win_rate),
            "consistency_rate": finite(self.consistency_rate),
            "interval": asdict(self.interval) if self.interval else None,
            "usage": {**asdict(self.usage), "total_tokens": self.usage.total_tokens},
        }
        if include_records:
            out["records"] = [asdict(r) for r in self.records]
        return out

    def __repr__(self) -> str:
        # Records hold every answer in full; a repr that prints them is useless in a log.
        return (
            f"JudgeResult(model={self.model!r}, n_pairs={self.n_pairs}, n_errors={self.n_errors}, "
            f"win_rate={self.win_rate:.3f}, loss_rate={self.loss_rate:.3f}, "
            f"tie_rate={self.tie_rate:.3f}, adjusted_win_rate={self.adjusted_win_rate:.3f}, "
            f"consistency_rate={self.consistency_rate:.3f}, interval={self.interval})"
        )


# --------------------------------------------------------------------------------------------
# Judging
# --------------------------------------------------------------------------------------------
class _PairError(Exception):
    """One order could not be judged; recorded on the pair, the run goes on."""

    def __init__(self, message: str, raw: str | None = None) -> None:
        super().__init__(message)
        self.raw = raw


class _Malformed(Exception):
    """A 200 reply that is not a usable chat completion."""


@dataclass
class _Order:
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
class _Judge:
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
        return text.replace(self.secret, "***") if self.secret else text

    async def count_request(self, request: Any) -> None:
        """httpx request hook: every HTTP request, the client's own retries included."""
        self.usage.requests += 1
        attempts = _ATTEMPTS.get()
        if attempts is not None:
            attempts[0] += 1

    def cached(self, key: str) -> _Order | None:
        entry = self.cache.get(key)
        if entry is None or parse_verdict(str(entry.get("raw", ""))) is None:
            return None
        usage = entry.get("usage") or {}
        self.usage.cached_judgements += 1
        self.usage.cached_prompt_tokens += int(usage.get("prompt_tokens", 0))
        self.usage.cached_completion_tokens += int(usage.get("completion_tokens", 0))
        return _Order(parse_verdict(entry["raw"]), entry["raw"], cached=True)

    async def judge(self, key: str, messages: list[dict[str, str]]) -> _Order:
        cached = self.cached(key)
        if cached is not None:
            return cached
        async with self.semaphore:
            try:
                return await self._judge_uncached(key, messages)
            except _PairError as exc:
                return _Order(None, exc.raw, cached=False, error=str(exc))

    async def _judge_uncached(self, key: str, messages: list[dict[str, str]]) -> _Order:
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
                return _Order(label, kept, cached=False)
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


def _read(path: str | os.PathLike[str], what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise FileNotFoundError(f"cannot read the judge {what} {str(path)!r}: {exc}") from exc


def _render(template: str, **values: str) -> str:
    # One pass, so a '{answer_2}' typed inside a question is left as text, not substituted.
    return _PLACEHOLDER_RE.sub(lambda m: values[m[1]], template)


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


@dataclass(frozen=True)
class _Prompt:
    """The rendered-prompt recipe: template, rubric and system message as texts."""

    template: str
    rubric: str
    system: str
    follow_up: str

    @property
    def sha256(self) -> str:
        blob = json.dumps([self.system or None, self.template, self.rubric], ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def messages(self, question: str, first: str, second: str) -> list[dict[str, str]]:
        user = _render(
            self.template, question=question, answer_1=first, answer_2=second, rubric=self.rubric
        )
        system = [{"role": "system", "content": self.system}] if self.system else []
        return [*system, {"role": "user", "content": user}]


def _load_prompt(
    language: Language,
    template: str | os.PathLike[str] | None,
    rubric: bool | str | os.PathLike[str],
    system_prompt: str | None,
) -> _Prompt:
    if language not in PROMPTS:
        raise ValueError(f"language must be one of {', '.join(PROMPTS)}, got {language!r}")
    packaged = PROMPTS[language]
    template_path = packaged.template if template is None else template
    template_text = _read(template_path, "template")
    missing = [p for p in _REQUIRED_PLACEHOLDERS if p not in template_text]
    if missing:
        raise ValueError(f"judge template {str(template_path)!r} lacks {', '.join(missing)}")
    rubric_text = ""
    if rubric is not False:
        rubric_text = _read(packaged.rubric if rubric is True else rubric, "rubric").strip()
        if "{rubric}" not in template_text:
            raise ValueError(f"judge template {str(template_path)!r} has no {{rubric}} placeholder")
    system = packaged.system_prompt if system_prompt is None else system_prompt
    return _Prompt(template_text, rubric_text, system, packaged.follow_up)


def _check_settings(model: str, concurrency: int, max_retries: int, label_retries: int,
                    timeout: float, max_tokens: int | None,
                    max_completion_tokens: int | None) -> None:  # fmt: skip
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


def _request_params(
    temperature: float | None, max_tokens: int | None, max_completion_tokens: int | None
) -> dict[str, Any]:
    params = {
        "temperature": temperature,
        "max_tokens": max_tokens,
        "max_completion_tokens": max_completion_tokens,
    }
    return {name: value for name, value in params.items() if value is not None}


def _client(secret: str | None, base_url: str | None, timeout: float, max_retries: int,
            on_request: Callable[[Any], Coroutine[Any, Any, None]]) -> AsyncOpenAI:  # fmt: skip
    import openai

    http = getattr(openai, "DefaultAsyncHttpx2Client", None) or openai.DefaultAsyncHttpxClient
    return openai.AsyncOpenAI(
        api_key=secret or "EMPTY", base_url=base_url, timeout=timeout, max_retries=max_retries,
        http_client=http(event_hooks={"request": [on_request]}),
    )  # fmt: skip


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
    judge: _Judge, prompt: _Prompt, questions: list[str], answers_a: list[str],
    answers_b: list[str],
) -> tuple[list[tuple[str, str]], dict[str, asyncio.Task[_Order]]]:  # fmt: skip
    """Each pair's two cache keys (ab, ba), and one task per distinct prompt: identical prompts
    (a repeated question, or A == B) are sent once."""
    endpoint = endpoint_key(str(judge.client.base_url))
    keys: list[tuple[str, str]] = []
    tasks: dict[str, asyncio.Task[_Order]] = {}
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


async def _gather(tasks: dict[str, asyncio.Task[_Order]], model: str, progress: bool) -> None:
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
    prompt = _load_prompt(language, template, rubric, system_prompt)
    params = _request_params(temperature, max_tokens, max_completion_tokens)
    judge = _Judge(
        client=None,  # type: ignore[arg-type]  # set below: the client calls back into the judge
        model=model, params=params, cache=JsonlStore(cache_path, "judge cache"),
        semaphore=asyncio.Semaphore(concurrency), max_retries=max_retries,
        label_retries=label_retries, follow_up=prompt.follow_up, endpoint=None, secret=secret,
    )  # fmt: skip
    judge.client = _client(secret, base_url, timeout, max_retries, judge.count_request)
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
        _record(i, questions[i], answers_a[i], answers_b[i], tasks[ab].result(), tasks[ba].result())
        for i, (ab, ba) in enumerate(keys)
    ]
    return _result(records, judge.usage, model, base_url, prompt, rubric is not False,
                   n_resamples=n_resamples, level=level, seed=seed)  # fmt: skip


def _result(records: list[PairRecord], usage: JudgeUsage, model: str, base_url: str | None,
            prompt: _Prompt, rubric: bool, **bootstrap: Any) -> JudgeResult:  # fmt: skip
    judged = [r for r in records if r.outcome != "error"]
    interval = None
    if judged:
        scores = [_SCORE[r.outcome] for r in judged]
        interval = bootstrap_interval(len(judged), mean_statistic(scores), **bootstrap)
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
    )


judge_pairs = _blocking(ajudge_pairs, "judge_pairs")


def _record(
    index: int, question: str, answer_a: str, answer_b: str, ab: _Order, ba: _Order
) -> PairRecord:
    common = {
        "index": index,
        "question": question,
        "answer_a": answer_a,
        "answer_b": answer_b,
        "verdict_ab": ab.label,
        "verdict_ba": ba.label,
        "raw_ab": ab.raw,
        "raw_ba": ba.raw,
        "reasons_ab": _reasons(ab.raw) if ab.raw is not None else None,
        "reasons_ba": _reasons(ba.raw) if ba.raw is not None else None,
        "cached_ab": ab.cached,
        "cached_ba": ba.cached,
    }
    if ab.label is None or ba.label is None:
        failed = [f"{name}: {o.error}" for name, o in (("ab", ab), ("ba", ba)) if o.error]
        return PairRecord(**common, outcome="error", consistent=None, error="; ".join(failed))
    view_ab, view_ba = _A_VIEW["ab"][ab.label], _A_VIEW["ba"][ba.label]
    consistent = view_ab == view_ba
    return PairRecord(**common, outcome=view_ab if consistent else "tie", consistent=consistent)
