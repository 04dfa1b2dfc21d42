"""data.paraphrase: LLM paraphrases of training questions through the endpoint layer, each
checked for the same meaning, against a real HTTP server on 127.0.0.1 (tests/judge_server.py)."""

from __future__ import annotations

import json
import logging
import time

import pytest

from medsft.data.augment import AugmentSettings
from medsft.data.paraphrase import ParaphraseSettings, paraphrase_file

ANSWER = "建议到医院就诊，由医生检查后再决定治疗。"


def _qa(row: dict) -> list[dict]:
    return [
        {"role": "user", "content": row["question"]},
        {"role": "assistant", "content": row["answer"]},
    ]


PARA_KEY = "sk-test-DO-NOT-LEAK-2c9e71b4"
PARA_QUESTIONS = [
    "孩子发烧38.5度两天了，应该怎么办？",
    "高血压吃什么药比较好？",
    "胃痛三个月，需要做胃镜吗？",
    "月经推迟十天，没有怀孕，是什么原因？",
]


def _para_rows(questions: list[str] = PARA_QUESTIONS) -> list[tuple[str, list[dict], bool]]:
    """Every question trainable, as `medsft.cli.augment.conversations` yields rows."""
    return [
        (f"q{i}", _qa({"question": q, "answer": ANSWER}), True) for i, q in enumerate(questions)
    ]


def _paraphrase(fake, out, rows=None, **settings):
    """`paraphrase_file` asking `fake` (a JudgeServer), every row's copy asked for."""
    fields = dict(model="para", base_url=fake.base_url, api_key_env="PARA_KEY", timeout=5)
    para = ParaphraseSettings(**{**fields, "max_retries": 1, **settings})
    rows = _para_rows() if rows is None else rows
    return paraphrase_file(rows, para, AugmentSettings(fraction=1.0), str(out), progress=False)


def _records(out) -> list[dict]:
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def para_key(monkeypatch):
    monkeypatch.setenv("PARA_KEY", PARA_KEY)


def test_paraphrases_judged_different_are_dropped_and_counted_and_a_rerun_sends_nothing(
    tmp_path, para_key, caplog
):
    from tests.judge_server import JudgeServer, paraphrase_of, paraphrasing

    out = tmp_path / "para.jsonl"
    policy = paraphrasing(lambda original: "不同" if "发烧" in original else "相同")
    with caplog.at_level(logging.DEBUG), JudgeServer(policy) as server:
        done = _paraphrase(server, out)
        sent = server.request_count
        assert _paraphrase(server, out).counts() == {**done.counts(), "requests": 0, "cached": 8}
        assert server.request_count == sent and server.listings == 1  # the rerun asked nothing
    assert sent == 8 and done.requests == 9  # a paraphrase and a check each, and one probe
    assert (done.asked, done.kept, done.different, done.unclear, done.failed) == (4, 3, 1, 0, 0)
    assert "4 paraphrased copies asked, 3 kept, 1 dropped as different" in done.summary()
    records = _records(out)
    copies = {r["id"]: r for r in records if r["augmented"]}
    assert len(records) == 4 + 3 and set(copies) == {"q1", "q2", "q3"}
    for key, record in copies.items():
        question = PARA_QUESTIONS[int(key[1:])]
        assert record["messages"][0]["content"] == paraphrase_of(question)
        assert record["messages"][1]["content"] == ANSWER and record["same_meaning"] is True
    # Each check asked about the original and its paraphrase; the key went in the header only.
    checks = [r.prompt for r in server.requests if "原问题：" in r.prompt]
    for q in PARA_QUESTIONS:
        assert sum(f"原问题：{q}\n\n改写：{paraphrase_of(q)}" in c for c in checks) == 1
    assert {r.authorization for r in server.requests} == {f"Bearer {PARA_KEY}"}
    for text in (out.read_text("utf-8"), (tmp_path / "para.jsonl.cache.jsonl").read_text("utf-8")):
        assert PARA_KEY not in text
    assert PARA_KEY not in caplog.text


def test_a_malformed_reply_is_retried_and_an_unclear_check_gets_a_follow_up(tmp_path, para_key):
    from tests.judge_server import JudgeServer, Reply, paraphrasing

    policy = paraphrasing(lambda original: "说不好" if "胃痛" in original else "相同")
    with JudgeServer(policy) as server:
        server.inject(Reply.garbage_json())
        done = _paraphrase(server, tmp_path / "para.jsonl")
        follow_ups = [r for r in server.requests if r.follow_up is not None]
    assert (done.kept, done.unclear, done.different, done.failed) == (3, 1, 0, 0)
    # 4 paraphrases and 4 checks, the malformed reply asked again, one follow-up.
    assert server.request_count == 8 + 1 + 1 and len(follow_ups) == 1
    assert "胃痛" in follow_ups[0].prompt and "相同" in follow_ups[0].follow_up
    assert "1 dropped as different (1 of them without a clear verdict)" in done.summary()


def test_fields_follow_the_server_kind_and_think_blocks_are_split_off(tmp_path, para_key):
    from medsft.errors import ConfigError
    from tests.judge_server import JudgeServer, paraphrase_of, paraphrasing

    def thinking(question: str) -> str:
        return f"<think>\n先想想怎么改写。\n</think>\n\n{paraphrase_of(question)}"

    rows = _para_rows(PARA_QUESTIONS[:1])
    for kind, extra in (
        ("vllm", {"chat_template_kwargs": {"enable_thinking": False}}),
        ("openai", None),
    ):
        with JudgeServer(paraphrasing(rewrite=thinking), kind=kind) as server:
            out = tmp_path / f"{kind}.jsonl"
            assert _paraphrase(server, out, rows).kept == 1
            bodies = [r.body for r in server.requests]
        assert all(
            b.get("chat_template_kwargs") == (extra or {}).get("chat_template_kwargs")
            for b in bodies
        )
        assert _records(out)[1]["messages"][0]["content"] == paraphrase_of(PARA_QUESTIONS[0])
    # A setting the server kind cannot take stops before any request.
    with JudgeServer(paraphrasing()) as server:
        with pytest.raises(ConfigError, match=r"paraphrase.enable_thinking = True .*openai"):
            _paraphrase(server, tmp_path / "x.jsonl", rows, server="openai", enable_thinking=True)
        assert server.request_count == 0 and server.listings == 0


def test_paraphrases_are_asked_concurrently(tmp_path, para_key):
    from tests.judge_server import JudgeServer, Reply, paraphrase_of, paraphrasing

    arrived = []

    def slow(question: str) -> Reply:
        arrived.append(time.monotonic())
        return Reply(content=paraphrase_of(question), delay=1.0)

    questions = [f"第{i}个问题：头痛怎么办？" for i in range(6)]
    with JudgeServer(paraphrasing(rewrite=slow)) as server:
        done = _paraphrase(server, tmp_path / "para.jsonl", _para_rows(questions), check=False)
    assert done.kept == 6 and len(arrived) == 6
    # The first request goes alone; the other five are all sent before any is answered.
    assert max(arrived[1:]) - min(arrived[1:]) < 1.0 and min(arrived[1:]) - arrived[0] >= 0.9


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"base_url": None}, r"OPENAI_API_KEY is not set: export the API key there"),
        ({"base_url": None, "server": "vllm"}, r"server: vllm needs paraphrase.base_url"),
        ({"base_url": "http://me:sk-x@127.0.0.1:8000/v1"}, r"must not carry credentials"),
        ({"prompt": "改写这个问题"}, r"paraphrase.prompt must hold \{question\}"),
        ({"check_prompt": "{original}"}, r"check_prompt must hold \{original\} and \{paraphrase"),
        ({"concurrency": 0}, r"concurrency must be >= 1"),
    ],
)
def test_paraphrase_settings_that_cannot_work_fail_before_any_request(fields, message, monkeypatch):
    from medsft.errors import ConfigError

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    settings = ParaphraseSettings(**{"base_url": "http://127.0.0.1:9/v1", **fields})
    with pytest.raises(ConfigError, match=message):
        settings.validate()
