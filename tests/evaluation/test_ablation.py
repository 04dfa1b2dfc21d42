"""The ablation table: runs' resolved hyperparameters beside their scores, from one evaluation."""

from __future__ import annotations

import sys
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
from medsft.model.generate import GenerationSettings

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


def test_the_headline_columns_come_from_the_metrics_table(tmp_path, monkeypatch):
    from medsft.evaluation.ablation import ablation
    from medsft.evaluation.systems import SystemOutput
    from medsft.metrics import METRICS, TextMetric

    # A new metric marked as a headline in the table, and nothing else edited.
    chrf = TextMetric(name=lambda **_: "chrF", scored=METRICS["bleu"].scored, headline=True)
    monkeypatch.setitem(METRICS, "chrf", chrf)
    outputs, report = [], {"metrics": {}, "perplexity": {}, "judge": {}, "mcq": None}
    for k, name in enumerate(("r8", "r32")):
        run = tmp_path / name
        run.mkdir()
        (run / "config.yaml").write_text(f"model: {{lora: {{r: {8 + 24 * k}}}}}\n", "utf-8")
        outputs.append(SystemOutput(name, "model", str(run), [], [], run_dir=run))
        report["metrics"][name] = {
            result: {"metric": metric, "score": float(k)}
            for metric, result in [
                ("bleu", "BLEU-2"),
                ("bleu", "BLEU-4"),
                ("rouge", "ROUGE-1"),
                ("rouge", "ROUGE-L"),
                ("vocab_f1", "token-F1"),  # scoring.vocab_f1_mode: multiset
                ("distinct", "distinct-2"),
                ("chrf", "chrF"),
            ]
        }
    table = ablation(outputs, report)
    assert [list(row["scores"]) for row in table["rows"]] == [
        ["BLEU-4", "ROUGE-L", "token-F1", "chrF"]
    ] * 2


# -- sensitivity ------------------------------------------------------------------------------
def test_each_numeric_key_that_varies_gets_every_metric_against_it(tmp_path):
    from medsft.evaluation.ablation import sensitivity_to

    runs = {
        f"r{r}-lr{lr}": {"model.lora.r": r, "model.optimizer.lr": lr, "model.finetune": "lora"}
        for r in (8, 32)
        for lr in (1e-4, 1e-3, 1e-2)
    }
    runs["full"] = {"model.lora.r": None, "model.optimizer.lr": "1e-3", "model.finetune": "full"}
    report = {"metrics": {}, "perplexity": {}, "judge": {}, "mcq": None}
    for k, name in enumerate(runs):
        report["metrics"][name] = {"BLEU-4": {"score": k, "low": k - 1, "high": k + 1}}
        report["perplexity"][name] = {"test": {"score": 10.0 + k}}  # no interval: none drawn
    varied = ["model.finetune", "model.lora.r", "model.optimizer.lr"]
    assert sensitivity_to("model.finetune", varied, runs, report) is None  # not a number
    lr = sensitivity_to("model.optimizer.lr", varied, runs, report)
    assert lr["metrics"] == ["BLEU-4", "PPL (test)"] and lr["left_out"] == []
    # "1e-3" (YAML 1.1 reads it as text) is a number; the grid's other keys make the lines.
    assert ("full", 0.001) in [(p["system"], p["value"]) for p in lr["points"]]
    groups = {repr(p["group"]) for p in lr["points"]}
    assert len(groups) == 3  # r 8, r 32 and the full run (r null, finetune full)
    rank = sensitivity_to("model.lora.r", varied, runs, report)
    assert rank["left_out"] == ["full"] and {p["value"] for p in rank["points"]} == {8, 32}

    from matplotlib.container import ErrorbarContainer

    from medsft.evaluation import plots

    figures = []
    save = plots.save_cjk
    plots.save_cjk = lambda fig, path: (figures.append(fig), save(fig, path))
    try:
        assert plots.plot_sensitivity(lr, tmp_path / "lr.png")
    finally:
        plots.save_cjk = save
    bleu, ppl = figures[0].axes[:2]
    assert bleu.get_xscale() == "log"  # 1e-4 .. 1e-2
    bars = [c for c in bleu.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 3 and all(c.has_yerr for c in bars)
    assert not any(c.has_yerr for c in ppl.containers if isinstance(c, ErrorbarContainer))
    assert (tmp_path / "lr.png").stat().st_size > 10_000


def sweep_commands(tmp_path: Path, env: dict, *args: str) -> tuple[list[list[str]], str]:
    """docs/slurm/sweep.sbatch run by bash with `srun` and `python` replaced by recorders: the
    command lines it starts (as argument lists), and its stderr."""
    import json
    import subprocess

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    record = tmp_path / "commands.jsonl"
    record.unlink(missing_ok=True)
    for name in ("srun", "python"):
        tool = bin_dir / name
        tool.write_text(
            f"#!{sys.executable}\nimport json, sys\n"
            f"open({str(record)!r}, 'a').write(json.dumps([{name!r}, *sys.argv[1:]]) + '\\n')\n"
        )
        tool.chmod(0o755)
    done = subprocess.run(
        ["bash", "docs/slurm/sweep.sbatch", *args],
        cwd=tmp_path,
        env={**env, "PATH": f"{bin_dir}:{env['PATH']}"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = record.read_text().splitlines() if record.exists() else []
    return [json.loads(line) for line in lines], done.stderr if done.returncode else ""


@pytest.mark.slow
def test_readme_lr_sweep_then_one_evaluation_plots_the_sensitivity(tmp_path, monkeypatch, capsys):
    """README's sweep as written, in a folder laid out like the clone: the overrides file, the
    sweep script (here, and as SLURM array tasks, each resumable), the three runs (tiny:
    two steps each), then the one evaluate.py call whose report plots every metric against
    the learning rate."""
    import os
    import re
    import shlex
    import subprocess

    from medsft.cli import evaluate as evaluate_script
    from medsft.cli.train import main as train_main

    for name in ("configs", "data", "docs"):
        (tmp_path / name).symlink_to(ROOT / name)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    sweep = next(b for b in re.findall(r"```bash\n(.*?)```", readme, re.S) if "sweep.sbatch" in b)
    lines = [line.strip() for line in re.sub(r"\\\n\s*", " ", sweep).splitlines()]
    printf, local, slurm, evaluate = (
        next(c for c in lines if c.startswith(word))
        for word in ("printf", "bash docs/slurm/sweep.sbatch", "sbatch", "python evaluate.py")
    )
    subprocess.run(["bash", "-c", printf.split("  #")[0]], cwd=tmp_path, check=True)
    overrides = (tmp_path / "lr.txt").read_text().splitlines()
    assert overrides == [f"--model.optimizer.lr {lr}" for lr in ("0.003", "0.01", "0.03")]

    # Here, the three runs in turn; under SLURM, array task K runs line K through srun.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM")}
    script_args = shlex.split(local.split("  #")[0])[2:]
    here, err = sweep_commands(tmp_path, env, *script_args)
    assert not err
    run = ["python", "train.py", "--config", "configs/demo.yaml"]
    assert here == [
        [*run, *overrides[k].split(), "--trainer.logger.init_args.name", f"lr/{k}"]
        for k in range(3)
    ]
    tasks = shlex.split(slurm.split("  #")[0])
    assert tasks[:3] == ["sbatch", "--array=0-2", "docs/slurm/sweep.sbatch"]
    assert tasks[3:] == script_args
    slurm_env = {**env, "SLURM_JOB_NUM_NODES": "1", "SLURM_NTASKS_PER_NODE": "1"}
    for k in range(3):
        task, err = sweep_commands(
            tmp_path, {**slurm_env, "SLURM_ARRAY_TASK_ID": str(k)}, *tasks[3:]
        )
        assert not err and task == [
            ["srun", *run, "--trainer.num_nodes", "1", "--trainer.devices", "1", *here[k][4:]]
        ]
    _, err = sweep_commands(tmp_path, {**slurm_env, "SLURM_ARRAY_TASK_ID": "3"}, *tasks[3:])
    assert "error: array task 3, but lr.txt has 3 runs: --array=0-2" in err

    # The runs themselves, tiny (train.py's entry point in this process, from the folder).
    monkeypatch.chdir(tmp_path)
    tiny = [
        "--trainer.max_steps",
        "2",
        "--trainer.val_check_interval",
        "null",
        "--data.val_fraction",
        "0",
        "--samples.n",
        "0",
        "--trainer.enable_progress_bar",
        "false",
    ]
    for command in here:
        assert command[:2] == ["python", "train.py"]
        train_main([*command[2:], *tiny])
    # A requeued task resumes its own run: the same command, SLURM_RESTART_COUNT set.
    for name, value in {
        "SLURM_JOB_ID": "7",
        "SLURM_ARRAY_JOB_ID": "7",
        "SLURM_ARRAY_TASK_ID": "1",
        "SLURM_RESTART_COUNT": "1",
    }.items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    train_main([*here[1][2:], *tiny])
    out = capsys.readouterr().out
    assert (
        "resuming from logs/lr/1/version_0/checkpoints/last.ckpt" in out
        and "nothing to train" in out
    )
    for name in (
        "SLURM_JOB_ID",
        "SLURM_ARRAY_JOB_ID",
        "SLURM_ARRAY_TASK_ID",
        "SLURM_RESTART_COUNT",
    ):
        monkeypatch.delenv(name)

    # One evaluation of the three runs (cheap: short answers, few resamples and MCQ questions).
    words = shlex.split(evaluate)
    assert words[:2] == ["python", "evaluate.py"]
    cheap = [
        "--generation.max_new_tokens",
        "4",
        "--scoring.n_resamples",
        "20",
        "--mcq_set.limit",
        "4",
        "--runtime.progress",
        "false",
    ]
    report = evaluate_script.main([*words[2:], *cheap])
    (entry,) = report["ablation"]["sensitivity"]
    assert entry["key"] == "model.optimizer.lr" and entry["others"] == []
    assert [(p["system"], p["value"]) for p in entry["points"]] == [
        ("lr-0.003", 0.003),
        ("lr-0.01", 0.01),
        ("lr-0.03", 0.03),
    ]
    assert {"BLEU-4", "ROUGE-L", "PPL (test)", "MCQ loglik %"} <= set(entry["metrics"])
    out = Path(report["output_dir"])
    plot = out / entry["plot"]
    assert plot.name == "sensitivity_model.optimizer.lr.png" and plot.stat().st_size > 10_000
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "### Sensitivity to `model.optimizer.lr`" in md and f"]({plot.name})" in md
    html = (out / "report.html").read_text(encoding="utf-8")
    assert re.search(
        r'<img alt="sensitivity to model.optimizer.lr" src="data:image/png;base64,', html
    )
