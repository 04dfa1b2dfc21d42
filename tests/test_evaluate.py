"""evaluate.py: config, test sets, systems, judge gating, and the whole loop end to end on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import medsft.evaluation.config
import medsft.evaluation.generate
import medsft.model.build
from medsft.chat import qa_messages
from medsft.evaluation import (
    DataSpec,
    EvalConfig,
    JudgeSettings,
    RuntimeSettings,
    ScoringSettings,
    SystemSpec,
    evaluate,
    infer_kind,
    judge_status,
    load_examples,
    resolve_run_dir,
    validate_config,
)
from medsft.evaluation.answers import answers_system
from medsft.evaluation.generate import GenerationSettings
from medsft.evaluation.scoring import has_references, metric_names
from tests.helpers import scalars  # noqa: E402
from tests.judge_server import JudgeServer, prefer_longer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import medsft.cli.evaluate as evaluate_script  # noqa: E402

SAMPLE_TEST = ROOT / "data" / "sample" / "test_zh_med.json"
SAMPLE_BASELINE = ROOT / "data" / "sample" / "baseline_answers.jsonl"
SECRET = "sk-test-DO-NOT-LEAK-5be1d0c7"
TEXT_METRICS = metric_names(ScoringSettings())  # the metrics table under default settings


@pytest.fixture(autouse=True)
def _no_real_key(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's real key must never reach a test server, nor OpenAI from a test.
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def fake_run(path: Path) -> Path:
    """A training run dir as train.py leaves it: adapter/ (PEFT) with the tokenizer."""
    from medsft.model.build import build_model, load_tokenizer

    model = build_model("random:tiny")
    model.peft_config["default"].base_model_name_or_path = "random:tiny"
    model.save_pretrained(path / "adapter")
    load_tokenizer("qwen3").save_pretrained(path / "adapter")
    return path


# -- test sets --------------------------------------------------------------------------------
def test_course_test_set_maps_question_and_reference():
    examples = load_examples(DataSpec(source=str(SAMPLE_TEST), preset="course"))
    raw = json.loads(SAMPLE_TEST.read_text(encoding="utf-8"))
    assert len(examples) == len(raw) == 12
    assert [(e.question, e.reference) for e in examples] == [(q, r.strip()) for q, r in raw]
    assert examples[0].prompt == [{"role": "user", "content": raw[0][0]}]
    assert load_examples(DataSpec(source=str(SAMPLE_TEST), limit=3))[-1].index == 2


def test_row_without_reference_names_file_and_row(tmp_path):
    bad = tmp_path / "test.json"
    bad.write_text(json.dumps([["问题一", "答案一"], ["问题二"]], ensure_ascii=False))
    with pytest.raises(ValueError, match=r"test\.json: item 1.*'1'.*missing"):
        load_examples(DataSpec(source=str(bad)))
    jsonl = tmp_path / "test.jsonl"
    jsonl.write_text('{"question": "q1", "answer": "a1"}\n{"question": "q2", "answer": ""}\n')
    with pytest.raises(ValueError, match=r"test\.jsonl:2.*'answer'.*empty"):
        load_examples(DataSpec(source=str(jsonl), preset="huatuo"))


def test_reasoning_references_keep_their_think_apart():
    examples = load_examples(DataSpec(source="data/sample/reasoning.jsonl", preset="reasoning"))
    assert all(e.reference_think and "<think>" not in e.reference for e in examples)
    assert examples[0].conversation[-1]["content"].startswith("<think>\n")
    # The answer turn is formatted as training formats it (medsft.chat.qa_messages).
    ex = examples[0]
    expected = qa_messages(ex.question, ex.reference, think=ex.reference_think)[-1]
    assert ex.conversation == [*ex.prompt, expected]


@pytest.mark.skipif(
    not (ROOT.parent / "shared" / "data").is_dir(), reason="shared data not present"
)
def test_real_course_set_reads(shared_data):
    source = shared_data / "course_a3_testsets" / "zh_med.json"
    examples = load_examples(DataSpec(source=str(source), preset="course"))
    assert len(examples) == 20 and all(e.question and e.reference for e in examples)


# -- systems ----------------------------------------------------------------------------------
def test_latest_and_globs_pick_the_newest_finished_run(tmp_path):
    logs = tmp_path / "logs" / "demo"
    fake_run(logs / "version_0")
    time.sleep(0.01)
    fake_run(logs / "version_2")
    (logs / "version_3").mkdir()  # still training: no adapter yet
    assert resolve_run_dir(str(logs / "latest")) == logs / "version_2"
    assert resolve_run_dir(str(logs / "version_*")) == logs / "version_2"
    assert resolve_run_dir(str(logs / "version_0")) == logs / "version_0"
    with pytest.raises(FileNotFoundError, match="train first"):
        resolve_run_dir(str(tmp_path / "nothing" / "latest"))
    assert infer_kind(SystemSpec("ft", str(logs / "latest"))) == "run"
    assert infer_kind(SystemSpec("base", "random:tiny")) == "model"
    assert infer_kind(SystemSpec("base", "Qwen/Qwen3-4B-Instruct-2507")) == "model"
    assert infer_kind(SystemSpec("gpt", str(SAMPLE_BASELINE))) == "answers"


def test_answers_file_aligns_by_question(tmp_path):
    examples = load_examples(DataSpec(source=str(SAMPLE_TEST)))
    rows = [json.loads(line) for line in SAMPLE_BASELINE.read_text(encoding="utf-8").splitlines()]
    shuffled = tmp_path / "answers.jsonl"
    shuffled.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in reversed(rows)), encoding="utf-8"
    )
    output = answers_system(SystemSpec("gpt", str(shuffled)), examples)
    assert output.answers == [r["answer"] for r in rows]

    partial = tmp_path / "partial.jsonl"
    partial.write_text(json.dumps(rows[0], ensure_ascii=False) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no answer to test question 1"):
        answers_system(SystemSpec("gpt", str(partial)), examples)


def test_config_errors_say_how_to_fix(tmp_path):
    systems = [SystemSpec("base", "random:tiny"), SystemSpec("gpt", str(SAMPLE_BASELINE))]
    with pytest.raises(ValueError, match="baseline 'gtp' is not a system"):
        validate_config(EvalConfig(systems=systems, baseline="gtp"))
    with pytest.raises(ValueError, match="unique"):
        validate_config(EvalConfig(systems=[systems[0], systems[0]]))
    with pytest.raises(ValueError, match="letters, digits"):
        validate_config(EvalConfig(systems=[SystemSpec("a/b", "random:tiny")]))
    with pytest.raises(FileNotFoundError, match="train first"):
        validate_config(EvalConfig(systems=[SystemSpec("ft", str(tmp_path / "logs/latest"))]))


# -- judge gating -----------------------------------------------------------------------------
def test_judge_is_skipped_without_endpoint_and_says_why(monkeypatch):
    systems = [SystemSpec("base", "random:tiny"), SystemSpec("gpt", str(SAMPLE_BASELINE))]
    config = EvalConfig(systems=systems, baseline="gpt")
    run, reason = judge_status(config)
    assert not run and "OPENAI_API_KEY" in reason and "base_url" in reason
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    assert judge_status(config)[0]
    config.judge = JudgeSettings(enabled=False)
    assert judge_status(config) == (False, "disabled (judge.enabled: false)")
    monkeypatch.delenv("OPENAI_API_KEY")
    config.judge = JudgeSettings(enabled=True)
    with pytest.raises(ValueError, match="judge.enabled: true but no judge endpoint"):
        judge_status(config)
    config.judge = JudgeSettings(base_url=f"http://user:{SECRET}@127.0.0.1:9/v1")
    with pytest.raises(ValueError, match="must not carry credentials") as err:
        judge_status(config)
    assert SECRET not in str(err.value)


# -- command line -----------------------------------------------------------------------------
def test_configs_parse_with_dotted_overrides():
    parser = evaluate_script.build_parser()
    for name in ("eval.yaml", "eval_demo.yaml"):
        cfg = parser.parse_args(
            [
                "--config",
                str(ROOT / "configs" / name),
                "--generation.max_new_tokens",
                "7",
                "--judge.base_url",
                "http://127.0.0.1:1/v1",
                "--test_set.limit",
                "2",
            ]
        )
        assert cfg.generation.max_new_tokens == 7 and cfg.test_set.limit == 2
        assert cfg.judge.base_url == "http://127.0.0.1:1/v1"
        names = [s.name for s in cfg.systems]
        assert cfg.baseline in names and "finetuned" in names


# -- generation cache -------------------------------------------------------------------------
def _model_config(out: Path, path: str, limit: int, **generation) -> EvalConfig:
    """One model system on the sample test set; fast settings, no judge."""
    return EvalConfig(
        systems=[SystemSpec("sys", path, kind="model", tokenizer="qwen3")],
        test_set=DataSpec(source=str(SAMPLE_TEST), limit=limit),
        output_dir=str(out),
        generation=GenerationSettings(max_new_tokens=6, **generation),
        scoring=ScoringSettings(n_resamples=0, paired=False, examples=0),
        judge=JudgeSettings(enabled=False),
        runtime=RuntimeSettings(accelerator="cpu", progress=False),
    )


def _system(report: dict) -> dict:
    return report["systems"][0]


def test_hub_model_downloaded_by_the_first_run_is_reused_by_the_second(tmp_path, monkeypatch):
    import huggingface_hub

    commit = "0123456789abcdef0123456789abcdef01234567"
    downloaded: list[str] = []

    def in_cache(repo_id, filename, **kwargs):
        # The hub cache as huggingface_hub sees it: empty until the model is downloaded.
        if not downloaded:
            return None
        return f"/hub/models--{repo_id.replace('/', '--')}/snapshots/{commit}/{filename}"

    def download_and_load(name, **kwargs):
        downloaded.append(name)
        return medsft.model.build.random_qwen3("tiny")

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", in_cache)
    monkeypatch.setattr(medsft.model.build, "load_base_model", download_and_load)
    monkeypatch.setattr(medsft.evaluation.config, "ensure_hub_reachable", lambda *a, **k: None)
    config = _model_config(tmp_path, "acme/med-model", limit=3)
    first = _system(evaluate(config))
    assert downloaded == ["acme/med-model"] and first["generation"]["generated"] == 3
    saved = [json.loads(line) for line in (tmp_path / "generations" / "sys.jsonl").open()]
    assert len(saved) == 3

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded again although its answers were saved")

    monkeypatch.setattr(medsft.model.build, "load_base_model", no_load)
    monkeypatch.setattr(medsft.evaluation.generate, "generate", no_load)
    second = evaluate(config)
    assert _system(second)["generation"]["generated"] == 0
    assert not _system(second)["model_loaded"]  # answers and perplexity both reused
    assert _system(second)["answers"] == first["answers"]


def test_sampled_answers_depend_only_on_their_own_cache_key(tmp_path, monkeypatch):
    from tests.helpers import tiny_model  # answers that differ from draw to draw

    model = tiny_model()
    monkeypatch.setattr(medsft.model.build, "load_base_model", lambda *a, **k: model)
    sampled = dict(do_sample=True, temperature=1.0)

    def answers(out: Path, limit: int) -> list[str]:
        config = _model_config(out, "random:tiny", limit, **sampled)
        config.scoring.perplexity = False
        return _system(evaluate(config))["answers"]

    # Two questions cached first, then all four (two reused, two generated) ...
    assert len(answers(tmp_path / "grown", 2)) == 2
    grown = answers(tmp_path / "grown", 4)
    # ... give the answers of one run of all four, and of each question alone.
    assert grown == answers(tmp_path / "fresh", 4)
    assert answers(tmp_path / "one", 1) == grown[:1]
    assert len(set(grown)) == 4  # not vacuous: the answers really differ


# -- end to end -------------------------------------------------------------------------------
def _demo_config(tmp_path: Path, logs: Path) -> Path:
    config = yaml.safe_load((ROOT / "configs" / "eval_demo.yaml").read_text())
    for system in config["systems"]:
        if system["path"].startswith("logs/"):
            system["path"] = str(logs / system["path"][len("logs/") :])
    path = tmp_path / "eval_demo.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    return path


@pytest.mark.slow
def test_demo_training_then_evaluation_with_judge_and_reuse(tmp_path, monkeypatch):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    logs = tmp_path / "logs"
    train = subprocess.run(
        [
            sys.executable,
            "train.py",
            "--config",
            "configs/demo.yaml",
            "--trainer.logger.init_args.save_dir",
            str(logs),
            "--trainer.max_steps",
            "20",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert train.returncode == 0, train.stderr[-3000:]
    # train.py on the demo config, end to end (this run is also the one evaluated below).
    run = logs / "demo" / "version_0"
    losses = scalars(run, "train/loss")
    assert losses[-1] < losses[0] - 2.0, losses
    val = scalars(run, "val/loss")
    assert len(val) >= 2 and val[-1] < val[0], val
    assert (run / "config.yaml").exists() and (run / "model" / "model.safetensors").exists()
    for tag in (
        "train/lr",
        "train/grad_norm",
        "train/tokens_per_s",
        "train/padding_fraction",
        "train/supervised_tokens_per_s",
        "val/ppl",
    ):
        assert scalars(run, tag), tag

    out = tmp_path / "eval"
    monkeypatch.chdir(ROOT)  # the demo config's data paths are relative to the repo
    monkeypatch.setenv("MEDSFT_DEMO_JUDGE_KEY", SECRET)
    with JudgeServer(prefer_longer) as server:
        argv = [
            "--config",
            str(_demo_config(tmp_path, logs)),
            "--output_dir",
            str(out),
            "--judge.base_url",
            server.base_url,
            "--generation.max_new_tokens",
            "16",
            "--scoring.n_resamples",
            "200",
            "--runtime.progress",
            "false",
        ]
        report = evaluate_script.main(argv)
        n = report["test_set"]["n"]
        assert n == 12
        assert server.request_count == 2 * n * 2  # base and finetuned vs gpt, both orders
        assert server.requests[0].authorization == f"Bearer {SECRET}"

        systems = {s["name"]: s for s in report["systems"]}
        assert systems["finetuned"]["source"] == str(logs / "demo" / "version_0")
        for name in ("base", "finetuned"):
            gen = systems[name]["generation"]
            assert gen["generated"] == n and gen["tokens_per_second"] > 0
        for name in ("base", "finetuned", "gpt"):
            metrics = report["metrics"][name]
            assert list(metrics) == TEXT_METRICS
            for name, m in metrics.items():
                # distinct-n has no bootstrap interval (see medsft.metrics.distinct)
                expected = {"score", "signature"} | (
                    {"low", "high"} if has_references(m) else set()
                )
                assert expected <= set(m), name
        for name in ("base", "finetuned"):
            assert report["perplexity"][name]["test"]["score"] > 1
        assert "gpt" not in report["perplexity"]
        compared = {n for n, m in report["metrics"]["gpt"].items() if has_references(m)}
        assert {t["metric"] for t in report["paired"]} == compared
        assert len(report["paired"]) == 3 * len(compared)  # each pair of the three systems

        judge = report["judge"]
        assert judge["status"] == "ok" and judge["baseline"] == "gpt"
        assert set(judge["results"]) == {"base", "finetuned"}
        for result in judge["results"].values():
            assert result["n_judged"] == n and result["consistency_rate"] is not None
            # The longer answer wins: the GPT baseline beats 16-token gibberish every time.
            assert result["counts"]["loss"] == n
        training = report["training"]["finetuned"]["scalars"]
        assert {"train/loss", "val/loss", "val/ppl"} <= set(training)

        for name in (
            "report.json",
            "report.md",
            "metrics.png",
            "training_finetuned.png",
            "config.yaml",
            "judge_base.json",
            "judge_finetuned.json",
            "generations/base.jsonl",
            "generations/finetuned.jsonl",
        ):
            assert (out / name).is_file(), name
        md = (out / "report.md").read_text(encoding="utf-8")
        for text in (
            "| system | BLEU-1",
            "PPL (test)",
            "adjusted win rate",
            "consistency",
            "## Examples",
            "training_finetuned.png",
        ):
            assert text in md, text
        for path in out.rglob("*"):
            if path.is_file() and path.suffix in (".json", ".jsonl", ".md", ".yaml"):
                assert SECRET not in path.read_text(encoding="utf-8"), path

        # Second run: answers, perplexities and verdicts all come from the output dir.
        server.reset()
        saved = {p: p.stat().st_mtime_ns for p in (out / "generations").glob("*.jsonl")}

        def no_generation(*args, **kwargs):
            raise AssertionError("generation ran again although its answers were saved")

        monkeypatch.setattr(medsft.evaluation.generate, "generate", no_generation)
        again = evaluate_script.main(argv)
        assert server.request_count == 0
        for name in ("base", "finetuned"):
            system = next(s for s in again["systems"] if s["name"] == name)
            assert system["generation"]["generated"] == 0 and not system["model_loaded"]
            assert system["answers"] == systems[name]["answers"]
            cached = again["judge"]["results"][name]
            assert (
                cached["usage"]["requests"] == 0 and cached["usage"]["cached_judgements"] == 2 * n
            )
            assert cached["counts"] == judge["results"][name]["counts"]
        assert again["metrics"] == report["metrics"]
        assert again["perplexity"] == report["perplexity"]
        assert saved == {p: p.stat().st_mtime_ns for p in saved}
