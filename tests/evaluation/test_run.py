"""evaluate() as a whole: each model loaded once per run, the log naming each set, and the demo
config with an endpoint system answered by a server on 127.0.0.1."""

from __future__ import annotations

import logging
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from medsft.evaluation import DataSpec, EvalConfig, SystemSpec, evaluate
from medsft.evaluation.config import McqSpec
from medsft.evaluation.models import ModelSource
from medsft.model.generate import GenerationSettings
from tests.judge_server import JudgeServer, answer_to, answering

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sample"
SECRET = "sk-test-DO-NOT-LEAK-0c9e77d1"


pytestmark = pytest.mark.slow  # whole evaluation runs: half a minute each on 2 cores


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """Model loads per system name, counted by wrapping the one loader."""
    counts: Counter = Counter()
    load = ModelSource.load

    def counted(self: ModelSource):
        counts[self.spec.name] += 1
        return load(self)

    monkeypatch.setattr(ModelSource, "load", counted)
    return counts


def test_each_model_is_loaded_once_for_answers_perplexity_and_both_mcq_methods(
    tmp_path, loads, caplog
):
    config = EvalConfig(
        systems=[SystemSpec("a", "random:tiny"), SystemSpec("b", "random:tiny", dtype="float32")],
        test_set=DataSpec(source=str(SAMPLE / "test_zh_med.json"), limit=3),
        val_set=DataSpec(source=str(SAMPLE / "huatuo_sample.jsonl"), preset="huatuo", limit=2),
        mcq_set=McqSpec(
            source=str(SAMPLE / "mcq_sample.csv"),
            dev_source=str(SAMPLE / "mcq_dev.csv"),
            shots=1,
            limit=3,
            methods=["loglik", "generate"],
        ),
        output_dir=str(tmp_path),
        generation=GenerationSettings(max_new_tokens=4),
    )
    config.scoring.n_resamples = 0
    config.runtime.progress = False
    caplog.set_level(logging.INFO, logger="medsft")
    report = evaluate(config)
    assert loads == {"a": 1, "b": 1}
    assert set(report["perplexity"]["a"]) == {"test", "val"}
    assert set(report["mcq"]["results"]) == {"a/loglik", "a/generate", "b/loglik", "b/generate"}
    log = caplog.text
    assert "a: test set: generating 3 of 3 answers" in log
    assert "a: mcq_set (generate): generating 3 of 3 answers" in log
    assert "a: mcq_set (loglik): scoring 3 of 3 questions" in log

    loads.clear()
    again = evaluate(config)  # everything cached: no model is loaded at all
    assert (
        loads == {} and again["mcq"]["results"]["a/loglik"] == report["mcq"]["results"]["a/loglik"]
    )


def test_demo_config_with_an_endpoint_system_on_a_loopback_server(tmp_path, monkeypatch, loads):
    sys.path.insert(0, str(ROOT))
    from medsft.cli import evaluate as evaluate_script

    config = yaml.safe_load((ROOT / "configs" / "eval_demo.yaml").read_text())
    monkeypatch.chdir(ROOT)  # the demo config's data paths are relative to the repo
    monkeypatch.setenv("MEDSFT_DEMO_JUDGE_KEY", SECRET)
    with JudgeServer(answering()) as server:
        # The trained run of the demo is replaced by the same kind of model served over HTTP.
        config["systems"][1] = {
            "name": "served",
            "kind": "endpoint",
            "path": "demo-served",
            "base_url": server.base_url,
            "api_key_env": "MEDSFT_DEMO_JUDGE_KEY",
        }
        config["mcq_set"]["methods"] = ["generate"]  # an endpoint gives no log-probabilities
        path = tmp_path / "eval_demo.yaml"
        path.write_text(yaml.safe_dump(config, allow_unicode=True))
        argv = [
            "--config",
            str(path),
            "--output_dir",
            str(tmp_path / "out"),
            "--judge.base_url",
            server.base_url,
            "--generation.max_new_tokens",
            "8",
            "--scoring.n_resamples",
            "50",
            "--runtime.progress",
            "false",
        ]
        report = evaluate_script.main(argv)
        n, n_mcq = report["test_set"]["n"], report["mcq"]["n"]
        # answers to the test set and the MCQ, then both judged against gpt in both orders
        assert server.request_count == n + n_mcq + 2 * 2 * n
        systems = {s["name"]: s for s in report["systems"]}
        assert systems["served"]["kind"] == "endpoint"
        assert systems["served"]["source"] == f"demo-served @ {server.base_url}"
        questions = [e["question"] for e in report["examples"]]
        shown = [e["answers"]["served"] for e in report["examples"]]
        assert shown == [answer_to(q) for q in questions]
        assert report["judge"]["results"]["served"]["n_judged"] == n
        assert "served/generate" in report["mcq"]["results"]
        assert loads == {"base": 1}
        md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
        assert "| served | endpoint |" in md
        for file in (tmp_path / "out").rglob("*"):
            if file.is_file() and file.suffix in (".json", ".jsonl", ".md", ".yaml"):
                assert SECRET not in file.read_text(encoding="utf-8"), file
