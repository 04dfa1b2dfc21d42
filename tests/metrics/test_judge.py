"""Pairwise judge against a real chat-completions server on 127.0.0.1 (see judge_server.py)."""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from medsft.metrics.judge import (
    LABEL_FOLLOW_UP,
    LABEL_FOLLOW_UP_ZH,
    LABELS,
    LABELS_ZH,
    JudgeConfigError,
    JudgeResult,
    ajudge_pairs,
    judge_pairs,
)
from tests.judge_server import (
    BETTER,
    BETTER_ZH,
    EQUAL,
    JudgeServer,
    Reply,
    prefer_first,
    prefer_longer,
    prefer_longer_zh,
    reasoning_model,
)

SECRET = "sk-test-DO-NOT-LEAK-8f3a2c91d4"
QUESTIONS = [
    "感冒发烧怎么办？",
    "高血压患者能喝咖啡吗？",
    "孩子咳嗽一周了要紧吗？",
    "布洛芬一次吃多少？",
]
LONG = [
    "多休息多喝水，体温超过38.5度可服用对乙酰氨基酚，持续三天不退请就医。",
    "适量饮用一般可以，但血压控制不佳者应限制咖啡因，并咨询医生。",
    "咳嗽一周若伴发热、气喘或精神差，应尽快就医；否则注意观察并保持空气湿润。",
    "成人一般每次200至400毫克，每日不超过1200毫克，胃溃疡患者慎用，请遵医嘱。",
]
SHORT = ["多喝水。", "可以喝。", "没关系。", "吃一片。"]


@pytest.fixture(autouse=True)
def _no_real_key(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's real key must never be sent to the test server.
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


@pytest.fixture
def server():
    with JudgeServer(prefer_longer) as srv:
        yield srv


def run(server: JudgeServer, a=LONG, b=SHORT, questions=QUESTIONS, **kwargs) -> JudgeResult:
    """judge_pairs with test-speed defaults."""
    options = dict(
        model="test-judge",
        base_url=server.base_url,
        timeout=5.0,
        max_retries=3,
        progress=False,
        n_resamples=200,
    )
    options.update(kwargs)
    return judge_pairs(questions, a, b, **options)


# -- validation ---------------------------------------------------------------------------------
def test_validation_names_the_problem(tmp_path: Path) -> None:
    kw = dict(model="m", base_url="http://127.0.0.1:9/v1", progress=False)
    with pytest.raises(ValueError, match="differ in length: 2, 2, 1"):
        judge_pairs(["q1", "q2"], ["a", "a"], ["b"], **kw)
    with pytest.raises(ValueError, match=r"answers_b\[1\] is empty"):
        judge_pairs(["q1", "q2"], ["a", "a"], ["b", "  "], **kw)
    with pytest.raises(TypeError, match=r"questions\[0\] must be a str"):
        judge_pairs([None], ["a"], ["b"], **kw)
    with pytest.raises(JudgeConfigError, match="OPENAI_API_KEY"):
        judge_pairs(["q"], ["a"], ["b"], model="m", progress=False)
    bad = tmp_path / "t.txt"
    bad.write_text("{question} {answer_1}", encoding="utf-8")
    with pytest.raises(ValueError, match=r"lacks \{answer_2\}"):
        judge_pairs(["q"], ["a"], ["b"], template=bad, **kw)


# -- protocol -----------------------------------------------------------------------------------
def test_position_biased_judge_gives_only_inconsistent_ties() -> None:
    with JudgeServer(prefer_first) as server:
        result = run(server)
        assert server.request_count == 2 * len(QUESTIONS)
    assert result.n_judged == 4 and result.n_errors == 0
    assert result.tie_rate == 1.0 and result.win_rate == result.loss_rate == 0.0
    assert result.consistency_rate == 0.0 and result.adjusted_win_rate == 0.5
    # A's answers are the longer ones in every pair: no pair to predict equal lengths from.
    assert math.isnan(result.length_controlled_win_rate)
    assert result.length_controlled.reason.startswith("A's answer is longer in 4 and shorter in 0")
    assert result.counts["inconsistent"] == 4
    record = result.records[0]
    assert (record.verdict_ab, record.verdict_ba) == ("better", "better")
    assert record.outcome == "tie" and record.consistent is False
    assert record.reasons_ab == "The first answer is better."


def test_longer_answer_judge_gives_wins_to_the_longer_system(server: JudgeServer) -> None:
    a = [LONG[0], LONG[1], SHORT[2], LONG[3]]
    b = [SHORT[0], SHORT[1], LONG[2], LONG[3]]
    result = run(server, a=a, b=b)
    assert [r.outcome for r in result.records] == ["win", "win", "loss", "tie"]
    assert all(r.consistent for r in result.records)
    assert result.win_rate == 0.5 and result.loss_rate == 0.25 and result.tie_rate == 0.25
    assert result.adjusted_win_rate == pytest.approx(0.625)
    assert result.consistency_rate == 1.0
    assert result.interval is not None and result.interval.estimate == pytest.approx(0.625)
    assert 0.0 <= result.interval.low <= 0.625 <= result.interval.high <= 1.0
    # Every order was really sent, with each system's answer in each slot.
    shown = {req.pair()[1:] for req in server.requests}
    assert (LONG[0], SHORT[0]) in shown and (SHORT[0], LONG[0]) in shown
    # 7, not 8: in the last pair A == B, so both orders are one prompt, sent once.
    assert result.usage.requests == server.request_count == 7
    assert result.usage.prompt_tokens > 0
    assert result.usage.completion_tokens > 0 and result.usage.cached_judgements == 0
    swapped = run(server, a=b, b=a)
    assert [r.outcome for r in swapped.records] == ["loss", "loss", "win", "tie"]


def test_prompt_has_rubric_template_file_and_literal_placeholders(
    server: JudgeServer, tmp_path: Path
) -> None:
    question = "为什么 {answer_2} 不会被替换？"
    run(server, a=LONG[:1], b=SHORT[:1], questions=[question], concurrency=1)
    prompt = server.requests[0].prompt
    assert server.requests[0].pair() == (question, LONG[0], SHORT[0])
    assert "helpfulness, relevance, accuracy and level of detail" in prompt
    assert "Contraindications and dosage" in prompt
    assert server.requests[0].body["messages"][0]["role"] == "system"

    server.reset()
    custom = tmp_path / "mine.txt"
    custom.write_text(
        "MINE\n[Question]\n{question}\n\n[The Start of Assistant 1's Answer]\n{answer_1}\n"
        "[The End of Assistant 1's Answer]\n[The Start of Assistant 2's Answer]\n{answer_2}\n"
        "[The End of Assistant 2's Answer]\n",
        encoding="utf-8",
    )
    result = run(
        server, a=LONG[:1], b=SHORT[:1], questions=QUESTIONS[:1], template=custom, rubric=False
    )
    assert server.requests[0].prompt.startswith("MINE\n") and result.win_rate == 1.0
    assert "Contraindications" not in server.requests[0].prompt
    assert not result.rubric


# -- robustness ---------------------------------------------------------------------------------
def test_transient_http_errors_are_retried(server: JudgeServer) -> None:
    quick = {"retry-after-ms": "20"}  # the client honours it: no second-long backoff
    server.inject(replace(Reply.rate_limited(), headers=quick), times=2)
    server.inject(replace(Reply.server_error(500), headers=quick))
    server.inject(replace(Reply.server_error(503), headers=quick))
    # The first request goes alone (see medsft.metrics.endpoint), so it meets all four.
    result = run(server, max_retries=4)
    assert result.n_errors == 0 and result.win_rate == 1.0
    assert server.request_count == 8 + 4 == result.usage.requests


def test_timeout_is_retried_without_waiting_for_the_slow_reply(server: JudgeServer) -> None:
    server.inject(Reply.slow(3.0, content=EQUAL))
    start = time.monotonic()
    result = run(server, timeout=0.3, concurrency=1)
    assert time.monotonic() - start < 2.5
    assert result.n_errors == 0 and result.win_rate == 1.0
    assert server.request_count == 9


def test_dropped_connections_and_garbage_bodies_are_retried(server: JudgeServer) -> None:
    server.inject(Reply.dropped())
    server.inject(Reply.garbage_json())
    server.inject(Reply(body=b"<html>bad gateway</html>", content_type="text/html"))
    server.inject(Reply(body=b'{"object": "chat.completion"}'))
    result = run(server)
    assert result.n_errors == 0 and result.win_rate == 1.0
    assert server.request_count == 8 + 4


def test_exhausted_retries_are_errors_left_out_of_the_rates(server: JudgeServer) -> None:
    server.inject(Reply.server_error(502), times=3)
    result = run(
        server, a=LONG[:1], b=SHORT[:1], questions=QUESTIONS[:1], max_retries=2, concurrency=1
    )
    assert result.n_errors == 1 and result.n_judged == 0
    assert math.isnan(result.win_rate) and result.interval is None
    record = result.records[0]
    assert record.outcome == "error" and record.consistent is None
    assert "ab: gave up after 3 attempt(s): HTTP 502" in (record.error or "")
    assert record.verdict_ba == "worse"  # the other order still came back
    summary = result.to_dict()
    assert summary["win_rate"] is None and summary["interval"] is None
    json.dumps(summary, allow_nan=False)


def test_reply_without_label_is_retried_once_then_an_error() -> None:
    served: dict[str, int] = {}

    def policy(request):
        question, first, _ = request.pair()
        served[question] = served.get(question, 0) + 1
        if question == QUESTIONS[0]:
            return "Both answers have merit."  # never a label
        if question == QUESTIONS[1] and served[question] == 1:
            return "Hmm."  # a label only on the retry
        return prefer_longer(request)

    with JudgeServer(policy) as server:
        result = run(server, concurrency=1)
        first, retry = [r for r in server.requests if r.pair()[0] == QUESTIONS[1]][:2]
    assert served[QUESTIONS[0]] == 4  # both orders, each asked twice
    assert served[QUESTIONS[1]] == 3
    bad, retried = result.records[0], result.records[1]
    # Every reply of the conversation is kept: the first one, then the answer to the follow-up.
    assert bad.outcome == "error"
    assert bad.raw_ab == "Both answers have merit.\n\nBoth answers have merit."
    assert "no verdict label" in (bad.error or "")
    assert retried.outcome == "win"
    assert result.n_errors == 1 and result.n_judged == 3 and result.win_rate == 1.0
    # The retry is not the same request again: the unlabeled reply, then the label follow-up.
    assert first.follow_up is None and retry.follow_up == LABEL_FOLLOW_UP
    assert retry.body["messages"][: len(first.body["messages"])] == first.body["messages"]
    assert retry.body["messages"][-2] == {"role": "assistant", "content": "Hmm."}


def test_label_follow_up_gets_the_verdict_the_first_reply_lacked(tmp_path: Path) -> None:
    def forgetful(request):
        # Explains but never concludes, unless asked for the label.
        if request.follow_up is None:
            _, first, second = request.pair()
            return f"Answer 1 has {len(first)} characters, answer 2 has {len(second)}."
        assert all(label in request.follow_up for label in LABELS.values())
        return prefer_longer(request).splitlines()[-1]

    cache = tmp_path / "judge.jsonl"
    with JudgeServer(forgetful) as server:
        result = run(server, cache_path=cache)
        assert server.request_count == 2 * 8  # each order: the prompt, then the follow-up
        assert sum(r.follow_up == LABEL_FOLLOW_UP for r in server.requests) == 8
        assert result.n_errors == 0 and result.win_rate == 1.0
        record = result.records[0]
        assert record.raw_ab.startswith("Answer 1 has") and record.raw_ab.endswith(BETTER)
        assert record.reasons_ab.startswith("Answer 1 has")
        # Both requests of a judgement were billed, and the cached verdict costs nothing later.
        assert result.usage.requests == 16
        server.reset()
        again = run(server, cache_path=cache)
        assert server.request_count == 0 and again.usage.cached_judgements == 8
        assert [r.outcome for r in again.records] == [r.outcome for r in result.records]


def test_concurrency_is_bounded() -> None:
    lock, in_flight, peak = threading.Lock(), [0], [0]

    def policy(request):
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        time.sleep(0.05)
        with lock:
            in_flight[0] -= 1
        return prefer_longer(request)

    with JudgeServer(policy) as server:
        run(server, concurrency=3)
    assert peak[0] == 3


# -- cache ----------------------------------------------------------------------------------------
def test_second_run_is_served_from_cache(server: JudgeServer, tmp_path: Path) -> None:
    cache = tmp_path / "judge.jsonl"
    first = run(server, cache_path=cache)
    assert len(cache.read_text(encoding="utf-8").splitlines()) == 8
    server.reset()
    second = run(server, cache_path=cache)
    assert server.request_count == 0
    assert second.to_dict()["records"] != first.to_dict()["records"]  # cached flags differ
    assert [r.outcome for r in second.records] == [r.outcome for r in first.records]
    assert all(r.cached_ab and r.cached_ba for r in second.records)
    assert second.usage.requests == second.usage.prompt_tokens == 0
    assert second.usage.cached_judgements == 8
    assert second.usage.cached_prompt_tokens == first.usage.prompt_tokens
    # A different judge model or prompt must not reuse those replies.
    run(server, cache_path=cache, model="other-judge")
    assert server.request_count == 8
    run(server, cache_path=cache, rubric=False)
    assert server.request_count == 16


def test_cache_is_per_endpoint(server: JudgeServer, tmp_path: Path) -> None:
    cache = tmp_path / "judge.jsonl"
    run(server, cache_path=cache)
    with JudgeServer(prefer_first) as elsewhere:
        # The same model name on another endpoint is another judge: its verdicts are its own.
        other = run(elsewhere, cache_path=cache)
        assert elsewhere.request_count == 8 and other.usage.cached_judgements == 0
        assert other.tie_rate == 1.0  # prefer_first's verdicts, not the cached prefer_longer ones
    server.reset()
    # Credentials in the URL are not part of the endpoint: the first endpoint's replies are reused.
    same = run(server, cache_path=cache, base_url=server.base_url.replace("//", "//u:pw@"))
    assert server.request_count == 0 and same.usage.cached_judgements == 8


def test_interrupted_run_resumes_from_a_torn_cache(server: JudgeServer, tmp_path: Path) -> None:
    cache = tmp_path / "judge.jsonl"
    run(server, a=LONG[:2], b=SHORT[:2], questions=QUESTIONS[:2], cache_path=cache)
    with cache.open("a", encoding="utf-8") as fh:
        fh.write('{"key": "cut-off-by-a-kill')  # no newline: the process died mid-write
    server.reset()
    result = run(server, cache_path=cache)
    assert server.request_count == 4  # only the two new pairs
    assert result.usage.cached_judgements == 4 and result.win_rate == 1.0
    lines = cache.read_text(encoding="utf-8").splitlines()
    assert sum(1 for line in lines if line.startswith('{"key": "cut')) == 1
    assert len([json.loads(line) for line in lines if not line.startswith('{"key": "cut')]) == 8


# -- secrets ----------------------------------------------------------------------------------------
def test_api_key_is_sent_but_never_stored(
    server: JudgeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUDGE_KEY", SECRET)
    cache = tmp_path / "judge.jsonl"
    echo = Reply(status=400, body=f'{{"error": {{"message": "bad key {SECRET}"}}}}'.encode())
    # After a verdict, a rejected request is that pair's error (the settings were fine).
    server.policy = lambda request: echo if request.index == 1 else prefer_longer(request)
    result = run(server, cache_path=cache, api_key_env="JUDGE_KEY", concurrency=1)
    assert server.requests[0].authorization == f"Bearer {SECRET}"
    assert result.n_errors == 1 and "bad key ***" in (result.records[0].error or "")
    for text in (
        cache.read_text(encoding="utf-8"),
        json.dumps(result.to_dict(), ensure_ascii=False),
        repr(result),
        str(result),
        repr(result.records),
    ):
        assert SECRET not in text
    # Before any verdict it stops judging, the key redacted from the server's message too.
    server.policy = lambda request: echo
    with pytest.raises(JudgeConfigError, match=r"HTTP 400: bad key \*\*\*") as info:
        run(server, api_key_env="JUDGE_KEY", concurrency=1)
    assert SECRET not in str(info.value)


def test_missing_key_with_base_url_sends_a_placeholder(server: JudgeServer) -> None:
    run(server, a=LONG[:1], b=SHORT[:1], questions=QUESTIONS[:1])
    assert server.requests[0].authorization == "Bearer EMPTY"


def test_rejected_key_stops_the_run(server: JudgeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    server.inject(Reply(status=401, body=b'{"error": {"message": "Incorrect API key sk-te***d4"}}'))
    with pytest.raises(JudgeConfigError, match="HTTP 401") as info:
        run(server, concurrency=1)
    assert SECRET not in str(info.value)


# -- API ------------------------------------------------------------------------------------------
def test_to_dict_is_json_and_has_the_report_keys(server: JudgeServer) -> None:
    # A's answer is the longer one in two pairs and the shorter in two: too few for a
    # length-controlled rate, which says why.
    mixed = dict(a=[LONG[0], SHORT[1], LONG[2], SHORT[3]], b=[SHORT[0], LONG[1], SHORT[2], LONG[3]])
    summary = run(
        server, base_url=server.base_url.replace("http://", "http://user:pw@"), **mixed
    ).to_dict()
    assert json.loads(json.dumps(summary, allow_nan=False)) == summary
    assert {
        "model",
        "base_url",
        "template_sha256",
        "rubric",
        "n_pairs",
        "n_judged",
        "n_errors",
        "counts",
        "win_rate",
        "loss_rate",
        "tie_rate",
        "adjusted_win_rate",
        "consistency_rate",
        "interval",
        "usage",
        "records",
        "length_controlled_win_rate",
        "length_controlled",
    } <= summary.keys()
    controlled = summary["length_controlled"]
    assert controlled["estimate"] is None is summary["length_controlled_win_rate"]
    assert controlled["reason"].startswith("A's answer is longer in 2 and shorter in 2 of 4 pairs")
    assert summary["base_url"] == server.base_url  # credentials in the URL are dropped
    assert summary["records"][0]["question"] == QUESTIONS[0]
    assert {"raw_ab", "raw_ba", "reasons_ab", "verdict_ba", "outcome"} <= summary["records"][
        0
    ].keys()


def test_async_variant_and_running_loop(server: JudgeServer) -> None:
    async def main() -> JudgeResult:
        with pytest.raises(RuntimeError, match="ajudge_pairs"):
            judge_pairs(QUESTIONS, LONG, SHORT, model="m", base_url=server.base_url)
        return await ajudge_pairs(
            QUESTIONS, LONG, SHORT, model="m", base_url=server.base_url, progress=False
        )

    assert asyncio.run(main()).win_rate == 1.0


def test_identical_prompts_are_sent_once(server: JudgeServer) -> None:
    result = run(server, a=SHORT, b=SHORT)
    assert server.request_count == 4  # A == B: both orders are the same prompt
    assert result.tie_rate == 1.0 and result.consistency_rate == 1.0


# -- Chinese judge ----------------------------------------------------------------------------------
def test_chinese_prompt_gets_chinese_verdicts_and_a_chinese_follow_up() -> None:
    answered: set[str] = set()

    def forgetful_zh(request):
        # Each question's first reply lacks the verdict; the follow-up gets it.
        question = request.pair()[0]
        if question not in answered:
            answered.add(question)
            return "两个回答各有长处。"
        return prefer_longer_zh(request)

    with JudgeServer(forgetful_zh) as server:
        result = run(server, language="zh", concurrency=1)
        first = server.requests[0]
    assert result.n_errors == 0 and result.win_rate == 1.0
    assert "[问题]" in first.prompt and "禁忌与剂量" in first.prompt  # Chinese template, rubric
    assert all(label in first.prompt for label in LABELS_ZH.values())
    assert (
        first.body["messages"][0]["role"] == "system"
        and "公正" in first.body["messages"][0]["content"]
    )
    follow_ups = [r.follow_up for r in server.requests if r.follow_up]
    assert follow_ups and set(follow_ups) == {LABEL_FOLLOW_UP_ZH}
    record = result.records[0]
    assert record.raw_ab.endswith(BETTER_ZH) and record.reasons_ab.startswith("两个回答各有长处")


# -- cache keys -------------------------------------------------------------------------------------
def test_cache_keys_on_what_was_asked_not_on_the_url_spelling(
    server: JudgeServer, tmp_path: Path
) -> None:
    cache = tmp_path / "judge.jsonl"
    run(server, cache_path=cache)
    for spelling in (
        f"http://localhost:{server.port}/v1",
        f"http://127.0.0.1:{server.port}/v1/",
        f"HTTP://LOCALHOST:{server.port}/v1//",
    ):
        server.reset()
        again = run(server, cache_path=cache, base_url=spelling)
        assert server.request_count == 0 and again.usage.cached_judgements == 8, spelling
    run(server, cache_path=cache, system_prompt="Be terse.")  # another prompt: asked anew
    assert server.request_count == 8


# -- settings an endpoint rejects -------------------------------------------------------------------
def test_reasoning_model_400_stops_judging_and_names_the_setting() -> None:
    # A fresh server per case: requests cancelled in flight may still be logged after a reset.
    with JudgeServer(reasoning_model) as server:
        with pytest.raises(JudgeConfigError, match=r"'temperature'.*judge\.temperature: null"):
            run(server)
        assert server.request_count == 1  # the first request goes alone
    with JudgeServer(reasoning_model) as server:
        with pytest.raises(JudgeConfigError, match=r"'max_tokens'.*max_completion_tokens"):
            run(server, temperature=None, max_tokens=256, concurrency=1)
        assert server.request_count == 1
    with JudgeServer(reasoning_model) as server:
        result = run(server, temperature=None, max_completion_tokens=256)
        assert result.n_errors == 0 and result.win_rate == 1.0
        body = server.requests[0].body
        assert body["max_completion_tokens"] == 256 and "temperature" not in body
        with pytest.raises(ValueError, match="not both"):
            run(server, max_tokens=1, max_completion_tokens=1)


def test_a_request_rejected_before_any_verdict_stops_after_that_request() -> None:
    def invalid(request):
        return Reply(status=400, body=b'{"error": {"message": "Invalid request: bad format"}}')

    with JudgeServer(invalid) as server:
        with pytest.raises(JudgeConfigError, match=r"rejected the request \(HTTP 400: Invalid"):
            run(server, concurrency=1)
        assert server.request_count == 1  # not retried, and not sent for the other pairs


# -- unreachable endpoint ---------------------------------------------------------------------------
def test_closed_port_stops_judging_after_a_few_connection_failures() -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(JudgeConfigError, match="unreachable: 3 requests in a row"):
        judge_pairs(
            QUESTIONS,
            LONG,
            SHORT,
            model="m",
            base_url=f"http://127.0.0.1:{port}/v1",
            max_retries=1,
            concurrency=1,
            progress=False,
        )
    assert time.monotonic() - start < 15
