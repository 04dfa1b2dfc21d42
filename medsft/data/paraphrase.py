"""LLM paraphrases of training questions written to a training file (`paraphrase_file`;
`python -m medsft.cli.augment`): the recommended augmentation (synonym swaps, medsft.data.augment,
read awkward too often).

Paraphrases are asked of an OpenAI-compatible endpoint through medsft.metrics.endpoint, the client
layer of the judge and endpoint systems (retries, one-line stops with the server's reason, the key
from the environment only, request fields per server kind, many requests in flight), each checked
for the same meaning by a judge call (medsft.metrics.judge_client, with `same_meaning` reading its
verdict); replies are cached beside the output as they arrive. See `paraphrase_file`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from medsft.cache import JsonlStore, digest
from medsft.chat import Message, split_think
from medsft.data.augment import AugmentSettings
from medsft.data.schema import unit_hash
from medsft.errors import ConfigError
from medsft.metrics.endpoint import EndpointClient, RequestFailed, Wording, run_all
from medsft.metrics.servers import ServerKind, UnsupportedSetting, request_fields

PARAPHRASE_PROMPT = (
    "请改写下面这个患者提出的问题：保持原意、所有医学事实、数字和语言不变，只改变措辞和句式。"
    "只输出改写后的问题，不要回答它，也不要加任何说明。\n\n问题：{question}"
)
"""The paraphrase request; {question} is one user message."""

SAME_MEANING_PROMPT = (
    "下面是患者提出的一个问题和它的改写。判断改写是否与原问题问的是同一件事：所有医学事实、数字、"
    "否定、时间和提问的重点都保留，没有增加或删去信息。先用一两句话说明理由，最后一行只写“相同”或"
    "“不同”。\n\n原问题：{original}\n\n改写：{paraphrase}"
)
"""The same-meaning check of a paraphrase; the reply's last line says 相同 or 不同 (SAME or
DIFFERENT are read too)."""
SAME_MEANING_FOLLOW_UP = "请只回答一个词：“相同”或“不同”。"
"""Asked, as the conversation's next turn, when a check's reply gives no verdict (the judge's
label follow-up, medsft.metrics.judge_client)."""
_SAME = re.compile(r"(相同|不同|same|different)", re.IGNORECASE)
_FIELD = re.compile(r"\{(question|original|paraphrase)\}")

PARAPHRASE_CACHE_VERSION = 2
"""Version 2: asked through medsft.metrics.endpoint, keyed by the endpoint however its URL is
spelled and by the settings asked for (version 1's replies are asked again)."""

_SETTING_ADVICE = {
    "temperature": "set paraphrase.temperature: null (reasoning models such as GPT-5 take only "
    "their default)",
    "max_tokens": "set paraphrase.max_tokens: null (reasoning models such as GPT-5 reject it)",
}


def same_meaning(reply: str) -> bool | None:
    """The verdict of a same-meaning check reply: its last line's last 相同 / 不同 (SAME /
    DIFFERENT); None when the last line holds neither (an unclear reply, never a yes)."""
    lines = [line for line in reply.strip().splitlines() if line.strip()]
    found = _SAME.findall(lines[-1]) if lines else []
    if not found:
        return None
    return found[-1].lower() in ("相同", "same")


def _fill(template: str, **values: str) -> str:
    """`template` with its {question} / {original} / {paraphrase} filled in one pass (other
    braces stay as written; a question holding `{paraphrase}` is not filled again)."""
    return _FIELD.sub(lambda m: values.get(m[1], m[0]), template)


@dataclass
class ParaphraseSettings:
    """An OpenAI-compatible endpoint that rewrites questions and checks each rewrite for the same
    meaning (`python -m medsft.cli.augment`), through medsft.metrics.endpoint."""

    model: str = "gpt-4o-mini"
    """Model name, as the endpoint knows it."""
    base_url: str | None = None
    """OpenAI-compatible endpoint (vLLM, SGLang, `transformers serve`, Ollama, a proxy), without
    credentials; null = OpenAI."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key (never put the key in a config). Unset with a
    base_url: a placeholder key is sent (local servers usually need none)."""
    server: Literal["auto", "openai", "vllm", "sglang", "transformers"] = "auto"
    """The kind of server, which decides where enable_thinking goes (`chat_template_kwargs` for
    vLLM, SGLang and `transformers serve`; OpenAI takes none). `auto`: `openai` without base_url,
    else told once from the server's `/models` listing (`openai` when it does not say)."""
    prompt: str = PARAPHRASE_PROMPT
    """Request text, with {question}."""
    temperature: float | None = 0.0
    """null leaves it to the endpoint (GPT-5-family models need null)."""
    max_tokens: int | None = None
    """Reply length cap; null leaves it to the endpoint. A paraphrase cut at it is a failure."""
    enable_thinking: bool = False
    """Qwen3's thinking switch, sent where the server kind takes it (false: the reply is the
    rewrite alone; a think block that still comes back is split off)."""
    extra_body: dict[str, Any] | None = None
    """Extra request fields, sent as written; a key here replaces what the settings send under
    it."""
    timeout: float = 60.0
    """Seconds per request."""
    max_retries: int = 5
    """Retries per request on rate limits, 5xx, timeouts and dropped connections (the openai
    client's own), and of malformed or empty 200 replies."""
    concurrency: int = 8
    """Requests in flight at once (per model: a check_model has its own)."""
    check: bool = True
    """Ask, in a second request, whether each paraphrase asks the same thing with the same
    medical facts (`check_prompt`); a copy with a paraphrase judged different, or without a
    verdict after `label_retries` follow-ups, is not written (counted as dropped)."""
    check_model: str | None = None
    """Model for the same-meaning check; null = `model`."""
    check_prompt: str = SAME_MEANING_PROMPT
    """The check's request, with {original} and {paraphrase}."""
    check_follow_up: str = SAME_MEANING_FOLLOW_UP
    """Asked next in the conversation when a check's reply gives no verdict."""
    label_retries: int = 1
    """Follow-ups asking for the verdict alone before a check counts as unclear."""

    def validate(self) -> None:
        """Raise ConfigError, saying what to change, on settings that cannot work (before any
        request)."""
        if not self.model.strip() or (
            self.check_model is not None and not self.check_model.strip()
        ):
            raise ConfigError("paraphrase.model (and check_model, if set) must name a model")
        if "{question}" not in self.prompt:
            raise ConfigError("paraphrase.prompt must hold {question}")
        if self.check and not {"original", "paraphrase"} <= set(_FIELD.findall(self.check_prompt)):
            raise ConfigError("paraphrase.check_prompt must hold {original} and {paraphrase}")
        if (
            self.concurrency < 1
            or self.timeout <= 0
            or self.max_retries < 0
            or self.label_retries < 0
        ):
            raise ConfigError(
                "paraphrase.concurrency must be >= 1, timeout > 0, max_retries and "
                f"label_retries >= 0; got {self.concurrency}, {self.timeout}, "
                f"{self.max_retries} and {self.label_retries}"
            )
        if self.base_url is not None:
            parts = urlsplit(self.base_url)
            if parts.username or parts.password or parts.query:
                raise ConfigError(
                    "paraphrase.base_url must not carry credentials or a query string; export "
                    f"the key in ${self.api_key_env} (paraphrase.api_key_env)"
                )
        elif self.server not in ("auto", "openai"):
            raise ConfigError(
                f"paraphrase.server: {self.server} needs paraphrase.base_url (without it the "
                "paraphrases are asked of OpenAI)"
            )
        elif not os.environ.get(self.api_key_env):
            raise ConfigError(
                f"environment variable {self.api_key_env} is not set: export the API key there "
                "(paraphrase.api_key_env names it), or set paraphrase.base_url for a local "
                "server that needs none"
            )
        if self.server != "auto":  # a kind known without asking: a lost setting stops now
            self.request_fields(self.server, "the paraphrase.server setting")
        elif self.base_url is None:
            self.request_fields("openai", "OpenAI's API")

    def asked(self) -> dict[str, Any]:
        """What every request asks for, as the cache keys it (the fields sent depend on the
        server kind, found only when there is something to ask)."""
        return {
            "settings": {
                "temperature": self.temperature,
                "max_tokens": self.max_tokens,
                "enable_thinking": self.enable_thinking,
            },
            "server": self.server,
            "extra_body": self.extra_body,
        }

    def request_fields(self, server: ServerKind, how: str) -> dict[str, Any]:
        """The request fields for a server of kind `server` (`how`: how the kind was decided);
        ConfigError when a setting cannot be sent there."""
        try:
            return request_fields(server, self.asked()["settings"], self.extra_body)
        except UnsupportedSetting as err:
            raise ConfigError(
                f"paraphrase.{err.name} = {err.value!r} cannot be sent: it is no OpenAI "
                f"chat-completions field, and the server kind is {server} ({how}); set "
                "paraphrase.server to vllm, sglang or transformers if the server is one, or "
                f"paraphrase.{err.name}: false"
            ) from None


def _wording(who: str, model_setting: str) -> Wording:
    return Wording(
        who=who + " {endpoint}",
        model_setting=model_setting,
        key_setting="paraphrase.api_key_env",
        advice=_SETTING_ADVICE,
        setting="change or drop the paraphrase setting or extra_body field that sends {param}",
        server_setting="paraphrase.server",
    )


@dataclass
class Paraphrased:
    """What `paraphrase_file` did. Copies are counted per conversation; a conversation's copy
    is made only when every user message has a paraphrase judged the same."""

    out: str
    """The file written."""
    rows: int = 0
    """Conversations read (all are written)."""
    asked: int = 0
    """Copies asked for: training conversations the hash chose."""
    kept: int = 0
    """Copies written."""
    different: int = 0
    """Copies dropped: a paraphrase judged to change the meaning."""
    unclear: int = 0
    """Copies dropped: a check without a verdict, even after the follow-ups."""
    failed: int = 0
    """Copies not made: a request failed after the retries (a rerun asks for those only)."""
    questions: int = 0
    """Distinct user messages paraphrased (asked for, or read from the cache)."""
    requests: int = 0
    """HTTP requests sent, retries included (0 on a rerun of a finished run)."""
    cached: int = 0
    """Replies read from the cache (paraphrases and checks)."""
    failures: list[str] = field(default_factory=list)
    """Why each failed request failed, in order."""

    def counts(self) -> dict[str, int]:
        """The counts by name."""
        return {k: v for k, v in vars(self).items() if isinstance(v, int)}

    def summary(self) -> str:
        """One line: the copies asked, kept, dropped and failed, and the requests sent."""
        return (
            f"{self.out}: {self.rows} rows; {self.asked} paraphrased copies asked, {self.kept} "
            f"kept, {self.different + self.unclear} dropped as different ({self.unclear} of "
            f"them without a clear verdict), {self.failed} failed; {self.requests} requests "
            f"sent, {self.cached} replies read from the cache"
        )


@dataclass
class _Question:
    """One distinct user message: its paraphrase, the check's verdict, or why it failed."""

    text: str
    paraphrase: str | None = None
    same: bool | None = None
    """True: judged the same (or not checked); False: different; None: unclear or not reached."""
    failure: str | None = None


async def _ask_all(
    texts: list[str],
    settings: ParaphraseSettings,
    cache: JsonlStore,
    result: Paraphrased,
    progress: bool,
) -> dict[str, _Question]:
    """Paraphrase and check every text, many at once, with a progress bar: each reply cached as
    it comes, what the cache holds never asked. A stop (EndpointStop) propagates."""
    from medsft.metrics.judge_client import JudgeClient

    check_model = settings.check_model or settings.model
    async with contextlib.AsyncExitStack() as stack:
        wording = _wording("paraphrase endpoint", "paraphrase.model")
        client = await stack.enter_async_context(EndpointClient(settings, settings.model, wording))
        checker = client
        if check_model != settings.model:
            wording = _wording("same-meaning check endpoint", "paraphrase.check_model")
            checker = await stack.enter_async_context(
                EndpointClient(settings, check_model, wording)
            )
        judge = JudgeClient(
            endpoint=checker,
            params={},
            cache=cache,
            label_retries=settings.label_retries,
            follow_up=settings.check_follow_up,
            parse=same_meaning,
        )
        asked = [PARAPHRASE_CACHE_VERSION, settings.asked()]
        resolved = asyncio.Lock()
        params: dict[str, Any] | None = None

        async def fields() -> dict[str, Any]:
            # The server kind is probed once, and only when something is not in the cache.
            nonlocal params
            async with resolved:
                if params is None:
                    params = settings.request_fields(*await client.server_kind(settings.server))
                    judge.params = params
            return params

        async def paraphrase(text: str) -> str:
            key = digest([*asked, "paraphrase", client.key, settings.model, settings.prompt, text])
            if (hit := cache.get(key)) is not None:
                result.cached += 1
                return str(hit["text"])
            messages = [{"role": "user", "content": _fill(settings.prompt, question=text)}]
            reply = await client.complete(messages, await fields())
            if reply.finish_reason == "length":
                raise RequestFailed(
                    "the paraphrase was cut at the token limit (finish_reason: length); raise "
                    "paraphrase.max_tokens"
                )
            # A think block returned apart (a reasoning parser) or inline is no part of it.
            rewrite = reply.content.strip() if reply.reasoning else split_think(reply.content)[1]
            if not rewrite:
                raise RequestFailed("the reply held a think block and no paraphrase")
            cache.put({"key": key, "what": "paraphrase", "model": reply.model, "text": rewrite})
            return rewrite

        async def one(question: _Question) -> _Question:
            try:
                question.paraphrase = await paraphrase(question.text)
            except RequestFailed as exc:
                question.failure = f"paraphrase: {exc}"
                return question
            if not settings.check:
                question.same = True
                return question
            prompt = _fill(
                settings.check_prompt, original=question.text, paraphrase=question.paraphrase
            )
            messages = [{"role": "user", "content": prompt}]
            key = digest([*asked, "same meaning", checker.key, check_model, messages])
            order = judge.cached(key)
            if order is None:
                await fields()
                order = await judge.judge(key, messages)
            question.same = order.label
            if order.error is not None and order.raw is None:  # no reply came back at all
                question.failure = f"same-meaning check: {order.error}"
            return question

        questions = {t: _Question(t) for t in texts}
        tasks = [asyncio.ensure_future(one(q)) for q in questions.values()]
        try:
            await run_all(
                tasks,
                desc=f"paraphrasing with {settings.model}",
                unit="q",
                progress=progress,
                failed=lambda q: q.failure is not None,
            )
        finally:
            result.cached += judge.usage.cached_judgements
            result.requests = client.requests + (checker.requests if checker is not client else 0)
    return questions


def paraphrase_file(
    conversations: Iterable[tuple[str, list[Message], bool]],
    settings: ParaphraseSettings,
    augment_settings: AugmentSettings,
    out: str,
    *,
    progress: bool = True,
) -> Paraphrased:
    """Write `out` (JSONL, preset `messages`): every conversation, and for a hashed share of the
    trainable ones (`augment_settings`: fraction, mode, seed) a copy with each user message
    paraphrased by the endpoint. `conversations` are (split key, messages, trainable) in source
    order; validation examples (trainable False) are written unchanged under their own id, so
    train with the same val_fraction. With `settings.check`, each paraphrase is checked for the
    same meaning by a judge call, and a copy with a paraphrase judged different (or without a
    verdict) is left out; written copies carry `same_meaning`. A copy whose requests failed
    after the retries is left out too, and counted. Replies are cached in
    `<out>.cache.jsonl` (medsft.cache) as they arrive, so a rerun asks only for what is
    missing. The key is read from the environment and handed to the client only.

    Raises:
        ConfigError: settings that cannot work (before any request).
        EndpointStop: what every request would meet (a refused key, an unknown model, ...);
            nothing is written but the cache.
    """
    settings.validate()
    rows = [
        (
            key,
            messages,
            trainable and unit_hash("pick", augment_settings.seed, key) < augment_settings.fraction,
        )
        for key, messages, trainable in conversations
    ]
    texts = sorted({m["content"] for _, ms, c in rows if c for m in ms if m["role"] == "user"})
    result = Paraphrased(out=out, rows=len(rows), questions=len(texts))
    questions: dict[str, _Question] = {}
    if texts:
        cache = JsonlStore(f"{out}.cache.jsonl", "paraphrases")
        try:
            questions = asyncio.run(_ask_all(texts, settings, cache, result, progress))
        finally:
            cache.close()
    result.failures = [q.failure for q in questions.values() if q.failure is not None]
    with open(out, "w", encoding="utf-8") as f:
        for key, messages, chosen in rows:
            asked = [questions[m["content"]] for m in messages if chosen and m["role"] == "user"]
            result.asked += chosen
            if any(q.same is False for q in asked):
                result.different += 1
            elif any(q.failure is not None for q in asked):
                result.failed += 1
            elif any(q.same is None for q in asked):
                result.unclear += 1
            chosen = chosen and all(q.same for q in asked)
            keep = [(messages, False)] if not chosen or augment_settings.mode == "add" else []
            if chosen:
                result.kept += 1
                copy = [
                    {**m, "content": questions[m["content"]].paraphrase}
                    if m["role"] == "user"
                    else m
                    for m in messages
                ]
                keep.append((copy, True))  # the original's id: the same (training) split
            for ms, augmented in keep:
                record: dict[str, Any] = {"id": key, "messages": ms, "augmented": augmented}
                if augmented and settings.check:
                    record["same_meaning"] = True
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return result


if __name__ == "__main__":  # the command's old home: say where it went rather than do nothing
    raise SystemExit("error: the augment command is now `python -m medsft.cli.augment`")
