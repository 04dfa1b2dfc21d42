"""medsft.metrics.judge_client: what the judge keeps out of sight (its requests are tested
through judge_pairs against the loopback server in test_judge.py, its client layer in
test_endpoint.py)."""

from __future__ import annotations

import asyncio

import pytest

from medsft.cache import JsonlStore
from medsft.metrics.endpoint import EndpointClient, EndpointStop
from medsft.metrics.judge import JudgeSettings
from medsft.metrics.judge_client import JUDGE_WORDING, JudgeClient, JudgeConfigError

SECRET = "sk-test-DO-NOT-LEAK-8f3a2c91d4"


def test_the_key_is_in_no_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUDGE_KEY", SECRET)
    settings = JudgeSettings(model="m", base_url="http://127.0.0.1:9/v1", api_key_env="JUDGE_KEY")

    async def make() -> JudgeClient:
        endpoint = EndpointClient(settings, "m", JUDGE_WORDING, JudgeConfigError)
        judge = JudgeClient(endpoint, {}, JsonlStore(None), label_retries=0, follow_up="")
        await endpoint.client.close()
        return judge

    judge = asyncio.run(make())
    assert SECRET not in repr(judge) and SECRET not in repr(judge.endpoint)
    assert judge.endpoint.redact(f"bad key {SECRET}!") == "bad key ***!"
    assert issubclass(JudgeConfigError, EndpointStop)
