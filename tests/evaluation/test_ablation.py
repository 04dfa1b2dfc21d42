"""The ablation table: runs' resolved hyperparameters beside their scores, from one evaluation."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medsft.evaluation import (
    DataSpec,
    EvalConfig,
    JudgeSettings,
    RuntimeSettings,
    ScoringSettings,
    SystemSpec,
    evaluate,
)
from medsft.evaluation.generate import GenerationSettings

ROOT = Path(__file__).resolve().parents[2]


def fake_run(path: Path, r: int, augment: dict | None) -> Path:
    """A run dir as train.py leaves it: adapter/ and the resolved config.yaml."""
    from medsft.model.build import LoraSettings, build_model, load_tokenizer

    model = build_model("random:tiny", lora=LoraSettings(r=r))
    model.peft_config["default"].base_model_name_or_path = "random:tiny"
    model.save_pretrained(path / "adapter")
    load_tokenizer("qwen3").save_pretrained(path / "adapter")
    config = {
        "seed_everything": 0,
        "trainer": {"max_steps": 40, "logger": {"init_args": {"version": path.name}}},
        "model": {
            "name_or_path": "random:tiny",
            "finetune": "lora",
            "lora": {"r": r, "alpha": 32},
            "optimizer": {"lr": 2e-4},
        },
        "data": {"source": "data/sample/huatuo_sample.jsonl", "augment": augment},
    }
    (path / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.mark.slow
def test_runs_hyperparameters_that_differ_sit_beside_their_scores(tmp_path):
    runs = [
        fake_run(tmp_path / "r8", 8, None),
        fake_run(tmp_path / "r32aug", 32, {"fraction": 0.3, "word_fraction": 0.2}),
    ]
    config = EvalConfig(
        systems=[
            SystemSpec("base", "random:tiny", tokenizer="qwen3"),
            SystemSpec("r8", str(runs[0])),
            SystemSpec("r32aug", str(runs[1])),
        ],
        test_set=DataSpec(source="data/sample/test_zh_med.json", limit=2),
        output_dir=str(tmp_path / "eval"),
        generation=GenerationSettings(max_new_tokens=2),
        scoring=ScoringSettings(n_resamples=0, paired=False, perplexity=False, examples=0),
        judge=JudgeSettings(enabled=False),
        runtime=RuntimeSettings(accelerator="cpu", progress=False),
    )
    report = evaluate(config)
    table = report["ablation"]
    assert table["keys"] == [
        "model.name_or_path",
        "model.finetune",
        "data.augment.fraction",
        "data.augment.word_fraction",
        "model.lora.r",
    ]
    rows = {row["system"]: row for row in table["rows"]}
    assert rows["r8"]["hparams"]["data.augment.fraction"] is None  # data.augment: null
    assert "trainer.max_steps" not in table["keys"]  # the same in both runs
    assert not any(k.startswith("trainer.logger") for k in table["keys"])
    rows = {row["system"]: row for row in table["rows"]}
    assert rows["base"]["hparams"] is None
    assert (
        rows["r8"]["hparams"]["model.lora.r"] == 8
        and rows["r32aug"]["hparams"]["model.lora.r"] == 32
    )
    assert rows["r32aug"]["hparams"]["data.augment.fraction"] == 0.3
    for name in rows:
        assert rows[name]["scores"]["BLEU-4"] == report["metrics"][name]["BLEU-4"]["score"]
    md = (tmp_path / "eval" / "report.md").read_text(encoding="utf-8")
    assert "## Ablation" in md and "`model.lora.r`" in md
    assert any(
        line.startswith("| r32aug | random:tiny | lora |") and "| 32 |" in line
        for line in md.splitlines()
    )


def test_a_resumed_runs_hyperparameters_are_those_it_last_trained_with(tmp_path):
    from medsft.evaluation.ablation import run_hparams

    (tmp_path / "config.yaml").write_text("trainer: {max_steps: 6}\n", encoding="utf-8")
    assert run_hparams(tmp_path) == {"trainer.max_steps": 6}
    (tmp_path / "config.resume-1.yaml").write_text(
        "# Resumed from last.ckpt at step 6; changed: trainer.max_steps: 6 -> 9\n"
        "trainer: {max_steps: 9}\n",
        encoding="utf-8",
    )
    assert run_hparams(tmp_path) == {"trainer.max_steps": 9}
