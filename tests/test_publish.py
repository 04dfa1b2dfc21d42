"""medsft.publish: the old `python -m medsft.publish` still runs `python -m medsft.cli.publish`."""

from __future__ import annotations

import runpy
import sys

import pytest


def test_the_old_command_runs_the_cli_tool(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["publish", "--help"])
    monkeypatch.delitem(sys.modules, "medsft.cli.publish", raising=False)  # run fresh as __main__
    with pytest.raises(SystemExit) as done:
        runpy.run_module("medsft.publish", run_name="__main__")
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith("usage: python -m medsft.cli.publish")
