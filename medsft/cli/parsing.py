"""Argument handling shared by the command-line tools: one parser factory, readable --help,
and one line for a mistake on the command line.

`tool_parser` builds a jsonargparse parser whose --help shows the tool's summary and usage
examples as written (not a docstring reflowed into one paragraph with its Args and Returns),
lists `--debug` (medsft.cli.errors), and reads no environment variables. `OneLineErrors` makes
any parser (jsonargparse's, LightningCLI's, argparse's) answer an unknown option, a bad value or
a missing config file with one `error:` line and where to look (`--help`), not 50 to 100 lines
of usage first; `--debug` or MEDSFT_DEBUG=1 brings the usage back.
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
from typing import Any, NoReturn

from jsonargparse import ArgumentParser, DefaultHelpFormatter

from medsft.cli.errors import add_debug_argument, debug_requested

# Google-style docstring sections: documentation of the Python function, not of the command.
_SECTIONS = re.compile(r"^(Args|Arguments|Returns|Raises|Yields|Note|Example)s?:\s*$")


class HelpFormatter(DefaultHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """jsonargparse's help, with the description's line breaks kept (examples stay examples)."""


def one_line(message: str) -> str:
    """A parser's message (jsonargparse's span several indented lines) on one line."""
    return " ".join(str(message).split())


class OneLineErrors:
    """Mixed in before a parser class: a command-line mistake prints `error: <what> (see
    <prog> --help)` and exits 2, as argparse does, without the usage.

    jsonargparse turns `exit_on_error` off while it tries alternatives (nested parsers, union
    types) and expects `error` to raise then: it still does.
    """

    prog: str
    exit_on_error: bool

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not getattr(self, "exit_on_error", True) or debug_requested():
            if ex is None:
                super().error(message)  # type: ignore[misc]
            super().error(message, ex)  # type: ignore[misc]
        prog = self.prog.replace(" [options]", "")
        print(f"error: {one_line(message)} (see {prog} --help)", file=sys.stderr, flush=True)
        raise SystemExit(2)


class ToolParser(OneLineErrors, ArgumentParser):
    """jsonargparse's parser with one-line errors."""


class ArgparseTool(OneLineErrors, argparse.ArgumentParser):
    """argparse's parser with one-line errors (the tools that start before torch is imported)."""


def help_text(doc: str | None) -> str:
    """A docstring as a tool's description: its text up to the first Args/Returns section,
    dedented, line breaks kept."""
    lines = inspect.cleandoc(doc or "").splitlines()
    kept = []
    for line in lines:
        if _SECTIONS.match(line.strip()) and not line.startswith(" "):
            break
        kept.append(line)
    return "\n".join(kept).strip()


def tool_parser(prog: str, doc: str | None, **kwargs: Any) -> ArgumentParser:
    """A parser for `python -m medsft...` tools.

    Args:
        prog: how the tool is run, e.g. `python -m medsft.cli.export`.
        doc: the docstring to describe it with (see `help_text`).
        **kwargs: more ArgumentParser options.
    """
    parser = ToolParser(
        prog=prog,
        description=help_text(doc),
        formatter_class=HelpFormatter,
        default_env=False,
        **kwargs,
    )
    add_debug_argument(parser)
    return parser
