"""evaluate.py's judge end to end against the loopback server: Chinese, GPT-5-style, unreachable."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import yaml

from medsft.cli import evaluate as evaluate_script
from tests.judge_server import (
    BETTER,
    BETTER_ZH,
    JudgeServer,
    Reply,
    answering,
    judge_by,
    prefer_first,
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
    assert f"Length, course: {controlled['note']}" in judge.splitlines()
    similar = controlled["similar_length"]
    assert row.split(" | ")[6] == f"– (n={similar['n']})"  # no rate: a side has no similar pair


def test_length_controlled_rate_says_why_when_one_system_is_always_longer(tmp_path):
    with JudgeServer(prefer_longer) as server:
        report = evaluate_script.main(_argv(tmp_path, server.base_url))
    result = report["judge"]["results"]["course"]
    assert result["length_controlled_win_rate"] is None
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "Length, course: No length-controlled rate: A's answer is longer in 6 and shorter" in md


# -- how far to trust the judge ----------------------------------------------------------------
def _verdicts(path: Path) -> list[str | None]:
    """Each pair's outcome in a judge_<system>.json as a verdict from the system's side."""
    records = json.loads(path.read_text(encoding="utf-8"))["records"]
    return [{"win": "a", "loss": "b", "tie": "tie"}.get(r["outcome"]) for r in records]


def _by_model(request):
    """The first judge prefers the longer answer; `second` too, but the shorter one on questions
    about symptoms (症状)."""
    if request.model == "second" and "症状" in request.pair()[0]:
        return judge_by(lambda answer: -len(answer))(request)
    return prefer_longer(request)


def test_people_and_a_second_judge_give_agreement_kappa_and_confusion(tmp_path):
    rows = json.loads(SAMPLE_TEST.read_text(encoding="utf-8"))[:6]
    human = ["a", "b", "a", "tie", "b", "a"]  # from course's side
    # Every other label is written from gpt's side (course better: B>A) and names its question by
    # index; one names a question that is not in the test set.
    from_gpt = {"a": "B>A", "b": "A>B", "tie": "equal"}
    labels = [
        {"question": q, "system_a": "course", "system_b": "gpt", "verdict": v}
        if i % 2
        else {"id": i, "system_a": "gpt", "system_b": "course", "verdict": from_gpt[v]}
        for i, ((q, _), v) in enumerate(zip(rows, human, strict=True))
    ]
    labels.append(
        {"question": "不在测试集里", "system_a": "course", "system_b": "gpt", "verdict": "a"}
    )
    path = tmp_path / "labels.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in labels), "utf-8")
    with JudgeServer(_by_model) as server:
        url = server.base_url
        second = json.dumps({"model": "second", "base_url": url})
        report = evaluate_script.main(
            _argv(
                tmp_path,
                server.base_url,
                "--judge.labels",
                str(path),
                "--judge.compare_with",
                second,
            )
        )
    out = tmp_path / "out"
    first, other = _verdicts(out / "judge_course.json"), _verdicts(out / "second_judge_course.json")
    result = report["judge"]["results"]["course"]

    found = result["human_agreement"]
    assert (found["labels"], found["compared"], found["unmatched"]) == (7, 6, 1)
    assert report["judge"]["labels"] == {"path": str(path), "n": 7, "compared": 6, "unmatched": 1}
    people = found["agreement"]
    assert people["agreement"] == sum(h == j for h, j in zip(human, first, strict=True)) / 6
    decided = [(h, j) for h, j in zip(human, first, strict=True) if "tie" not in (h, j)]
    assert people["n_without_ties"] == len(decided) > 0
    assert people["agreement_without_ties"] == sum(h == j for h, j in decided) / len(decided)
    for h in ("a", "b", "tie"):
        for j in ("a", "b", "tie"):
            assert people["confusion"][h][j] == sum(
                p == (h, j) for p in zip(human, first, strict=True)
            )
    assert people["kappa_interval"]["n_resamples"] == 50

    judges = result["second_judge"]
    assert judges["model"] == "second" and judges["n_judged"] == 6 and first != other
    assert (
        judges["agreement"]["agreement"]
        == sum(a == b for a, b in zip(first, other, strict=True)) / 6
    )
    assert report["judge"]["second_judge"] == {
        "status": "ok",
        "model": "second",
        "endpoint": url,
    }

    md = (out / "report.md").read_text(encoding="utf-8")
    agreement = md[md.index("### Agreement") :]
    assert (
        f"People's verdicts: 7 in `{path}`; 6 compared with a judged pair, 1 matched none"
        in agreement
    )
    assert f"| course | people | 6 | {people['agreement']:.0%} |" in agreement
    assert f"| course | judge `second` | 6 | {judges['agreement']['agreement']:.0%} |" in agreement
    assert "Confusion, course: rows people, columns the judge." in agreement
    rate = f"{judges['adjusted_win_rate']:.2f} [{judges['interval']['low']:.2f}, "
    assert f"Second judge `second`, course: adjusted win rate {rate}" in agreement
    assert "Confusion, course: rows the judge, columns judge `second`." in agreement
    table = agreement[agreement.index("| people | course better") :].splitlines()[2:5]
    assert (
        table[0]
        == "| course better | "
        + " | ".join(str(people["confusion"]["a"][j]) for j in ("a", "b", "tie"))
        + " |"
    )
    assert "`second_judge_<system>.json`" in md
    page = (out / "report.html").read_text(encoding="utf-8")  # report.md converted
    assert "<h3>Agreement</h3>" in page and "Confusion, course: rows people" in page


def test_every_judged_report_states_position_and_verbosity_bias(tmp_path):
    (tmp_path / "first").mkdir()
    (tmp_path / "longer").mkdir()
    with JudgeServer(prefer_first) as server:
        biased = evaluate_script.main(_argv(tmp_path / "first", server.base_url))
    with JudgeServer(prefer_longer) as server:
        longer = evaluate_script.main(_argv(tmp_path / "longer", server.base_url))
    position = biased["judge"]["results"]["course"]["biases"]["position"]
    # Assistant 1 wins every order: all 12 decisive verdicts chose the first-shown answer.
    assert position["first_position_share"] == 1.0 and position["n_decisive"] == 12
    assert position["both_orders_first"] == 6
    verbosity = longer["judge"]["results"]["course"]["biases"]["verbosity"]
    assert verbosity["longer_win_rate"] == 1.0 and verbosity["n_unequal"] == 6
    assert longer["judge"]["results"]["course"]["biases"]["position"]["first_position_share"] == 0.5
    md = (tmp_path / "first" / "out" / "report.md").read_text(encoding="utf-8")
    assert "Position bias, course: the answer shown first won 100% [100%, 100%] of the 12 " in md
    md = (tmp_path / "longer" / "out" / "report.md").read_text(encoding="utf-8")
    assert "Verbosity bias, course: the longer answer won 1.00 [1.00, 1.00] of 6 pairs" in md


def test_a_second_judge_that_stops_is_failed_and_the_first_judges_results_stand(tmp_path):
    def policy(request):
        if request.model == "missing":
            body = {
                "error": {
                    "message": "The model `missing` does not exist",
                    "code": "model_not_found",
                }
            }
            return Reply(status=404, body=json.dumps(body).encode())
        return prefer_longer(request)

    with JudgeServer(policy) as server:
        second = json.dumps({"model": "missing", "base_url": server.base_url})
        report = evaluate_script.main(
            _argv(tmp_path, server.base_url, "--judge.compare_with", second)
        )
    judge = report["judge"]
    assert judge["status"] == "ok" and judge["results"]["course"]["n_judged"] == 6
    assert (
        judge["second_judge"]["status"] == "failed" and "missing" in judge["second_judge"]["reason"]
    )
    assert "second_judge" not in judge["results"]["course"]
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "**Second judge failed**: " in md


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            '{"question": "q", "system_a": "course", "system_b": "gpt", "verdict": "maybe"}',
            "field 'verdict' is 'maybe'",
        ),
        (
            '{"question": "q", "system_a": "course", "system_b": "gtp", "verdict": "a"}',
            "field 'system_b' is 'gtp', not a system of this evaluation (course, gpt, served)",
        ),
    ],
)
def test_a_bad_labels_file_is_one_error_line_before_anything_is_generated(
    tmp_path, capsys, line, message
):
    path = tmp_path / "labels.jsonl"
    good = '{"question": "q", "system_a": "course", "system_b": "gpt", "verdict": "tie"}'
    path.write_text(f"{good}\n{line}\n", encoding="utf-8")
    with JudgeServer(answering()) as server:
        served = {"name": "served", "kind": "endpoint", "path": "m", "base_url": server.base_url}
        argv = _argv(tmp_path, server.base_url, "--judge.labels", str(path))
        systems = json.loads(argv[argv.index("--systems") + 1]) + [served]
        argv[argv.index("--systems") + 1] = json.dumps(systems)
        capsys.readouterr()
        with pytest.raises(SystemExit) as done:
            evaluate_script.cli_main(argv)
        assert server.request_count == 0  # no answer asked for, nothing judged
    err = capsys.readouterr().err
    assert done.value.code == 1 and "Traceback" not in err
    assert err.strip().splitlines()[
        -1
    ] == f"error: judge.labels {path}:2: {message}" or err.strip().splitlines()[-1].startswith(
        f"error: judge.labels {path}:2: {message}"
    )
    assert not (tmp_path / "out").exists()


def test_the_demo_labels_name_the_demo_evaluations_systems_and_questions():
    from medsft.metrics import read_labels

    config = yaml.safe_load((ROOT / "configs" / "eval_demo.yaml").read_text(encoding="utf-8"))
    names = [s["name"] for s in config["systems"]]
    labels = read_labels(ROOT / "data/sample/demo_judge_labels.jsonl", names)
    source = ROOT / config["test_set"]["source"]
    questions = {json.loads(line)["question"] for line in source.read_text("utf-8").splitlines()}
    pairs = {(label.question, label.system_a) for label in labels}
    assert pairs == {(q, s) for q in questions for s in ("base", "finetuned")}
    assert {(label.system_b, label.verdict) for label in labels} == {(config["baseline"], "b")}
