"""evaluate.py's judge end to end against the loopback server: Chinese, GPT-5-style, unreachable."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from medsft.cli import evaluate as evaluate_script
from tests.judge_server import (
    BETTER,
    BETTER_ZH,
    JudgeServer,
    prefer_longer,
    prefer_longer_zh,
    reasoning_model,
)

ROOT = Path(__file__).resolve().parents[2]

SAMPLE_TEST = ROOT / "data" / "sample" / "test_zh_med.json"
SAMPLE_BASELINE = ROOT / "data" / "sample" / "baseline_answers.jsonl"


@pytest.fixture(autouse=True)
def _no_real_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def _argv(tmp_path: Path, base_url: str, *extra: str) -> list[str]:
    """Two answer-file systems (no model to load): the course's triples and the GPT baseline."""
    rows = json.loads(SAMPLE_TEST.read_text(encoding="utf-8"))[:6]
    course = tmp_path / "course_output.json"
    course.write_text(json.dumps([[q, r, r] for q, r in rows], ensure_ascii=False), "utf-8")
    systems = [
        {"name": "course", "path": str(course)},
        {"name": "gpt", "path": str(SAMPLE_BASELINE)},
    ]
    return [
        "--systems",
        json.dumps(systems),
        "--baseline",
        "gpt",
        "--test_set.source",
        str(SAMPLE_TEST),
        "--test_set.limit",
        "6",
        "--output_dir",
        str(tmp_path / "out"),
        "--judge.base_url",
        base_url,
        "--judge.model",
        "judge",
        "--scoring.n_resamples",
        "50",
        "--runtime.progress",
        "false",
        "--judge.max_retries",
        "1",
        *extra,
    ]


def test_chinese_judge_from_the_config_end_to_end(tmp_path):
    rubric = tmp_path / "rubric.txt"
    rubric.write_text("请特别注意用药安全。", encoding="utf-8")
    with JudgeServer(prefer_longer_zh) as server:
        report = evaluate_script.main(
            _argv(
                tmp_path,
                server.base_url,
                "--judge.language",
                "zh",
                "--judge.rubric",
                str(rubric),
                "--scoring.distinct_orders",
                "[]",
            )
        )
        prompt = server.requests[0].prompt
    assert "[问题]" in prompt and "请特别注意用药安全。" in prompt and "禁忌与剂量" not in prompt
    judge = report["judge"]
    assert judge["status"] == "ok" and judge["language"] == "zh"
    result = judge["results"]["course"]
    assert result["counts"]["win"] == 6 and result["n_judged"] == 6  # references are longer
    records = json.loads((tmp_path / "out" / "judge_course.json").read_text("utf-8"))["records"]
    assert records[0]["raw_ab"].endswith(BETTER_ZH)
    assert not any(name.startswith("distinct") for name in report["metrics"]["course"])
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "prompt language `zh`" in md and "generations/" not in md


def test_gpt5_judge_400_fails_the_judge_with_the_setting_to_change(tmp_path):
    with JudgeServer(reasoning_model) as server:
        failed = evaluate_script.main(_argv(tmp_path, server.base_url))
        assert server.request_count == 1  # stopped at once, not one 400 per pair
        judge = failed["judge"]
        assert judge["status"] == "failed" and "judge.temperature: null" in judge["reason"]
        md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
        assert "**Failed**" in md and "temperature" in md

    # The documented GPT-5 judge config (docs/design.md), as a user would copy it.
    doc = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    blocks = [b.split("```")[0] for b in doc.split("```yaml\n")[1:]]
    block = next(b for b in blocks if b.startswith("judge:") and "gpt-5" in b)
    (tmp_path / "gpt5.yaml").write_text(block, encoding="utf-8")
    with JudgeServer(reasoning_model) as server:
        ok = evaluate_script.main(
            _argv(tmp_path, server.base_url, "--config", str(tmp_path / "gpt5.yaml"))
        )
        assert ok["judge"]["status"] == "ok" and ok["judge"]["results"]["course"]["n_judged"] == 6
        body = server.requests[-1].body
        assert body["model"].startswith("gpt-5") and "temperature" not in body
        assert body["max_completion_tokens"] > 0 and "max_tokens" not in body


def test_unreachable_judge_is_failed_with_the_reason_never_ok(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    report = evaluate_script.main(
        _argv(tmp_path, f"http://127.0.0.1:{port}/v1", "--judge.concurrency", "1")
    )
    judge = report["judge"]
    assert judge["status"] == "failed" and "unreachable" in judge["reason"]
    assert judge["results"] == {}
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "**Failed**: judge endpoint" in md and "adjusted win rate" not in md


def test_a_judge_that_never_gives_a_verdict_is_failed_not_ok(tmp_path):
    with JudgeServer(lambda request: "两个回答都不错。") as server:
        report = evaluate_script.main(_argv(tmp_path, server.base_url))
    judge = report["judge"]
    assert judge["status"] == "failed" and "no pair of course could be judged" in judge["reason"]
    assert "no verdict label" in judge["reason"]
    assert judge["results"]["course"]["n_judged"] == 0


def _silent_on(question: str):
    """A length-preferring judge that never gives a verdict on `question` (negates instead)."""

    def policy(request):
        if request.pair()[0] == question:
            return f"I would not say {BETTER}"
        return prefer_longer(request)

    return policy


def test_judge_is_partial_with_counts_past_the_allowed_failed_share(tmp_path):
    first = json.loads(SAMPLE_TEST.read_text(encoding="utf-8"))[0][0]
    with JudgeServer(_silent_on(first)) as server:
        report = evaluate_script.main(_argv(tmp_path, server.base_url))
        md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
        allowed = evaluate_script.main(
            _argv(tmp_path, server.base_url, "--judge.max_failed_share", "0.2")
        )  # the same judgements (cached), a larger allowance
    judge = report["judge"]
    assert judge["status"] == "partial" and judge["partial"]["course"] == {
        "failed": 1,
        "pairs": 6,
        "share": round(1 / 6, 4),
    }
    assert "course: 1 of 6 (17%)" in judge["reason"] and "max_failed_share (5%)" in judge["reason"]
    result = judge["results"]["course"]
    assert result["n_errors"] == 1 and result["n_judged"] == 5
    assert "**Partial**: pairs that could not be judged exceed" in md
    assert "| course | 5 | 0 | 0 | 1.00 [1.00, 1.00] |" in md  # the 5 judged pairs, and the LC
    assert allowed["judge"]["status"] == "ok" and "partial" not in allowed["judge"]


def test_length_controlled_win_rate_is_in_the_json_and_beside_the_raw_rate(tmp_path):
    # Half of the course answers shortened, so that each system is the longer one in some pairs.
    rows = json.loads(SAMPLE_TEST.read_text(encoding="utf-8"))[:6]
    course = [r if i % 2 else "请及时就医。" for i, (_, r) in enumerate(rows)]
    answers = tmp_path / "course_output.json"
    with JudgeServer(prefer_longer) as server:
        argv = _argv(tmp_path, server.base_url)
        answers.write_text(
            json.dumps(
                [[q, r, a] for (q, r), a in zip(rows, course, strict=True)], ensure_ascii=False
            ),
            "utf-8",
        )
        report = evaluate_script.main(argv)
    result = report["judge"]["results"]["course"]
    controlled = result["length_controlled"]
    # 3 pairs on each side are too few to predict equal lengths from (10 each): none, and why.
    assert result["length_controlled_win_rate"] is None is controlled["estimate"]
    assert (controlled["n_longer"], controlled["n_shorter"]) == (3, 3)
    assert controlled["note"].startswith(f"No length-controlled rate: {controlled['reason']}")
    assert controlled["similar_length"]["max_difference"] == 0.1
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    header = "| adjusted win rate (95% CI) | length-controlled (95% CI) |"
    assert header in md and "AlpacaEval 2's approach" in md
    judge = md[md.index("## Judge") :]
    row = next(line for line in judge.splitlines() if line.startswith("| course |"))
    assert row.split(" | ")[5] == "–"
    assert f"Length-controlled rate of course: none, {controlled['reason']}." in judge


def test_length_controlled_rate_says_why_when_one_system_is_always_longer(tmp_path):
    with JudgeServer(prefer_longer) as server:
        report = evaluate_script.main(_argv(tmp_path, server.base_url))
    result = report["judge"]["results"]["course"]
    assert result["length_controlled_win_rate"] is None
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "Length-controlled rate of course: none, A's answer is longer in 6 and shorter" in md
