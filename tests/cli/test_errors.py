"""The error policy shared by every entry point: one `error:` line with the reason, the
traceback only when asked for."""

import os

import pytest

from medsft.cli.errors import DEBUG_ENV, reason, run
from medsft.errors import UserError

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
