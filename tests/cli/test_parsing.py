"""Every command-line tool's --help: the summary and examples as written, `--debug` listed."""

import importlib

import pytest

from medsft.cli.parsing import help_text

TOOLS = {
    "python -m medsft.cli.export": "medsft.cli.export",
    "python -m medsft.cli.leakage": "medsft.cli.leakage",
    "python evaluate.py": "medsft.cli.evaluate",
    "python -m medsft.cli.chat": "medsft.cli.chat",
    "python -m medsft.cli.augment": "medsft.cli.augment",
}


def test_help_text_keeps_examples_and_drops_the_python_sections():
    doc = """Do a thing.

        python -m x --a 1 \\
            --b 2

    More words.

    Args:
        argv: the command line.
    """
    assert help_text(doc) == "Do a thing.\n\n    python -m x --a 1 \\\n        --b 2\n\nMore words."


@pytest.mark.parametrize("prog", TOOLS)
def test_every_tool_help_is_formatted(prog, capsys):
    main = importlib.import_module(TOOLS[prog]).main
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {prog} ")
    assert "Args:" not in out and "Returns:" not in out
    assert "--debug" in out
    if prog.startswith("python -m"):  # an example command on a line of its own
        assert any(line.startswith(f"    {prog} ") for line in out.splitlines()), out
