"""medsft.evaluation.config: shipped configs, systems, run folders and the judge's settings, all
checked early."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from medsft.evaluation import (
    EvalConfig,
    JudgeSettings,
    SystemSpec,
    infer_kind,
    judge_status,
    resolve_run_dir,
    validate_config,
)

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_BASELINE = ROOT / "data" / "sample" / "baseline_answers.jsonl"
SECRET = "sk-test-DO-NOT-LEAK-5be1d0c7"


@pytest.mark.parametrize("name", ["eval.yaml", "eval_demo.yaml"])
def test_shipped_configs_name_no_machine_path(name):
    config = yaml.safe_load((ROOT / "configs" / name).read_text(encoding="utf-8"))
    paths = [config["test_set"]["source"], config["output_dir"]]
    paths += [s["path"] for s in config["systems"]]
    assert not [p for p in paths if Path(p).is_absolute() or p.startswith("..")]
    assert (ROOT / config["test_set"]["source"]).is_file()


def test_judge_files_and_token_caps_are_checked_before_anything_runs(tmp_path):
    systems = [SystemSpec("a", "random:tiny"), SystemSpec("b", "random:tiny")]
    config = EvalConfig(systems=systems, baseline="b")
    for name in ("template", "system_prompt", "rubric"):
        config.judge = JudgeSettings(base_url="http://127.0.0.1:9/v1", **{name: "missing.txt"})
        with pytest.raises(FileNotFoundError, match=rf"judge\.{name}: file 'missing.txt'"):
            judge_status(config)
    config.judge = JudgeSettings(max_tokens=10, max_completion_tokens=10)
    with pytest.raises(ValueError, match="not both"):
        judge_status(config)
    rubric = tmp_path / "rubric.txt"
    rubric.write_text("x", encoding="utf-8")
    config.judge = JudgeSettings(base_url="http://127.0.0.1:9/v1", rubric=str(rubric))
    assert judge_status(config)[0]


def fake_run(path: Path) -> Path:
    """A training run dir as train.py leaves it: adapter/ (PEFT) with the tokenizer."""
    from medsft.model.build import build_model, load_tokenizer

    model = build_model("random:tiny")
    model.peft_config["default"].base_model_name_or_path = "random:tiny"
    model.save_pretrained(path / "adapter")
    load_tokenizer("qwen3").save_pretrained(path / "adapter")
    return path


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


def test_judge_is_skipped_without_endpoint_and_says_why(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # a developer's key must not count
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


def test_a_second_judge_is_the_first_with_its_own_model_and_is_checked_early(monkeypatch):
    from medsft.evaluation.config import SecondJudge

    monkeypatch.delenv("MEDSFT_SECOND_KEY", raising=False)
    systems = [SystemSpec("base", "random:tiny"), SystemSpec("gpt", str(SAMPLE_BASELINE))]
    second = SecondJudge(model="gpt-5-mini", api_key_env="MEDSFT_SECOND_KEY", temperature=None)
    judge = JudgeSettings(base_url="http://127.0.0.1:9/v1", language="zh", compare_with=second)
    config = EvalConfig(systems=systems, baseline="gpt", judge=judge)
    with pytest.raises(ValueError, match="judge.compare_with asks OpenAI but MEDSFT_SECOND_KEY"):
        judge_status(config)
    monkeypatch.setenv("MEDSFT_SECOND_KEY", SECRET)
    assert judge_status(config)[0]
    settings = judge.second_settings()
    assert (settings.model, settings.base_url, settings.temperature) == ("gpt-5-mini", None, None)
    assert settings.language == "zh" and settings.compare_with is None  # the prompt is the first's
    second.base_url = f"http://user:{SECRET}@127.0.0.1:9/v1"
    with pytest.raises(ValueError, match="judge.compare_with.base_url must not carry") as err:
        judge_status(config)
    assert SECRET not in str(err.value)


def test_latest_refuses_the_newest_run_when_its_model_is_incomplete(tmp_path):
    """Not an older run instead (silently another model), not a traceback later."""
    import os

    from medsft.evaluation import resolve_run_dir
    from medsft.model.trained import IncompleteModel

    logs = tmp_path / "logs/demo"
    for version, files in ((0, ["model.safetensors", "tokenizer_config.json"]), (1, [])):
        model = logs / f"version_{version}/model"
        model.mkdir(parents=True)
        for name in ["config.json", *files]:
            (model / name).write_text("{}")
        os.utime(model, (version, version))  # version_1 saved last
    with pytest.raises(IncompleteModel, match=r"version_1/model is incomplete"):
        resolve_run_dir(str(logs / "latest"))
    with pytest.raises(IncompleteModel):
        resolve_run_dir(str(logs / "version_1"))
    assert resolve_run_dir(str(logs / "version_0")) == logs / "version_0"
