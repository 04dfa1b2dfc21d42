"""README.md's commands run as written: the quick blocks here, every other one named with its test.

A fenced block whose info string has the word `test` (```` ```bash test ````, ```` ```python
test ````) runs here from the repository root, as a user would type it. Every command line of
the other bash blocks must appear in COVERED, with the test that runs it (looked up by name
anywhere under tests/, so tests may move between files) or why no test can (GPU, network).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT

README = ROOT / "README.md"
BLOCK = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)

COVERED: dict[str, str] = {
    # The first screen.
    "pip install torch --index-url": "no test: a download; .ci/run installs the CPU wheel first",
    'pip install -e ".[train]" -c constraints.txt && python train.py --config configs/demo.yaml': (
        "test_demo_training_then_evaluation_with_judge_and_reuse"
    ),
    'pip install -e ".[dev]" -c constraints.txt && OMP_NUM_THREADS=1': (
        "test_ci_runs_the_readme_test_command"
    ),
    # Train.
    "python train.py --config configs/qlora.yaml --ckpt_path last": (
        "test_ckpt_path_last_searches_the_configured_checkpoint_folder"
    ),
    "python train.py --config configs/qlora.yaml --config configs/loggers/wandb.yaml": (
        "test_logger_config_keeps_the_run_folder"
    ),
    "python train.py --config configs/qlora.yaml": "test_every_training_config_instantiates",
    "python train.py --config configs/lora.yaml --model.lora.r 32": (
        "test_every_training_config_instantiates"
    ),
    "python train.py --config configs/full.yaml --trainer.devices 4": (
        "test_every_training_config_instantiates"
    ),
    "python -m medsft.cli.export logs/qlora/version_0": "test_adapter_round_trip_and_merged_export",
    "python -m medsft.cli.publish logs/qlora/version_0": (
        "test_dry_run_writes_the_card_and_sends_nothing"
    ),
    # Data.
    "python train.py --config configs/lora.yaml --data.source my.jsonl": (
        "test_every_training_config_parses"
    ),
    # Evaluate.
    "python evaluate.py --config configs/eval_demo.yaml": (
        "test_demo_training_then_evaluation_with_judge_and_reuse"
    ),
    "export OPENAI_API_KEY=": "no test: sets the judge's key",
    "python evaluate.py --config configs/eval.yaml --runtime.devices 4": (
        "test_configs_parse_with_dotted_overrides"
    ),
    "python evaluate.py --config configs/eval.yaml --systems+": (
        "test_configs_parse_with_dotted_overrides"
    ),
    # Sweeps.
    "printf -- '--model.optimizer.lr %s\\n'": (
        "test_readme_lr_sweep_then_one_evaluation_plots_the_sensitivity"
    ),
    "bash docs/slurm/sweep.sbatch": "test_readme_lr_sweep_then_one_evaluation_plots_the_sensitivity",
    "sbatch --array=0-2 docs/slurm/sweep.sbatch": (
        "test_readme_lr_sweep_then_one_evaluation_plots_the_sensitivity"
    ),
    "python evaluate.py --config configs/eval_demo.yaml --output_dir outputs/lr": (
        "test_readme_lr_sweep_then_one_evaluation_plots_the_sensitivity"
    ),
    # Development.
    'OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python -m pytest -m "not slow"': (
        "no test: a subset of the test command .ci/run runs"
    ),
}


def blocks() -> list[tuple[str, bool, str]]:
    """(language, marked `test`, text) of every fenced block in README.md."""
    text = README.read_text(encoding="utf-8")
    return [(m[1], "test" in m[2].split(), m[3]) for m in BLOCK.finditer(text)]


def commands(text: str) -> list[str]:
    """The commands of a bash block: backslash continuations joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [line.strip() for line in joined.splitlines() if line.strip() and line[0] != "#"]


def test_readme_has_quick_blocks_and_the_two_first_commands():
    found = blocks()
    assert sum(marked for _, marked, _ in found) >= 4
    first = [c for lang, marked, t in found if lang == "bash" and not marked for c in commands(t)]
    install = (
        'pip install -e ".[train]" -c constraints.txt && python train.py --config configs/demo'
    )
    assert first[1].startswith(install)
    assert first[2].startswith('pip install -e ".[dev]" -c constraints.txt && ')


def test_ci_runs_the_readme_test_command():
    """.ci/run's last line is README's test command, character for character."""
    readme = [c for lang, marked, t in blocks() if lang == "bash" for c in commands(t)]
    test_command = next(c for c in readme if c.startswith('pip install -e ".[dev]"'))
    test_command = test_command.split("  #")[0].strip()
    ci_lines = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci_lines[-1] == test_command


def covering(command: str) -> str | None:
    """COVERED's entry for `command`: the longest key it starts with."""
    keys = [k for k in COVERED if command.startswith(k)]
    return COVERED[max(keys, key=len)] if keys else None


def test_every_other_command_names_the_test_that_runs_it():
    defined = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        defined |= set(re.findall(r"^def (test_\w+)", path.read_text(encoding="utf-8"), re.M))
    uncovered, missing = [], []
    for lang, marked, text in blocks():
        if lang != "bash" or marked:
            continue
        for command in commands(text):
            where = covering(command)
            if where is None:
                uncovered.append(command)
            elif not where.startswith("no test:") and where not in defined:
                missing.append((command, where))
    assert not uncovered, f"README commands with no test named in COVERED: {uncovered}"
    assert not missing, f"COVERED names tests that do not exist: {missing}"


TRAINING = [
    c.split("  #")[0].strip()
    for lang, marked, text in blocks()
    if lang == "bash" and not marked
    for c in commands(text)
    if c.startswith("python train.py") and "--ckpt_path" not in c
]


def overrides(command: str) -> dict[str, str]:
    """`--a.b value` pairs of a command line (shell quoting undone), except --config."""
    words = shlex.split(command)
    return {
        w[2:]: words[i + 1]
        for i, w in enumerate(words[:-1])
        if w.startswith("--") and w != "--config" and not words[i + 1].startswith("--")
    }


def lookup(config: dict, dotted: str):
    for part in dotted.split("."):
        config = config[part]
    return config


@pytest.mark.parametrize("command", TRAINING, ids=[c[16:60] for c in TRAINING])
def test_training_command_resolves_as_written(command, capsys, monkeypatch):
    """Each README training command, with `--print_config` added, parses from the clone and its
    overrides reach the resolved config (the run itself needs a GPU or the hub). Its words, split
    as the shell splits them, go to train.py's own entry point in this process (the quick blocks
    below start `python train.py` itself)."""
    from medsft.cli.train import cli_main

    words = shlex.split(command)
    assert words[:2] == ["python", "train.py"], command
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as done:
        cli_main([*words[2:], "--print_config"])
    assert done.value.code in (0, None), command
    resolved = yaml.safe_load(capsys.readouterr().out)
    for key, value in overrides(command).items():
        expected, got = yaml.safe_load(value), lookup(resolved, key)
        if isinstance(expected, dict):
            got = {k: got[k] for k in expected}
        # trainer.devices is typed `int | str`: the CLI keeps "4" as given.
        assert got == expected or str(got) == str(expected), (key, got, expected)


QUICK = [(lang, text) for lang, marked, text in blocks() if marked]


@pytest.mark.slow
@pytest.mark.parametrize(("lang", "text"), QUICK, ids=[t.split("\n")[0][:40] for _, t in QUICK])
def test_quick_readme_block_runs_as_written(lang, text):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    if lang == "python":
        argv = [sys.executable, "-c", text]
    else:
        assert lang == "bash", lang
        argv = ["bash", "-euo", "pipefail", "-c", text]
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{text}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr
