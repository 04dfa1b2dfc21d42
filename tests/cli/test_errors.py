"""The error policy shared by every entry point: one `error:` line with the reason, the
traceback only when asked for."""

import os

import pytest

from medsft.cli.errors import DEBUG_ENV, reason, run
from medsft.errors import UserError
from tests.helpers import ROOT

TEMPLATE_MISMATCH = (
    "data.jsonl:1: field 'messages': the generation prompt is not a prefix of the rendered "
    "assistant turn 1; refusing to guess the mask.\nprompt ends with: '<|im_start|>assistant'\n"
    "example:\n  user: 头痛\n  assistant: 休息"
)


def test_the_reason_is_the_first_line_of_the_message():
    assert reason(UserError(TEMPLATE_MISMATCH)) == TEMPLATE_MISMATCH.splitlines()[0]
    assert reason(ValueError("")) == "ValueError"


def test_a_dataloader_workers_error_gives_the_workers_reason():
    worker = UserError(
        "Caught InvalidExample in DataLoader worker process 0.\nOriginal Traceback (most recent "
        'call last):\n  File "x.py", line 1, in f\n    raise InvalidExample(...)\n'
        "medsft.data.InvalidExample: a.jsonl:3: field 'answer': empty\nexample:\n  user: q"
    )
    assert reason(worker) == "a.jsonl:3: field 'answer': empty"


def failing(error):
    def main(argv):
        raise error

    return main


def test_a_user_error_is_one_line_and_exit_1(capsys, monkeypatch):
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    with pytest.raises(SystemExit) as done:
        run(failing(UserError(TEMPLATE_MISMATCH)), ["--x"])
    assert done.value.code == 1
    assert capsys.readouterr().err == f"error: {TEMPLATE_MISMATCH.splitlines()[0]}\n"
    with pytest.raises(SystemExit):
        run(failing(FileNotFoundError("no such file: a.jsonl")), [])
    assert capsys.readouterr().err == "error: no such file: a.jsonl\n"


def test_debug_flag_or_variable_shows_the_traceback(monkeypatch):
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    seen = []

    def main(argv):
        seen.append(argv)
        raise UserError("bad")

    with pytest.raises(UserError):
        run(main, ["--a", "--debug"])
    assert seen == [["--a"]]  # the tool's parser never sees --debug
    # Debug mode ends with the command: later commands in this process print one line again.
    assert DEBUG_ENV not in os.environ
    monkeypatch.setenv(DEBUG_ENV, "1")
    with pytest.raises(UserError):
        run(main, [])


def test_a_bug_keeps_its_traceback(monkeypatch):
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    with pytest.raises(KeyError):
        run(failing(KeyError("bug")), [])


# -- one line for every mistake, through the real entry points --------------------------------
# Each case: (entry point, its arguments, exit status, what the one error line says). The
# entry points run in this process (their `cli_main`, or `run(main)` as their __main__ does).
# `<tmp>` is this module's scratch folder, `{bad_run}` etc. the files made below.
TRAIN = ("--config", "<root>/configs/demo.yaml", "--trainer.logger.init_args.save_dir", "<tmp>")
EVALUATE = ("--config", "<root>/configs/eval_demo.yaml", "--output_dir", "<tmp>/eval_out")
ANSWERS = "[{name: gpt, path: data/sample/baseline_answers.jsonl}]"
MISTAKES = {
    # The command line: the error and where to look, not 57 to 98 lines of usage.
    "train unknown key": ("train", [*TRAIN, "--nosuchkey", "1"], 2, "unrecognized arguments"),
    "train bad value": ("train", [*TRAIN, "--data.batch_size", "x"], 2, "Expected a <class 'int'>"),
    "train missing config": ("train", ["--config", "<tmp>/none.yaml"], 2, "File does not exist"),
    "train YAML tag": ("train", ["--config", "<tagged>"], 2, "python/object"),
    "train --optimizer": ("train", [*TRAIN, "--optimizer", "torch.optim.SGD"], 2, "--optimizer"),
    "evaluate unknown key": ("evaluate", [*EVALUATE, "--nosuchkey", "1"], 2, "unrecognized"),
    "evaluate bad value": ("evaluate", [*EVALUATE, "--scoring.seed", "x"], 2, "scoring.seed"),
    "export no run": ("export", [], 2, "the following arguments are required: run"),
    "publish no repo": ("publish", ["<tmp>"], 2, "required: --repo_id"),
    "leakage unknown key": ("leakage", ["--nope"], 2, "unrecognized arguments: --nope"),
    "chat unknown key": ("chat", ["--nope"], 2, "unrecognized arguments: --nope"),
    "augment unknown key": ("augment", ["--nope"], 2, "unrecognized arguments: --nope"),
    # Values that cannot work: the setting named, before any work.
    "batch_size 0": ("train", [*TRAIN, "--data.batch_size", "0"], 1, "data.batch_size must be"),
    "batch_size -2": ("train", [*TRAIN, "--data.batch_size", "-2"], 1, "data.batch_size must be"),
    "max_length 0": ("train", [*TRAIN, "--data.max_length", "0"], 1, "data.max_length must be"),
    "val_fraction 1.0": ("train", [*TRAIN, "--data.val_fraction", "1.0"], 1, "val_fraction must"),
    "val_fraction -0.5": ("train", [*TRAIN, "--data.val_fraction", "-0.5"], 1, "val_fraction must"),
    "lr -0.01": ("train", [*TRAIN, "--model.optimizer.lr", "-0.01"], 1, "optimizer.lr must be"),
    "max_steps -5": ("train", [*TRAIN, "--trainer.max_steps", "-5"], 1, "`max_steps` must be"),
    "output_dir a file": (
        "evaluate",
        [*EVALUATE[:2], "--output_dir", "<tmp>/a_file", "--systems", ANSWERS, "--baseline", "null"],
        1,
        "is a file",
    ),
    "run config not YAML": (
        "evaluate",
        [*EVALUATE, "--systems", "[{name: r, path: '<bad_run>'}]", "--baseline", "null"],
        1,
        "config.yaml:3: the run's config is not valid YAML",
    ),
    "incomplete model": (
        "evaluate",
        [*EVALUATE, "--systems", "[{name: r, path: '<cut_run>/latest'}]", "--baseline", "null"],
        1,
        "model is incomplete: it has no model weights",
    ),
    "weights that run code": (
        "evaluate",
        [
            *EVALUATE,
            "--systems",
            "[{name: p, path: '<payload>', kind: model}]",
            "--baseline",
            "null",
        ],
        1,
        "refusing to load a weights file that holds Python objects",
    ),
    # Keys the run would ignore.
    "split with a local source": ("train", [*TRAIN, "--data.split", "test"], 1, "would be ignored"),
    "subset with a local source": ("train", [*TRAIN, "--data.subset", "x"], 1, "would be ignored"),
    "fused with bitsandbytes": (
        "train",
        [*TRAIN, "--model.optimizer.name", "adamw_8bit", "--model.optimizer.fused", "true"],
        1,
        "bitsandbytes' optimizer, which would ignore it",
    ),
}


def _entry(name):
    import importlib

    if name in ("train", "evaluate"):
        return importlib.import_module(f"medsft.cli.{name}").cli_main
    main = importlib.import_module(f"medsft.cli.{name}").main
    return lambda argv: run(main, argv)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """The files the cases name: a config with a YAML tag, a run whose config.yaml is not YAML,
    a run whose model/ was cut short, a model folder whose .bin would run code."""
    import pathlib

    import torch

    from medsft.model.build import build_model, load_tokenizer

    tmp = tmp_path_factory.mktemp("mistakes")
    (tmp / "a_file").write_text("not a folder")
    tagged = tmp / "tagged.yaml"
    tagged.write_text("model: !!python/object/apply:os.system [echo hi]\n")
    bad_run = tmp / "bad/version_0"
    adapter = bad_run / "adapter"
    model = build_model("random:tiny", finetune="lora", seed=0)
    model.peft_config["default"].base_model_name_or_path = "random:tiny"
    model.save_pretrained(adapter)
    load_tokenizer("qwen3").save_pretrained(adapter)
    (bad_run / "config.yaml").write_text("model:\n  name_or_path: [unclosed\n")
    cut = tmp / "cut/version_0/model"
    cut.mkdir(parents=True)
    (cut / "config.json").write_text("{}")
    payload = tmp / "payload"
    build_model("random:tiny", finetune="full", seed=0).config.save_pretrained(payload)
    load_tokenizer("qwen3").save_pretrained(payload)

    class Payload:
        def __reduce__(self):
            return (pathlib.Path.touch, (tmp / "code-ran",))

    torch.save({"x": Payload()}, payload / "pytorch_model.bin")
    return {"tmp": tmp, "tagged": tagged, "bad_run": bad_run, "cut_run": tmp / "cut"} | {
        "payload": payload
    }


@pytest.mark.parametrize("case", MISTAKES)
def test_every_mistake_is_one_error_line(case, scratch, capsys, monkeypatch):
    entry, argv, code, says = MISTAKES[case]
    names = {k: str(v) for k, v in scratch.items()} | {"root": str(ROOT)}
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    capsys.readouterr()
    for name, value in names.items():
        argv = [a.replace(f"<{name}>", value) for a in argv]
    with pytest.raises(SystemExit) as done:
        _entry(entry)(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert done.value.code == code, err[-2000:]
    assert len(errors) == 1 and errors[0] == lines[-1], err[-2000:]
    assert says in errors[0] and "Traceback" not in err and "usage:" not in err, err[-2000:]
    assert not (scratch["tmp"] / "code-ran").exists()


def test_settings_a_run_would_ignore_are_said_in_one_warning_line(caplog):
    from medsft.evaluation import EvalConfig, ScoringSettings, SystemSpec, validate_config
    from medsft.model.build import LoraSettings
    from medsft.training.module import SFTModule

    with caplog.at_level("WARNING"):
        SFTModule("random:tiny", finetune="full", lora=LoraSettings(r=0))
        systems = [SystemSpec("gpt", "data/sample/baseline_answers.jsonl")]
        scoring = ScoringSettings(n_resamples=0)
        validate_config(EvalConfig(systems=systems, scoring=scoring, output_dir="unused"))
        validate_config(EvalConfig(systems=systems, scoring=scoring), warn=False)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and all("\n" not in line for line in lines), lines
    assert lines[0].startswith("model.lora is set (r: 0) but model.finetune is full")
    assert lines[1].startswith("scoring.paired is on but scoring.n_resamples is 0")
