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
never stored in the cache, the result, or any error text. Cached replies are keyed by the
endpoint (without credentials), the model, the request parameters and the rendered prompt.
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar
from urllib.parse import urlsplit, urlunsplit

from tqdm.auto import tqdm

from medsft.metrics.stats import Interval, bootstrap_interval, mean_statistic

if TYPE_CHECKING:
    from openai import AsyncOpenAI

log = logging.getLogger(__name__)

Label = Literal["better", "worse", "equal"]
Outcome = Literal["win", "loss", "tie", "error"]

LABELS: dict[Label, str] = {
    "better": "Assistant 1 is better than Assistant 2",
    "worse": "Assistant 1 is worse than Assistant 2",
    "equal": "Assistant 1 is equal to Assistant 2",
}
"""The three verdict sentences the judge must end its reply with."""

LABEL_FOLLOW_UP = (
    "Your reply did not end with a verdict. Reply with exactly one of the following three "
    "sentences and nothing else:\n" + "\n".join(LABELS.values())
)
"""The user turn sent after a reply without a verdict label (the label retry)."""

TEMPLATE_DIR = Path(__file__).parent / "templates"
DEFAULT_TEMPLATE = TEMPLATE_DIR / "judge_pairwise.txt"
MEDICAL_RUBRIC = TEMPLATE_DIR / "medical_rubric.txt"
DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful, precise and impartial assistant for checking the quality of answers."
)

# Markdown, quotes and any spacing may sit between the words of a label.
_GAP = r"[\W_]*"
_LABEL_RE = re.compile(
    rf"\bassistant{_GAP}1{_GAP}is{_GAP}(better|worse|equal){_GAP}(?:than|to){_GAP}assistant{_GAP}2(?!\d)",
    re.IGNORECASE,
)
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
    matches = _LABEL_RE.findall(reply or "")
    return matches[-1].lower() if matches else None


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
# Cache
# --------------------------------------------------------------------------------------------
class _Cache:
    """Append-only JSONL of judge replies, keyed by a hash of everything that shapes the reply."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = Path(path) if path is not None else None
        self.entries: dict[str, dict[str, Any]] = {}
        self._fh: Any = None
        if self.path is None or not self.path.exists():
            return
        skipped = 0
        with self.path.open(encoding="utf-8") as fh:
            for line in fh:
                try:
                    entry = json.loads(line)
                    self.entries[entry["key"]] = entry
                except (ValueError, KeyError, TypeError):
                    skipped += 1  # typically a line cut short by an interrupted run
        if skipped:
            log.warning("judge cache %s: skipped %d unreadable line(s)", self.path, skipped)

    def get(self, key: str) -> dict[str, Any] | None:
        entry = self.entries.get(key)
        if entry is None or parse_verdict(str(entry.get("raw", ""))) is None:
            return None
        return entry

    def put(self, entry: dict[str, Any]) -> None:
        self.entries[entry["key"]] = entry
        if self.path is None:
            return
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # A run killed mid-line leaves no newline; start on a fresh line so ours stay valid.
            torn = (
                self.path.exists()
                and self.path.stat().st_size > 0
                and not _ends_with_newline(self.path)
            )
            self._fh = self.path.open("a", encoding="utf-8")
            if torn:
                self._fh.write("\n")
        self._fh.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


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


@dataclass
class _Judge:
    client: AsyncOpenAI
    model: str
    params: dict[str, Any]
    cache: _Cache
    semaphore: asyncio.Semaphore
    max_retries: int
    label_retries: int
    backoff_base: float
    backoff_max: float
    secret: str | None
    usage: JudgeUsage = field(default_factory=JudgeUsage)

    def redact(self, text: str) -> str:
        return text.replace(self.secret, "***") if self.secret else text

    async def judge(self, key: str, messages: list[dict[str, str]]) -> _Order:
        entry = self.cache.get(key)
        if entry is not None:
            usage = entry.get("usage") or {}
            self.usage.cached_judgements += 1
            self.usage.cached_prompt_tokens += int(usage.get("prompt_tokens", 0))
            self.usage.cached_completion_tokens += int(usage.get("completion_tokens", 0))
            return _Order(parse_verdict(entry["raw"]), entry["raw"], cached=True)
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
                request.append({"role": "user", "content": LABEL_FOLLOW_UP})
            raw, p, c = await self._complete(request)
            replies.append(raw)
            prompt_tokens, completion_tokens = prompt_tokens + p, completion_tokens + c
            self.usage.prompt_tokens += p
            self.usage.completion_tokens += c
            label = parse_verdict(raw)
            if label is not None:
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
        """One chat completion, retrying transient failures with exponential backoff."""
        import openai

        attempt = 0
        while True:
            retry_after: float | None = None
            self.usage.requests += 1
            try:
                completion = await self.client.chat.completions.create(
                    model=self.model, messages=messages, **self.params
                )
                return _content(completion)
            except openai.APIStatusError as exc:
                status = exc.status_code
                if status in (401, 403):
                    # The body may echo part of the key, so it is not passed on.
                    raise JudgeConfigError(
                        f"judge endpoint refused the API key (HTTP {status}); check the key's "
                        "environment variable and base_url"
                    ) from None
                if status == 404:
                    raise JudgeConfigError(
                        f"judge endpoint answered 404 for model {self.model!r}: "
                        f"{self.redact(exc.message)}"
                    ) from None
                if status not in (408, 409, 429) and status < 500:
                    raise _PairError(f"HTTP {status}: {self.redact(exc.message)}") from None
                reason = f"HTTP {status}"
                retry_after = _retry_after(exc.response.headers)
            except openai.APITimeoutError:
                reason = "timeout"
            except openai.APIConnectionError as exc:
                reason = f"connection error ({self.redact(str(exc.__cause__ or exc))})"
            except (_Malformed, openai.APIResponseValidationError, ValueError) as exc:
                # ValueError: the client could not decode a body sent as JSON.
                reason = f"malformed response ({self.redact(str(exc))[:200]})"
            if attempt >= self.max_retries:
                raise _PairError(f"gave up after {attempt + 1} attempt(s): {reason}")
            delay = min(self.backoff_max, self.backoff_base * 2**attempt) * random.uniform(0.5, 1)
            if retry_after is not None:
                delay = max(delay, min(retry_after, self.backoff_max))
            log.debug("judge request failed (%s); retry %d in %.2fs", reason, attempt + 1, delay)
            attempt += 1
            await asyncio.sleep(delay)


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


def _retry_after(headers: Any) -> float | None:
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            continue
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
    return None


def _read(path: str | os.PathLike[str], what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise FileNotFoundError(f"cannot read the judge {what} {str(path)!r}: {exc}") from exc


def _render(template: str, **values: str) -> str:
    # One pass, so a '{answer_2}' typed inside a question is left as text, not substituted.
    return _PLACEHOLDER_RE.sub(lambda m: values[m[1]], template)


def _public_url(base_url: str | None) -> str | None:
    if base_url is None:
        return None
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


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
    template: str | os.PathLike[str] | None = None,
    rubric: bool | str | os.PathLike[str] = True,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    temperature: float | None = 0.0,
    max_tokens: int | None = None,
    timeout: float = 60.0,
    max_retries: int = 5,
    label_retries: int = 1,
    backoff_base: float = 1.0,
    backoff_max: float = 30.0,
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
        cache_path: JSONL file of replies, appended as they arrive; a rerun with the same
            endpoint, model, prompt and answers reuses them instead of paying again. None: no
            cache.
        template: file replacing the prompt template; it must contain `{question}`,
            `{answer_1}` and `{answer_2}`, and `{rubric}` when a rubric is used.
        rubric: True for the packaged medical rubric, False for none, or a rubric file.
        system_prompt: system message; None sends none.
        temperature: sampling temperature; None leaves it to the endpoint (some reasoning
            models reject the parameter).
        max_tokens: reply length cap; None leaves it to the endpoint.
        timeout: seconds per request before it is abandoned and retried.
        max_retries: retries per request on 408/409/429/5xx, timeouts, dropped connections and
            malformed replies, with exponential backoff.
        label_retries: follow-up requests (`LABEL_FOLLOW_UP`, after the unlabeled reply) when a
            reply has no verdict label, before the order is an error.
        backoff_base: first backoff delay in seconds, doubled on each retry (with jitter).
        backoff_max: longest backoff delay, also capping a server's Retry-After.
        n_resamples: bootstrap resamples for the interval.
        level: coverage of the interval.
        seed: bootstrap seed.
        progress: show a tqdm progress bar.
    """
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
    if not model or not model.strip():
        raise ValueError("model must name the judge model")
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    if max_retries < 0 or label_retries < 0:
        raise ValueError("max_retries and label_retries must be >= 0")
    if timeout <= 0 or backoff_base < 0 or backoff_max < 0:
        raise ValueError("timeout must be > 0 and backoff_base, backoff_max >= 0")

    secret = os.environ.get(api_key_env) or None
    if secret is None and base_url is None:
        raise JudgeConfigError(
            f"environment variable {api_key_env} is not set: export the judge's API key there, "
            "or pass base_url for a local server that needs no key"
        )

    template_path = DEFAULT_TEMPLATE if template is None else template
    template_text = _read(template_path, "template")
    missing = [p for p in _REQUIRED_PLACEHOLDERS if p not in template_text]
    if missing:
        raise ValueError(f"judge template {str(template_path)!r} lacks {', '.join(missing)}")
    rubric_text = ""
    if rubric is not False:
        rubric_text = _read(MEDICAL_RUBRIC if rubric is True else rubric, "rubric").strip()
        if "{rubric}" not in template_text:
            raise ValueError(f"judge template {str(template_path)!r} has no {{rubric}} placeholder")
    template_sha = hashlib.sha256(
        json.dumps([system_prompt, template_text, rubric_text], ensure_ascii=False).encode()
    ).hexdigest()

    params: dict[str, Any] = {}
    if temperature is not None:
        params["temperature"] = temperature
    if max_tokens is not None:
        params["max_tokens"] = max_tokens

    def messages_for(question: str, first: str, second: str) -> list[dict[str, str]]:
        user = _render(
            template_text, question=question, answer_1=first, answer_2=second, rubric=rubric_text
        )
        system = [{"role": "system", "content": system_prompt}] if system_prompt else []
        return [*system, {"role": "user", "content": user}]

    import openai

    client = openai.AsyncOpenAI(
        api_key=secret or "EMPTY", base_url=base_url, timeout=timeout, max_retries=0
    )
    # The endpoint the client really uses (base_url, else OPENAI_BASE_URL, else OpenAI's), so a
    # model name served elsewhere never reuses these verdicts.
    endpoint = _public_url(str(client.base_url).rstrip("/"))

    def key_for(messages: list[dict[str, str]]) -> str:
        # The rendered messages fix template, rubric, question, both answers and their order.
        blob = json.dumps([endpoint, model, params, messages], ensure_ascii=False, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    judge = _Judge(
        client=client,
        model=model,
        params=params,
        cache=_Cache(cache_path),
        semaphore=asyncio.Semaphore(concurrency),
        max_retries=max_retries,
        label_retries=label_retries,
        backoff_base=backoff_base,
        backoff_max=backoff_max,
        secret=secret,
    )

    # Identical prompts (a repeated question, or A == B) are sent once.
    keys: list[tuple[str, str]] = []
    tasks: dict[str, asyncio.Task[_Order]] = {}
    for question, a, b in zip(questions, answers_a, answers_b, strict=True):
        pair_keys = []
        for first, second in ((a, b), (b, a)):
            messages = messages_for(question, first, second)
            key = key_for(messages)
            if key not in tasks:
                tasks[key] = asyncio.ensure_future(judge.judge(key, messages))
            pair_keys.append(key)
        keys.append((pair_keys[0], pair_keys[1]))

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
        judge.cache.close()
        await client.close()

    records = [
        _record(i, questions[i], answers_a[i], answers_b[i], tasks[ab].result(), tasks[ba].result())
        for i, (ab, ba) in enumerate(keys)
    ]
    judged = [r for r in records if r.outcome != "error"]
    interval = None
    if judged:
        scores = [_SCORE[r.outcome] for r in judged]
        interval = bootstrap_interval(
            len(judged), mean_statistic(scores), n_resamples=n_resamples, level=level, seed=seed
        )
    if len(judged) < len(records):
        log.warning(
            "judge: %d of %d pairs failed and are left out of the rates (see records[].error)",
            len(records) - len(judged),
            len(records),
        )
    return JudgeResult(
        model=model,
        base_url=_public_url(base_url),
        records=records,
        usage=judge.usage,
        interval=interval,
        template_sha256=template_sha,
        rubric=rubric is not False,
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
