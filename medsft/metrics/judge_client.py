"""The judge's requests: its cache, its verdicts and the label follow-up, on the shared client
layer (medsft.metrics.endpoint), which owns retries, errors, the key and when asking stops.
The paraphrases' same-meaning check (medsft.data.augment) asks through it too, with its own
verdict reader (`JudgeClient.parse`).

Label retry: a reply without an explicit verdict (medsft.metrics.verdict) is not sent again as is
(at temperature 0 the same request tends to get the same reply, paid twice). The conversation
goes on instead: the reply as the assistant's turn, then the prompt's follow-up as a user turn
asking for the label alone. The reply kept (and cached) is every reply of that conversation,
joined by a blank line, so the reasons and the verdict are both there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from medsft.cache import JsonlStore
from medsft.metrics.endpoint import EndpointClient, EndpointStop, RequestFailed, Wording
from medsft.metrics.judge_result import JudgeUsage
from medsft.metrics.verdict import Label, parse_verdict


class JudgeConfigError(EndpointStop):
    """The judge cannot run at all: no API key, a rejected key, an unknown model or setting, an
    unreachable endpoint."""


class _PairError(Exception):
    """One order could not be judged; recorded on the pair, the run goes on."""

    def __init__(self, message: str, raw: str | None = None) -> None:
        super().__init__(message)
        self.raw = raw


@dataclass
class JudgeOrder:
    """The judgement of one answer order: its verdict, the reply kept, or why it failed."""

    label: Label | bool | None
    """The verdict `JudgeClient.parse` read (a `Label`; the same-meaning check's: a bool), None
    when the order failed."""
    raw: str | None
    cached: bool
    error: str | None = None


# What to change when the endpoint rejects a request setting.
SETTING_ADVICE = {
    "temperature": "set temperature to null (judge.temperature: null); reasoning models such "
    "as GPT-5 accept only their default",
    "max_tokens": "send max_completion_tokens instead (judge.max_tokens: null, "
    "judge.max_completion_tokens: N); reasoning models such as GPT-5 reject max_tokens",
    "max_completion_tokens": "send max_tokens instead (judge.max_completion_tokens: null, "
    "judge.max_tokens: N); this endpoint does not know max_completion_tokens",
}


JUDGE_WORDING = Wording(
    who="judge endpoint {endpoint}",
    model_setting="judge.model",
    key_setting="judge.api_key_env",
    advice=SETTING_ADVICE,
    setting="change or drop the judge setting {param}",
)
"""How stop messages name the judge's settings."""


@dataclass
class JudgeClient:
    """Judges rendered prompts through one endpoint: cache, verdicts, label follow-ups, usage."""

    endpoint: EndpointClient = field(repr=False)
    params: dict[str, Any]
    cache: JsonlStore
    label_retries: int
    follow_up: str
    usage: JudgeUsage = field(default_factory=JudgeUsage)
    parse: Callable[[str], Label | bool | None] = parse_verdict
    """Reads a reply's verdict, None when it gives none: the judge's labels by default."""

    def cached(self, key: str) -> JudgeOrder | None:
        """The cached judgement under `key` when it holds a verdict (counted as cached usage)."""
        entry = self.cache.get(key)
        label = None if entry is None else self.parse(str(entry.get("raw", "")))
        if entry is None or label is None:
            return None
        usage = entry.get("usage") or {}
        self.usage.cached_judgements += 1
        self.usage.cached_prompt_tokens += int(usage.get("prompt_tokens", 0))
        self.usage.cached_completion_tokens += int(usage.get("completion_tokens", 0))
        return JudgeOrder(label, entry["raw"], cached=True)

    async def judge(self, key: str, messages: list[dict[str, str]]) -> JudgeOrder:
        """The judgement of one rendered prompt: from the cache, else asked (a failure is the
        order's error; a `JudgeConfigError` stops judging)."""
        cached = self.cached(key)
        if cached is not None:
            return cached
        try:
            # One slot for the whole conversation: its follow-up waits for no other judgement.
            async with self.endpoint.slot():
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
            try:
                # An empty reply (a refusal, a filtered one) goes through the label follow-up.
                reply = await self.endpoint.complete(request, self.params, empty_ok=True)
            except RequestFailed as exc:
                raise _PairError(str(exc)) from None
            replies.append(reply.content)
            prompt_tokens += reply.prompt_tokens
            completion_tokens += reply.completion_tokens
            self.usage.prompt_tokens += reply.prompt_tokens
            self.usage.completion_tokens += reply.completion_tokens
            label = self.parse(reply.content)
            if label is not None:
                kept = _joined(replies)
                usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}
                model = self.endpoint.model
                self.cache.put(
                    {"key": key, "model": model, "label": label, "raw": kept, "usage": usage}
                )
                return JudgeOrder(label, kept, cached=False)
        attempts = self.label_retries + 1
        message = f"no verdict label in the judge's reply ({attempts} attempt(s))"
        raise _PairError(message, _joined(replies))


def _joined(replies: list[str]) -> str:
    """The replies of one judgement (the first, then any label follow-ups), blank-line apart."""
    return "\n\n".join(r for r in replies if r.strip()) or replies[-1]
