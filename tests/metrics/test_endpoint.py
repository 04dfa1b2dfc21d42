"""medsft.metrics.endpoint, the client layer of the judge and endpoint systems, against a real
HTTP server on 127.0.0.1 (tests/judge_server.py): where settings go per server kind, the
server's reason in every error, what stops asking, retries of malformed and empty replies."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from dataclasses import dataclass

import pytest

from medsft.metrics.endpoint import (
    SAME_FAILURE_AFTER,
    EndpointClient,
    EndpointStop,
    RequestFailed,
    Wording,
    run_all,
)
from medsft.metrics.servers import request_fields
from tests.conftest import ROOT
from tests.helpers import SAMPLED
from tests.judge_server import JudgeServer, Reply, answer_to, answering

SECRET = "sk-test-DO-NOT-LEAK-5e7d1b03"
WORDING = Wording(who="endpoint under test", model_setting="the path", key_setting="api_key_env")
MESSAGES = [{"role": "user", "content": "感冒了怎么办？"}]


@dataclass
class Connection:
    base_url: str | None
    api_key_env: str = "ENDPOINT_TEST_KEY"
    timeout: float = 5.0
    max_retries: int = 0
    concurrency: int = 1


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENDPOINT_TEST_KEY", SECRET)


def ask(server: JudgeServer, n: int = 1, params=None, model="m", **connection):
    """`n` requests through one client: (the replies or failures, the client)."""

    async def main():
        async with EndpointClient(Connection(server.base_url, **connection), model, WORDING) as c:

            async def one():
                try:
                    return await c.complete(MESSAGES, params or {"temperature": 0.0})
                except RequestFailed as exc:
                    return exc

            tasks = [asyncio.ensure_future(one()) for _ in range(n)]
            await run_all(tasks, desc="", unit="q", progress=False, failed=lambda r: False)
            return [t.result() for t in tasks], c

    return asyncio.run(main())


def test_the_kind_of_server_is_told_from_its_models_listing():
    for kind in ("vllm", "sglang", "transformers"):
        with JudgeServer(kind=kind) as server:
            assert asyncio.run(_probe(server)) == kind and server.listings == 1
    with JudgeServer(kind="openai") as server:
        assert asyncio.run(_probe(server)) is None
    with JudgeServer(kind=None) as server:  # no listing at all (404)
        assert asyncio.run(_probe(server)) is None


def test_the_kind_to_send_for_is_the_setting_else_openais_api_else_the_listing(monkeypatch):
    async def kind(base_url, setting):
        async with EndpointClient(Connection(base_url), "m", WORDING) as client:
            return await client.server_kind(setting)

    with JudgeServer(kind="vllm") as server:
        assert asyncio.run(kind(server.base_url, "sglang")) == ("sglang", "server setting")
        assert server.listings == 0  # a kind that is set is not asked for
        assert asyncio.run(kind(server.base_url, "auto"))[0] == "vllm" and server.listings == 1
    with JudgeServer(kind=None) as server:
        assert asyncio.run(kind(server.base_url, "auto"))[0] == "openai"
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert asyncio.run(kind(None, "auto")) == ("openai", "OpenAI's API")  # nothing sent


async def _probe(server: JudgeServer):
    async with EndpointClient(Connection(server.base_url), "m", WORDING) as client:
        return await client.probe()


@pytest.mark.parametrize(
    "reply, reason",
    [
        (Reply.server_error(502), "HTTP 502: The server had an error"),
        (Reply.fastapi_error(503, "model is loading"), "HTTP 503: model is loading"),
        (
            Reply(status=500, body=b"Internal Server Error\nTraceback ...", content_type="text"),
            "HTTP 500: Internal Server Error",
        ),
        (Reply(status=500, body=b'{"object": "error", "message": "vLLM says no"}'), "vLLM says no"),
    ],
)
def test_an_error_carries_the_servers_own_reason(reply, reason):
    with JudgeServer(lambda request: reply) as server:
        (failure,), _ = ask(server)
    assert isinstance(failure, RequestFailed) and reason in str(failure)


@pytest.mark.parametrize(
    "reply, message",
    [
        (  # transformers serve, a field it does not know
            Reply.fastapi_error(422, "Unexpected fields in the request: {'repetition_penalty'}"),
            r"rejected the request setting 'repetition_penalty' \(HTTP 422: Unexpected fields",
        ),
        (  # transformers serve pinned to another model
            Reply.fastapi_error(400, "Server is pinned to '/models/x'; requested 'demo-model'."),
            r"rejected the model name 'demo-model' \(HTTP 400: Server is pinned .*; set the path",
        ),
        (  # FastAPI's own validation error
            Reply(status=422, body=b'{"detail": [{"loc": ["body", "n"], "msg": "not an int"}]}'),
            r"rejected the request \(HTTP 422: body.n: not an int\); check the path",
        ),
        (Reply(status=404, body=b'{"detail": "Not Found"}'), r"HTTP 404 for model 'demo-model'"),
        (Reply(status=401, body=SECRET.encode()), r"refused the API key \(HTTP 401\).*\$ENDPOINT"),
    ],
)
def test_what_every_request_would_get_stops_after_the_first(reply, message):
    with JudgeServer(lambda request: reply) as server:
        with pytest.raises(EndpointStop, match=message) as stopped:
            ask(
                server,
                n=4,
                model="demo-model",
                max_retries=3,
                params=request_fields("vllm", SAMPLED),
            )
        assert server.request_count == 1  # not retried, not sent again for the other questions
    assert SECRET not in str(stopped.value)


def test_a_rejected_request_after_answers_is_that_requests_failure():
    def long_prompts_rejected(request):
        if request.index == 1:
            return Reply.fastapi_error(400, "The prompt has 9000 tokens, but the model takes 4096")
        return answer_to(request.question)

    with JudgeServer(long_prompts_rejected) as server:
        (first, second, third), client = ask(server, n=3)
    assert first.content and third.content
    assert isinstance(second, RequestFailed) and "9000 tokens" in str(second)
    assert client.failures == ["HTTP 400: The prompt has 9000 tokens, but the model takes 4096"]


def test_the_first_requests_failing_alike_stop_asking():
    quick = {"retry-after-ms": "10"}
    broken = Reply(status=500, body=b"Internal Server Error", content_type="text", headers=quick)
    with JudgeServer(lambda request: broken) as server:
        with pytest.raises(
            EndpointStop, match=r"first 3 requests all failed alike .*Internal Serv"
        ):
            ask(server, n=12, max_retries=1)
        # Each of the three was retried once by the client; the other nine were never sent.
        assert server.request_count == SAME_FAILURE_AFTER * 2


def test_malformed_and_empty_replies_are_retried_then_fail():
    with JudgeServer(answering()) as server:
        server.inject(Reply.garbage_json())
        server.inject(Reply.empty())
        (reply,), client = ask(server, max_retries=2)
        assert reply.content == answer_to(MESSAGES[0]["content"])
        assert server.request_count == 3 == client.requests

        server.reset()
        server.inject(Reply.empty(), times=3)
        (failure,), _ = ask(server, max_retries=2)
        assert isinstance(failure, RequestFailed) and "an empty answer" in str(failure)
        assert server.request_count == 3

        server.reset()
        server.inject(Reply.cut(""))  # the token limit, not the server, left it empty: kept
        (cut,), _ = ask(server, max_retries=2)
        assert cut.content == "" and cut.finish_reason == "length" and server.request_count == 1


def test_the_key_is_sent_but_in_no_repr_or_error():
    with JudgeServer(lambda r: Reply(status=500, body=f"no {SECRET}".encode())) as server:
        (failure,), client = ask(server)
    assert server.requests[0].authorization == f"Bearer {SECRET}"
    assert "no ***" in str(failure) and SECRET not in str(failure)
    assert SECRET not in repr(client) and client.redact(f"a {SECRET}") == "a ***"


def test_the_client_layer_imports_no_openai_until_a_client_is_made():
    code = (
        "import sys, medsft.metrics, medsft.metrics.endpoint, medsft.metrics.judge\n"
        "print('openai' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout.split()[-1].lower()) is False
