"""medsft.evaluation.config: shipped configs and the judge's settings are checked early."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medsft.evaluation import EvalConfig, JudgeSettings, SystemSpec, judge_status

ROOT = Path(__file__).resolve().parents[2]


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
