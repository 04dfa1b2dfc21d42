"""Endpoint systems against a real HTTP server on 127.0.0.1: the settings sent per server kind,
the cache (a rerun sends nothing, an interrupted run resumes), retries, failures counted as a
partial system, cut replies, the key's secrecy, and (slow) a real `transformers serve`."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from medsft.cli import evaluate as evaluate_script
from medsft.errors import ConfigError
from medsft.evaluation import DataSpec, EvalConfig, SystemSpec, load_examples, validate_config
from medsft.evaluation.config import McqSpec, endpoint_fields
from medsft.evaluation.endpoints import EndpointError, endpoint_system
from medsft.model.generate import GenerationSettings
from tests.judge_server import ChatRequest, JudgeServer, Reply, answer_to, answering, rejecting

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_TEST = ROOT / "data/sample/test_zh_med.json"
SECRET = "sk-test-DO-NOT-LEAK-81f2c4aa"
SYSTEM = "你是一名经验丰富的医生。"
SAMPLED = GenerationSettings(
    max_new_tokens=100,
    do_sample=True,
    temperature=0.7,
    top_p=0.8,
    top_k=20,
    repetition_penalty=1.1,
    enable_thinking=True,
)


@pytest.fixture
def examples():
    spec = DataSpec(source=str(SAMPLE_TEST), limit=4, system_prompt=SYSTEM)
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


def test_request_fields_follow_the_generation_settings_and_the_server_kind():
    greedy = GenerationSettings(max_new_tokens=100)
    gpt = SystemSpec("gpt", "gpt-4o-mini", kind="endpoint")
    how = "test"
    assert endpoint_fields(gpt, greedy, "openai", how) == {"max_tokens": 100, "temperature": 0.0}
    sampled = {"max_tokens": 100, "temperature": 0.7, "top_p": 0.8}
    assert endpoint_fields(served("http://x/v1"), SAMPLED, "vllm", how) == {
        **sampled,
        "extra_body": {
            "top_k": 20,
            "repetition_penalty": 1.1,
            "chat_template_kwargs": {"enable_thinking": True},
        },
    }
    assert endpoint_fields(served("http://x/v1"), SAMPLED, "transformers", how)["extra_body"] == {
        "chat_template_kwargs": {"enable_thinking": True},
        "generation_config": '{"do_sample": true, "repetition_penalty": 1.1, "top_k": 20}',
    }
    reasoning = SystemSpec("gpt5", "gpt-5-mini", kind="endpoint", reasoning=True)
    assert endpoint_fields(reasoning, SAMPLED, "openai", how) == {"max_completion_tokens": 100}
    # OpenAI takes no top_k: the run stops before any request, naming the setting and the kind.
    with pytest.raises(ConfigError, match=r"generation.top_k = 20 .* server kind is openai"):
        endpoint_fields(gpt, SAMPLED, "openai", how)
    # Known without asking the server (OpenAI, or `server` set): refused at validation.
    with pytest.raises(ValueError, match=r"generation.top_k = 20 .* kind is openai \(the system"):
        validate_config(
            EvalConfig(systems=[served("http://x/v1", server="openai")], generation=SAMPLED)
        )
    validate_config(EvalConfig(systems=[served("http://x/v1", server="vllm")], generation=SAMPLED))


def test_answers_survive_429_and_500_cut_replies_are_flagged_and_a_rerun_sends_nothing(
    tmp_path, examples
):
    cut_question = examples[2].question

    def policy(request: ChatRequest) -> Reply | str:
        if request.question == cut_question:
            return Reply.cut("回答被截断")
        return answer_to(request.question)

    with JudgeServer(policy, kind="vllm") as server:
        quick = {"retry-after-ms": "20"}  # the client honours it: no second-long backoff
        server.inject(replace(Reply.rate_limited(), headers=quick))
        server.inject(replace(Reply.server_error(), headers=quick))
        # concurrency 1: the two failures hit the first question, retried by the client
        spec = served(server.base_url + "/", concurrency=1, max_retries=2)
        output = run(spec, examples, tmp_path)
        assert server.request_count == len(examples) + 2 and server.listings == 1
        expected = [answer_to(ex.question) for ex in examples]
        expected[2] = "回答被截断"
        assert output.answers == expected
        assert output.generation["finish_reasons"]["length"] == 1
        assert output.generation["generated"] == len(examples)
        assert output.generation["server"] == "vllm" and output.generation["status"] == "ok"
        rows = [json.loads(line) for line in (tmp_path / "generations/served.jsonl").open()]
        assert [r["finish_reason"] for r in rows] == ["stop", "stop", "length", "stop"]

        request = server.requests[-1]
        assert request.authorization == f"Bearer {SECRET}"
        assert request.body["messages"][0] == {"role": "system", "content": SYSTEM}
        assert request.body["max_tokens"] == 64 and request.body["temperature"] == 0.0
        assert request.body["chat_template_kwargs"] == {"enable_thinking": False}
        assert SECRET not in (tmp_path / "generations/served.jsonl").read_text(encoding="utf-8")

        # The same server spelled otherwise: every answer comes from the cache, nothing is sent.
        server.reset()
        again = run(served(f"http://localhost:{server.port}/v1"), examples, tmp_path)
        assert server.request_count == server.listings == 0
        assert again.answers == output.answers and again.generation["reused"] == len(examples)


def test_think_blocks_inline_or_returned_apart_are_saved_alike(tmp_path, examples):
    with JudgeServer(answering(), kind="transformers") as server:
        server.inject(Reply(content="<think>\n想一想。\n</think>\n\n多喝水。"))
        server.inject(Reply(content="\n\n多喝水。", reasoning="\n想一想。\n"))
        output = run(served(server.base_url, concurrency=1), examples[:2], tmp_path)
    assert output.answers == ["多喝水。", "多喝水。"] and output.thinks == ["想一想。", "想一想。"]


def test_a_server_that_does_not_say_its_kind_gets_openai_fields_only(tmp_path, examples):
    with JudgeServer(answering(), kind=None) as server:
        run(served(server.base_url), examples[:1], tmp_path)
        assert server.listings == 1
        assert set(server.requests[0].body) == {"model", "messages", "max_tokens", "temperature"}
        # A setting only other servers take stops before the first request, naming both.
        with pytest.raises(ConfigError, match=r"repetition_penalty = 1.2 .* kind is openai"):
            run(served(server.base_url), examples, tmp_path / "b", repetition_penalty=1.2)
        assert server.request_count == 1


def test_failed_malformed_and_empty_replies_make_a_partial_system_never_cached_answers(
    tmp_path, examples
):
    with JudgeServer(answering(), kind="vllm") as server:
        spec = served(server.base_url, concurrency=1, max_retries=1)
        server.inject(Reply(content="ok"))
        server.inject(Reply.garbage_json(), times=2)  # the second question: malformed twice
        server.inject(Reply.empty(), times=2)  # the third: empty twice
        server.inject(replace(Reply.server_error(), headers={"retry-after-ms": "10"}), times=2)
        output = run(spec, examples, tmp_path)
        assert output.answers == ["ok", "", "", ""]
        generation = output.generation
        assert generation["status"] == "partial" and generation["failed"] == 3
        assert generation["generated"] == 1
        assert "malformed reply" in json.dumps(generation["failures"])
        assert "an empty answer" in json.dumps(generation["failures"])
        assert "partial: 3 of 4 questions got no answer" in generation["notes"][0]
        rows = (tmp_path / "generations/served.jsonl").read_text(encoding="utf-8").splitlines()
        assert [json.loads(r)["answer"] for r in rows] == ["ok"]

        server.reset()
        again = run(spec, examples, tmp_path)  # asks for the three failed ones only
        assert server.request_count == 3 and again.generation["status"] == "ok"
        assert again.answers == ["ok", *(answer_to(ex.question) for ex in examples[1:])]


def test_the_same_server_error_on_the_first_requests_stops_the_run(tmp_path):
    examples = load_examples(DataSpec(source=str(SAMPLE_TEST)))
    # What `transformers serve` answers to a generation_config sent as a mapping.
    broken = Reply(status=500, body=b"Internal Server Error", content_type="text/plain")
    with JudgeServer(lambda request: broken, kind="transformers") as server:
        spec = served(server.base_url, concurrency=1, max_retries=0)
        with pytest.raises(
            EndpointError, match=r"first 3 requests all failed alike .*HTTP 500: Int"
        ):
            run(spec, examples, tmp_path)
        assert server.request_count == 3 and len(examples) == 12


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
        with pytest.raises(EndpointError, match="setting 'max_tokens'.*reasoning: true"):
            run(served(server.base_url, extra_body={}), examples, tmp_path / "a")
        assert server.request_count == 1
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


def test_sampling_that_changes_nothing_is_reported(tmp_path, examples):
    """A server that ignores temperature answers the same sampled or greedy: the report says so;
    one that samples does not get the note."""
    with JudgeServer(answering(), kind="vllm") as deaf:
        spec = served(deaf.base_url)
        output = run(spec, examples, tmp_path, do_sample=True)
        sampled = [r for r in deaf.requests if r.body["temperature"] > 0]
        assert len(sampled) == len(examples) and len(deaf.requests) == len(examples) + 4
        assert output.generation["sampling_check"] == {"questions": 4, "equal_to_greedy": 4}
        assert "sampling had no visible effect: 4 of 4" in output.generation["notes"][0]
        deaf.reset()
        again = run(spec, examples, tmp_path, do_sample=True)  # probes cached too
        assert deaf.request_count == 0 and again.generation["notes"] == output.generation["notes"]

    def sampling(request: ChatRequest) -> str:
        seed = request.body.get("seed")
        return answer_to(request.question) + (f" (seed {seed})" if seed is not None else "")

    with JudgeServer(sampling, kind="vllm") as server:
        output = run(served(server.base_url), examples, tmp_path / "b", do_sample=True)
    assert output.generation["sampling_check"] == {"questions": 4, "equal_to_greedy": 0}
    assert "notes" not in output.generation


def test_extra_body_strings_stay_strings_and_report_md_says_partial(tmp_path):
    """evaluate.py end to end: a JSON string in extra_body reaches the server as that string
    (the way `transformers serve` takes generation_config), and a partial system is marked."""
    extra = {"generation_config": '{"repetition_penalty": 1.1}', "flag": "true"}
    with JudgeServer(answering(), model="qwen3-4b-huatuo", kind="transformers") as server:
        server.inject(Reply.empty(), times=2)
        system = {
            "name": "served",
            "kind": "endpoint",
            "path": "qwen3-4b-huatuo",
            "base_url": server.base_url,
            "extra_body": extra,
            "concurrency": 1,
            "max_retries": 1,
        }
        report = evaluate_script.main(
            [
                "--systems",
                json.dumps([system]),
                "--test_set.source",
                str(SAMPLE_TEST),
                "--test_set.limit",
                "3",
                "--output_dir",
                str(tmp_path),
                "--scoring.n_resamples",
                "0",
                "--runtime.progress",
                "false",
            ]
        )
        bodies = [r.body for r in server.requests]
    assert all(b["generation_config"] == extra["generation_config"] for b in bodies)
    assert all(b["flag"] == "true" for b in bodies)
    generation = report["systems"][0]["generation"]
    assert generation["status"] == "partial" and generation["failed"] == 1
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "**partial: 1 of 3 questions got no answer" in md


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
        (
            SystemSpec("v", "m", kind="endpoint", server="vllm", api_key_env="VLLM_KEY"),
            None,
            "server: vllm needs the server's base_url",
        ),
    ],
)
def test_endpoint_config_errors_say_how_to_fix(spec, mcq, message):
    with pytest.raises(ValueError, match=message):
        validate_config(EvalConfig(systems=[spec], mcq_set=mcq))


# -- a real server: `transformers serve` --------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def _transformers_serve(model_dir: Path, log: Path) -> Iterator[str]:
    """`transformers serve` pinned to `model_dir` on a free loopback port: its base_url."""
    port = _free_port()
    command = [sys.executable, "-m", "transformers.cli.transformers", "serve", str(model_dir)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    with log.open("w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _argv(out: Path, systems: list[dict], *args: str) -> list[str]:
    return [
        "--systems",
        json.dumps(systems),
        "--test_set.source",
        str(SAMPLE_TEST),
        "--test_set.limit",
        "4",
        "--test_set.system_prompt",
        SYSTEM,
        "--generation.max_new_tokens",
        "12",
        "--generation.batch_size",
        "1",
        "--scoring.n_resamples",
        "0",
        "--scoring.perplexity",
        "false",
        "--runtime.progress",
        "false",
        "--output_dir",
        str(out),
        *args,
    ]


def _answers(out: Path, system: str) -> list[tuple[str, str | None]]:
    """(answer, think block) of each question, as `generations/<system>.jsonl` saved them."""
    lines = (out / "generations" / f"{system}.jsonl").read_text(encoding="utf-8").splitlines()
    rows = sorted((json.loads(line) for line in lines), key=lambda row: row["index"])
    return [(row["answer"], row["think"]) for row in rows]


@pytest.mark.slow
def test_a_real_transformers_server_answers_as_the_model_does_in_process(tmp_path, capsys):
    """One `transformers serve` of a tiny saved model: greedy answers (with a system prompt, and
    with thinking on) equal the in-process ones; sampling reaches it (`generation_config`) or
    the report says it had no effect; a rejected setting and a wrong model name stop after one
    request with the server's reason."""
    from transformers.utils.import_utils import is_serve_available

    if not is_serve_available():
        pytest.skip(
            "transformers[serving] is not installed (fastapi, uvicorn): pip install -e '.[dev]'"
        )
    from medsft.model.build import load_tokenizer
    from tests.helpers import tiny_model

    model_dir = tmp_path / "model"
    tiny_model().save_pretrained(model_dir)
    load_tokenizer("qwen3").save_pretrained(model_dir)
    local = {"name": "local", "kind": "model", "path": str(model_dir)}
    with _transformers_serve(model_dir, tmp_path / "serve.log") as base_url:
        served = {
            "name": "served",
            "kind": "endpoint",
            "path": str(model_dir),
            "base_url": base_url,
        }
        answers = {}
        for case, args in {
            "greedy": [],
            "thinking": ["--generation.enable_thinking", "true"],
        }.items():
            report = evaluate_script.main(_argv(tmp_path / case, [local, served], *args))
            assert report["systems"][1]["generation"]["server"] == "transformers"
            answers[case] = _answers(tmp_path / case, "served")
            assert answers[case] == _answers(tmp_path / case, "local"), case
        assert answers["thinking"] != answers["greedy"]  # the switch reached the server

        # Sampling sent as `transformers serve` takes it samples; as OpenAI fields it does not.
        told = {**served, "name": "told"}
        untold = {**served, "name": "untold", "server": "openai"}
        sampling = ["--generation.do_sample", "true", "--generation.temperature", "1.5"]
        sampling += ["--generation.top_p", "1.0", "--generation.top_k", "0"]
        report = evaluate_script.main(_argv(tmp_path / "sampled", [told, untold], *sampling))
        told_gen, untold_gen = (s["generation"] for s in report["systems"])
        assert (
            told_gen["sampling_check"]["equal_to_greedy"] < told_gen["sampling_check"]["questions"]
        )
        assert "notes" not in told_gen
        assert untold_gen["sampling_check"] == {"questions": 4, "equal_to_greedy": 4}
        assert "sampling had no visible effect" in untold_gen["notes"][0]
        md = (tmp_path / "sampled" / "report.md").read_text(encoding="utf-8")
        assert "**sampling had no visible effect: 4 of 4" in md

        # The server's reason in the one error line, after one request.
        lines = {}
        vllm_style = {**served, "server": "vllm"}
        wrong_model = {**served, "path": "demo-model"}
        for case, system, args in [
            ("setting", vllm_style, ["--generation.repetition_penalty", "1.1"]),
            ("model", wrong_model, []),
        ]:
            capsys.readouterr()
            with pytest.raises(SystemExit) as done:
                evaluate_script.cli_main(_argv(tmp_path / case, [system], *args))
            assert done.value.code == 1
            lines[case] = capsys.readouterr().err.strip().splitlines()[-1]
        log = (tmp_path / "serve.log").read_text()
    assert lines["setting"].startswith(f"error: system 'served': endpoint {base_url} rejected the")
    assert "'repetition_penalty' (HTTP 422: Unexpected fields in the request" in lines["setting"]
    assert (
        f"rejected the model name 'demo-model' (HTTP 400: Server is pinned to '{model_dir}'"
        in lines["model"]
    )
    # One request each: not retried, and not sent again for the other questions.
    assert log.count('"POST /v1/chat/completions HTTP/1.1" 422') == 1
    assert log.count('"POST /v1/chat/completions HTTP/1.1" 400') == 1
