"""Endpoint systems against a real HTTP server on 127.0.0.1: the settings sent, the cache (a
rerun sends nothing, an interrupted run resumes), retries, cut replies and the key's secrecy."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from medsft.evaluation import DataSpec, EvalConfig, SystemSpec, load_examples, validate_config
from medsft.evaluation.config import McqSpec
from medsft.evaluation.endpoints import EndpointError, endpoint_system, request_params
from medsft.evaluation.generate import GenerationSettings
from tests.judge_server import ChatRequest, JudgeServer, Reply, answer_to, answering, rejecting

ROOT = Path(__file__).resolve().parents[2]
SECRET = "sk-test-DO-NOT-LEAK-81f2c4aa"
SYSTEM = "你是一名经验丰富的医生。"


@pytest.fixture
def examples():
    spec = DataSpec(
        source=str(ROOT / "data/sample/test_zh_med.json"), limit=4, system_prompt=SYSTEM
    )
    return load_examples(spec)


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_KEY", SECRET)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def served(base_url: str, **fields) -> SystemSpec:
    return SystemSpec(
        "served",
        "qwen3-4b-huatuo",
        kind="endpoint",
        base_url=base_url,
        api_key_env="VLLM_KEY",
        **fields,
    )


def run(spec: SystemSpec, examples, out: Path, **generation):
    config = EvalConfig(
        systems=[spec],
        output_dir=str(out),
        generation=GenerationSettings(max_new_tokens=64, **generation),
    )
    config.runtime.progress = False
    return endpoint_system(spec, examples, config, out)


def test_request_settings_follow_the_generation_settings():
    greedy = GenerationSettings(max_new_tokens=100)
    openai = SystemSpec("gpt", "gpt-4o-mini", kind="endpoint")
    assert request_params(openai, greedy) == {"max_tokens": 100, "temperature": 0.0}
    sampled = GenerationSettings(
        max_new_tokens=100,
        do_sample=True,
        temperature=0.7,
        top_p=0.8,
        top_k=20,
        repetition_penalty=1.1,
        enable_thinking=True,
    )
    assert request_params(served("http://127.0.0.1:8000/v1"), sampled) == {
        "max_tokens": 100,
        "temperature": 0.7,
        "top_p": 0.8,
        "extra_body": {
            "chat_template_kwargs": {"enable_thinking": True},
            "top_k": 20,
            "repetition_penalty": 1.1,
        },
    }
    reasoning = SystemSpec("gpt5", "gpt-5-mini", kind="endpoint", reasoning=True)
    assert request_params(reasoning, sampled) == {"max_completion_tokens": 100}
    assert request_params(served("http://x/v1", extra_body={}), greedy) == {
        "max_tokens": 100,
        "temperature": 0.0,
    }


def test_answers_survive_429_and_500_cut_replies_are_flagged_and_a_rerun_sends_nothing(
    tmp_path, examples
):
    cut_question = examples[2].question

    def policy(request: ChatRequest) -> Reply | str:
        if request.question == cut_question:
            return Reply.cut("回答被截断")
        return answer_to(request.question)

    with JudgeServer(policy) as server:
        quick = {"retry-after-ms": "20"}  # the client honours it: no second-long backoff
        server.inject(replace(Reply.rate_limited(), headers=quick))
        server.inject(replace(Reply.server_error(), headers=quick))
        # concurrency 1: the two failures hit the first question, retried by the client
        spec = served(server.base_url + "/", concurrency=1, max_retries=2)
        output = run(spec, examples, tmp_path)
        assert server.request_count == len(examples) + 2
        expected = [answer_to(ex.question) for ex in examples]
        expected[2] = "回答被截断"
        assert output.answers == expected
        assert output.generation["finish_reasons"]["length"] == 1
        assert output.generation["generated"] == len(examples)
        rows = [json.loads(line) for line in (tmp_path / "generations/served.jsonl").open()]
        assert [r["finish_reason"] for r in rows] == ["stop", "stop", "length", "stop"]

        request = server.requests[-1]
        assert request.authorization == f"Bearer {SECRET}"
        assert request.body["messages"][0] == {"role": "system", "content": SYSTEM}
        assert request.body["max_tokens"] == 64 and request.body["temperature"] == 0.0
        assert request.body["chat_template_kwargs"] == {"enable_thinking": False}
        assert SECRET not in (tmp_path / "generations/served.jsonl").read_text(encoding="utf-8")

        # The same server spelled otherwise: every answer comes from the cache.
        server.reset()
        again = run(served(f"http://localhost:{server.port}/v1"), examples, tmp_path)
        assert server.request_count == 0
        assert again.answers == output.answers and again.generation["reused"] == len(examples)


def test_an_interrupted_run_stops_saying_so_and_the_next_asks_only_for_the_rest(tmp_path, examples):
    with JudgeServer(answering()) as server:
        spec = served(server.base_url, concurrency=1, max_retries=0)
        server.inject(Reply(content="ok"), times=2)
        server.inject(Reply.server_error())  # the third question fails for good
        with pytest.raises(EndpointError, match=r"1 of 4 requests .* failed .* HTTP 500") as err:
            run(spec, examples, tmp_path)
        assert "3 answers received are saved" in str(err.value)
        server.reset()
        output = run(spec, examples, tmp_path)
        assert server.request_count == 1
        assert output.generation == {**output.generation, "generated": 1, "reused": 3}
        assert output.answers == ["ok", "ok", *(answer_to(ex.question) for ex in examples[2:])]


def test_reasoning_models_get_max_completion_tokens_and_a_refused_key_stops_at_once(
    tmp_path, examples
):
    def gpt5(request: ChatRequest) -> Reply | str:
        if "max_tokens" in request.body:
            return rejecting("max_tokens", "Unsupported parameter: 'max_tokens'.")
        if "temperature" in request.body:
            return rejecting("temperature", "Unsupported value: 'temperature'.")
        return answer_to(request.question)

    with JudgeServer(gpt5) as server:
        with pytest.raises(EndpointError, match="rejected 'max_tokens'.*reasoning: true"):
            run(served(server.base_url, extra_body={}), examples, tmp_path / "a")
        spec = served(server.base_url, extra_body={}, reasoning=True)
        output = run(spec, examples, tmp_path / "b", do_sample=True, temperature=0.7)
        assert output.answers == [answer_to(ex.question) for ex in examples]
        body = server.requests[-1].body
        assert body["max_completion_tokens"] == 64 and "temperature" not in body
        assert "top_p" not in body and isinstance(body["seed"], int)

    with JudgeServer(lambda r: Reply(status=401, body=SECRET.encode())) as server:
        with pytest.raises(EndpointError, match=r"refused the API key .*\$VLLM_KEY") as err:
            run(served(server.base_url), examples, tmp_path / "c")
        assert SECRET not in str(err.value)


@pytest.mark.parametrize(
    "spec, mcq, message",
    [
        (SystemSpec("gpt", "gpt-4o-mini", kind="endpoint"), None, "export OPENAI_API_KEY"),
        (SystemSpec("v", "m", base_url="http://u:p@127.0.0.1:8000/v1"), None, "credentials"),
        (
            SystemSpec("v", "m", base_url="http://127.0.0.1:8000/v1"),
            McqSpec(source="x.csv"),
            "is an endpoint: mcq_set.methods loglik needs .* use mcq_set.methods: \\[generate\\]",
        ),
        (
            SystemSpec("v", "m", base_url="http://127.0.0.1:8000/v1", concurrency=0),
            None,
            "concurrency must be >= 1",
        ),
    ],
)
def test_endpoint_config_errors_say_how_to_fix(spec, mcq, message):
    with pytest.raises(ValueError, match=message):
        validate_config(EvalConfig(systems=[spec], mcq_set=mcq))
