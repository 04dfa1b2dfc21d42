"""Endpoint systems: answers from an OpenAI-compatible chat endpoint (OpenAI, vLLM, SGLang,
`transformers serve`, ...), through the client layer the judge uses (medsft.metrics.endpoint).

The questions are the model systems' (each test example's messages, system prompt included) and
so are the `generation` settings (`config.endpoint_settings`): greedy decoding sends temperature
0; sampling sends temperature, top_p, top_k and each question's own seed (`prompt_seed`);
max_new_tokens is sent as `max_tokens`, or as `max_completion_tokens` with nothing else for a
reasoning model (`reasoning: true`: GPT-5, o-series take nothing else). Settings the OpenAI API
lacks (top_k, repetition_penalty, Qwen3's thinking switch) go where the system's `server` kind
takes them (told from the server's `/models` listing once when `auto`); an OpenAI server takes
none, and a setting that would be lost stops the run before the first request.

Answers are saved in `generations/<system>.jsonl` (medsft.cache) as they arrive, keyed by the
endpoint (`endpoint_key`: one spelling per server), the model, the messages and the settings
asked for: a rerun sends nothing, an interrupted one sends only what is missing. A reply cut at
the token limit (`finish_reason: length`) is kept as it is, marked in its row and counted in the
report as a model system's cut answers are. A question whose requests still fail after the
retries (5xx, timeouts, malformed or empty 200 replies) is not cached: it is scored as an empty
answer, the system's status is `partial` with the count in report.json and report.md, and a
rerun asks for those only. What every request would meet stops the run at once with the
server's reason (medsft.metrics.endpoint). A sampled run also asks its first few questions
greedily: when every sampled answer equals its greedy one, the report says that sampling had no
visible effect (a server that ignores temperature decodes greedily and says so only in its own
log). The key is read from the environment variable `api_key_env` and handed to the client only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from medsft.cache import JsonlStore, digest
from medsft.evaluation.config import EvalConfig, SystemSpec, endpoint_fields, endpoint_settings
from medsft.evaluation.models import is_global_zero
from medsft.evaluation.systems import SystemOutput
from medsft.evaluation.testset import Example
from medsft.metrics.endpoint import (
    EndpointClient,
    EndpointStop,
    Reply,
    RequestFailed,
    Wording,
    run_all,
)
from medsft.metrics.servers import OPENAI_URL, endpoint_key, public_url
from medsft.model.generate import GenerationSettings, prompt_seed, split_think

log = logging.getLogger(__name__)

CACHE_VERSION = 2
"""Version 2 keys the settings asked for, not the fields sent (those depend on the server)."""
SAMPLING_PROBES = 4
"""Questions of a sampled run also asked greedily, to tell whether the server sampled at all."""


class EndpointError(EndpointStop):
    """An endpoint system could not be answered; the message says what to do."""


_SETTING_ADVICE = {
    "temperature": "a reasoning model (GPT-5, o-series) takes only its default: set the "
    "system's reasoning: true",
    "top_p": "a reasoning model (GPT-5, o-series) takes only its default: set the system's "
    "reasoning: true",
    "max_tokens": "a reasoning model (GPT-5, o-series) takes max_completion_tokens: set the "
    "system's reasoning: true",
    "max_completion_tokens": "this endpoint takes max_tokens: set the system's reasoning: false",
}


def _wording(spec: SystemSpec, server: str) -> Wording:
    return Wording(
        who=f"system {spec.name!r}: endpoint {{endpoint}}",
        model_setting="the system's path",
        key_setting="the system's api_key_env",
        advice=_SETTING_ADVICE,
        setting=(
            f"it was sent as a server of kind {server} takes it: set the system's server to the "
            "kind the server is (openai, vllm, sglang, transformers), or change the generation "
            "setting or extra_body that sends {param}"
        ),
        server_setting="the system's server",
    )


@dataclass
class _Request:
    key: str
    index: int
    messages: list[dict[str, str]]


@dataclass
class _Asked:
    """What asking the endpoint found besides the answers (saved in the store)."""

    server: str | None = None
    """The server kind the requests were sent for; None when nothing was asked."""
    failures: dict[str, str] = field(default_factory=dict)
    """Request key -> why it failed after the retries."""
    sampling: dict[str, Any] | None = None


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
    shown = public_url(spec.base_url) or "OpenAI"
    requests = _requests(spec, settings, examples)
    folder = out_dir / "generations"
    store = JsonlStore(folder / f"{spec.name}.jsonl", "endpoint answers")
    todo = list({r.key: r for r in requests if not (config.reuse and r.key in store)}.values())
    probes = _probes(spec, settings, examples, requests)
    greedy = JsonlStore(folder / f"{spec.name}.greedy.jsonl", "greedy probes") if probes else None
    twins = [t for t in probes if greedy is not None and not (config.reuse and t.key in greedy)]
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
        asked = _Asked()
        if todo or twins:
            run = _ask(spec, settings, todo, twins, store, greedy, config.runtime.progress)
            asked = asyncio.run(run)
    finally:
        store.close()
        if greedy is not None:
            greedy.close()
    rows = [
        {**store.entries[r.key], "index": i} if r.key in store else None
        for i, r in enumerate(requests)
    ]
    store.rewrite([row for row in rows if row is not None])
    if greedy is not None:
        greedy.rewrite([greedy.entries[t.key] for t in probes if t.key in greedy])
        asked.sampling = _sampling_check(requests, probes, store, greedy)
    new = {r.key for r in todo}
    counts = {
        "generated": len(new - asked.failures.keys()),
        "reused": sum(
            row is not None and r.key not in new for r, row in zip(requests, rows, strict=True)
        ),
        "seconds": round(time.perf_counter() - started, 3),
    }
    return _output(spec, shown, rows, asked, counts, store.path)


def _requests(
    spec: SystemSpec, settings: GenerationSettings, examples: list[Example]
) -> list[_Request]:
    """One request per question, keyed by what it asks (the fields sent depend on the server
    kind, found only when there is something to ask)."""
    url = spec.base_url or OPENAI_URL
    asked = {
        "settings": endpoint_settings(spec, settings),
        "server": spec.server,
        "extra_body": spec.extra_body,
        "seed": settings.seed if settings.do_sample else None,
    }
    out = []
    for ex in examples:
        messages = [dict(m) for m in ex.prompt]
        key = digest([CACHE_VERSION, endpoint_key(url), spec.path, messages, asked])
        out.append(_Request(key, ex.index, messages))
    return out


def _probes(
    spec: SystemSpec,
    settings: GenerationSettings,
    examples: list[Example],
    requests: list[_Request],
) -> list[_Request]:
    """Greedy twins of the first questions of a sampled run (none for greedy runs, or for
    reasoning models, which take no temperature)."""
    if not settings.do_sample or spec.reasoning:
        return []
    greedy = replace(settings, do_sample=False)
    twins = _requests(spec, greedy, examples[:SAMPLING_PROBES])
    return twins[: len(requests)]


async def _ask(
    spec: SystemSpec,
    settings: GenerationSettings,
    todo: list[_Request],
    twins: list[_Request],
    store: JsonlStore,
    greedy: JsonlStore | None,
    progress: bool,
) -> _Asked:
    """Ask for every request in `todo` (and the greedy `twins`), saving each answer as it comes.
    Failures are returned; what every request would meet raises (EndpointError, ConfigError)."""
    wording = _wording(spec, spec.server)
    async with EndpointClient(spec, spec.path, wording, EndpointError) as client:
        server, how = await client.server_kind(spec.server)
        client.wording = _wording(spec, server)
        params = endpoint_fields(spec, settings, server, how)
        asked = _Asked(server=server)

        async def ask(request: _Request, fields: dict[str, Any], into: JsonlStore) -> bool:
            sent = fields
            if into is store and settings.do_sample:
                sent = {**fields, "seed": prompt_seed(settings.seed, request.key)}
            try:
                reply = await client.complete(request.messages, sent)
            except RequestFailed as exc:
                asked.failures[request.key] = str(exc)
                return True
            into.put(_row(reply, request, server))
            return False

        tasks = [asyncio.ensure_future(ask(r, params, store)) for r in todo]
        await run_all(
            tasks, desc=f"{spec.name} via endpoint", unit="q", progress=progress, failed=bool
        )
        if twins and greedy is not None:
            greedy_params = endpoint_fields(spec, replace(settings, do_sample=False), server, how)
            for twin in twins:
                try:
                    await ask(twin, greedy_params, greedy)
                except EndpointStop as exc:  # the sampled answers are in: only the check fails
                    asked.failures[twin.key] = str(exc)
    for key in {t.key for t in twins} & asked.failures.keys():
        log.warning("%s: greedy probe not answered: %s", spec.name, asked.failures.pop(key))
    return asked


def _row(reply: Reply, request: _Request, server: str) -> dict[str, Any]:
    # vLLM/SGLang with a reasoning parser and `transformers serve` return the think block apart
    # (stripped here as split_think strips it, so served and in-process rows compare equal).
    if reply.reasoning:
        think, answer = reply.reasoning.strip(), reply.content.strip()
    else:
        think, answer = split_think(reply.content)
    return {
        "key": request.key,
        "question": request.messages[-1]["content"],
        "text": reply.content,
        "think": think,
        "answer": answer,
        "finish_reason": reply.finish_reason,
        "prompt_tokens": reply.prompt_tokens,
        "new_tokens": reply.completion_tokens,
        "served_by": reply.model,
        "server": server,
    }


def _sampling_check(
    requests: list[_Request], probes: list[_Request], store: JsonlStore, greedy: JsonlStore
) -> dict[str, Any]:
    """How many probed questions got the same answer sampled and greedy."""
    pairs = [
        (store.entries[r.key], greedy.entries[t.key])
        for r, t in zip(requests, probes, strict=False)
        if r.key in store and t.key in greedy
    ]
    same = sum(s["text"] == g["text"] and s["think"] == g["think"] for s, g in pairs)
    return {"questions": len(pairs), "equal_to_greedy": same}


def _output(
    spec: SystemSpec,
    shown: str,
    rows: list[dict[str, Any] | None],
    asked: _Asked,
    counts: dict[str, Any],
    path: Path | None,
) -> SystemOutput:
    """The system's answers (empty for the questions that failed) and report.json's facts."""
    answered = [row for row in rows if row is not None]
    failed = len(rows) - len(answered)
    finish = Counter(row["finish_reason"] for row in answered)
    cut = finish["length"]
    if cut:
        log.warning(
            "%s: %d of %d answers were cut at the token limit (finish_reason: length); they are "
            "counted as cut in the report; raise generation.max_new_tokens to let them finish",
            spec.name,
            cut,
            len(rows),
        )
    new_tokens = [int(row["new_tokens"]) if row else 0 for row in rows]
    servers = sorted({str(row.get("server")) for row in answered if row.get("server")})
    generation: dict[str, Any] = {
        "endpoint": shown,
        "model": spec.path,
        "server": asked.server or ", ".join(servers) or None,
        "status": "partial" if failed else "ok",
        **counts,
        "failed": failed,
        "new_tokens": sum(new_tokens),
        "tokens_per_second": (
            round(sum(new_tokens) / counts["seconds"], 2)
            if counts["generated"] and counts["seconds"]
            else 0.0
        ),
        "world_size": 1,
        "finish_reasons": {"stop": finish["stop"], "length": cut, **finish},
        "mean_new_tokens": round(sum(new_tokens) / len(answered), 1) if answered else 0.0,
        "file": str(path),
    }
    notes = []
    if failed:
        reasons = Counter(asked.failures.values())
        generation["failures"] = dict(reasons.most_common(3))
        first = next(iter(asked.failures.values()), "not asked")
        notes.append(
            f"partial: {failed} of {len(rows)} questions got no answer (first: {first}); "
            "scored as empty answers, rerun to ask for those only"
        )
        log.warning("%s: %s", spec.name, notes[-1])
    if asked.sampling is not None:
        generation["sampling_check"] = asked.sampling
        probed, same = asked.sampling["questions"], asked.sampling["equal_to_greedy"]
        if probed and same == probed:
            notes.append(
                f"sampling had no visible effect: {same} of {probed} sampled answers equal the "
                "greedy ones (a server that ignores temperature decodes greedily; for "
                "`transformers serve` set the system's server: transformers)"
            )
            log.warning("%s: %s", spec.name, notes[-1])
    if notes:
        generation["notes"] = notes
    return SystemOutput(
        name=spec.name,
        kind="endpoint",
        source=f"{spec.path} @ {shown}",
        answers=[row["answer"] if row else "" for row in rows],
        thinks=[row["think"] if row else None for row in rows],
        generation=generation,
        new_tokens=new_tokens,
    )
