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
