"""Argument handling shared by the command-line tools: one parser factory, readable --help.

`tool_parser` builds a jsonargparse parser whose --help shows the tool's summary and usage
examples as written (not a docstring reflowed into one paragraph with its Args and Returns),
lists `--debug` (medsft.cli.errors), and reads no environment variables.
"""

from __future__ import annotations

import argparse
import inspect
import re
from typing import Any

from jsonargparse import ArgumentParser, DefaultHelpFormatter

from medsft.cli.errors import add_debug_argument

# Google-style docstring sections: documentation of the Python function, not of the command.
_SECTIONS = re.compile(r"^(Args|Arguments|Returns|Raises|Yields|Note|Example)s?:\s*$")


class HelpFormatter(DefaultHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """jsonargparse's help, with the description's line breaks kept (examples stay examples)."""


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
    parser = ArgumentParser(
        prog=prog,
        description=help_text(doc),
        formatter_class=HelpFormatter,
        default_env=False,
        **kwargs,
    )
    add_debug_argument(parser)
    return parser
