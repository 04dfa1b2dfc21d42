"""The error policy of every entry point (train.py, evaluate.py, `python -m medsft.*`).

A mistake the user can fix (`medsft.errors.UserError`, or a file that is not there) prints one line, `error: <reason>`, and
exits 1; the reason is the first line of the message (what follows it, such as the example a
chat template cannot render, is detail). `MEDSFT_DEBUG=1` or `--debug` on the command line
shows the full traceback instead. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from medsft.errors import UserError

USER_FIXABLE = (UserError, FileNotFoundError)
"""Errors reported as one line; any other exception is a bug and keeps its traceback."""
DEBUG_ENV = "MEDSFT_DEBUG"
DEBUG_FLAG = "--debug"
# A DataLoader worker's error reaches the main process as "Caught X in DataLoader worker
# process N." followed by the worker's traceback text; its reason is in the exception line.
_WORKER = re.compile(r"^Caught \w+ in DataLoader worker process \d+\.$")
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*: (.*)$")


def add_debug_argument(parser: Any) -> None:
    """List `--debug` in a tool's --help (`run` takes it off the command line before parsing)."""
    parser.add_argument(
        DEBUG_FLAG,
        action="store_true",
        help=f"on an error, show the full traceback (or set {DEBUG_ENV}=1)",
    )


def debug_requested(argv: Sequence[str] | None = None) -> bool:
    """Whether the user asked for tracebacks (`MEDSFT_DEBUG=1`, or `--debug` in `argv`)."""
    argv = sys.argv[1:] if argv is None else argv
    return os.environ.get(DEBUG_ENV, "") not in ("", "0") or DEBUG_FLAG in argv


def reason(err: BaseException) -> str:
    """The first line of an error's message: the reason, without the detail that follows.

    For an error re-raised from a DataLoader worker, the first line of the worker's own
    message (its exception line), not torch's "Caught ... in DataLoader worker" preamble.
    """
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    if _WORKER.match(lines[0]):
        for line in lines[1:]:
            found = _EXCEPTION_LINE.match(line)
            if found and not line.startswith((" ", "Traceback", "Original Traceback")):
                return found.group(1)
    return lines[0]


def fail(err: BaseException) -> NoReturn:
    """Print `error: <reason>` to stderr and exit 1."""
    print(f"error: {reason(err)}", file=sys.stderr, flush=True)
    raise SystemExit(1)


def run(main: Callable[..., Any], argv: Sequence[str] | None = None) -> Any:
    """Start a command-line tool: prepare the process (medsft.cli.console.prepare_process), then
    call `main(argv)` under the error policy; `--debug` is taken out of `argv` first.

    With `argv` None the command line is `sys.argv[1:]`, and `--debug` is removed from
    sys.argv too (DDP workers relaunched from sys.argv see the same arguments).
    """
    from medsft.cli.console import prepare_process

    prepare_process()
    debug = debug_requested(argv)
    if argv is None:
        sys.argv[1:] = [a for a in sys.argv[1:] if a != DEBUG_FLAG]
        args = None
    else:
        args = [a for a in argv if a != DEBUG_FLAG]
    if debug:
        # DDP workers and subprocesses follow the same policy; restored after, so a caller's
        # later commands (the test suite runs many in one process) are not left in debug mode.
        previous = os.environ.get(DEBUG_ENV)
        os.environ[DEBUG_ENV] = "1"
        try:
            return main(args)
        finally:
            if previous is None:
                os.environ.pop(DEBUG_ENV, None)
            else:
                os.environ[DEBUG_ENV] = previous
    try:
        return main(args)
    except USER_FIXABLE as err:
        fail(err)
