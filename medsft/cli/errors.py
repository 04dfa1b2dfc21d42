"""The error policy of every entry point (train.py, evaluate.py, `python -m medsft.*`).

A mistake the user can fix (`medsft.errors.UserError`, a file that is not there, a weights file
that would run code) prints one line, `error: <reason>`, and exits 1; the reason is the first
line of the message (what follows it, such as the example a chat template cannot render, is
detail). Ctrl-C prints one line and exits 130. `MEDSFT_DEBUG=1` or `--debug` on the command line
shows the full traceback instead. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import pickle
import re
import signal
import sys
import threading
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


def unpickling_reason(err: BaseException) -> str:
    """torch's refusal of a weights file holding code (`torch.load(weights_only=True)`), said
    without its advice to load the file unsafely."""
    detail = next(
        (line.strip() for line in str(err).splitlines() if "WeightsUnpickler error:" in line),
        reason(err),
    )
    detail = detail.removeprefix("WeightsUnpickler error: ").split(". Please use")[0]
    return (
        f"refusing to load a weights file that holds Python objects other than tensors, which "
        f"loading could execute ({detail}); use safetensors weights, or files you trust"
    )


INTERRUPTED = (
    "interrupted (Ctrl-C): what was finished is kept (checkpoints, cached answers and judge "
    "replies); the same command continues from it"
)
INTERRUPTED_EXIT = 130
"""128 + SIGINT, as a shell reports a process ended by Ctrl-C."""


class CtrlC:
    """Ctrl-C during a tool: noted, raised as KeyboardInterrupt as usual, and told apart when
    a library turns it into something else (Lightning exits 1 after its own shutdown)."""

    def __init__(self) -> None:
        self.pressed = False
        self.previous: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        self.pressed = True
        raise KeyboardInterrupt

    def __enter__(self) -> CtrlC:
        # Only over Python's own handler, in the main thread: a SIGINT that the shell ignores
        # (`cmd &`) or that someone else handles stays theirs.
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def interrupted() -> NoReturn:
    """One line and exit 130. Worker threads still waiting on a request (judge, endpoint
    systems) are not waited for: what they finished is on disk already (medsft.cache flushes
    each entry), and joining them at exit took 9-12 s and printed their tracebacks."""
    print(f"error: {INTERRUPTED}", file=sys.stderr, flush=True)
    if any(
        t.is_alive() and not t.daemon
        for t in threading.enumerate()
        if t is not threading.main_thread()
    ):
        sys.stdout.flush()
        os._exit(INTERRUPTED_EXIT)
    raise SystemExit(INTERRUPTED_EXIT)


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
    with CtrlC() as ctrl_c:
        try:
            return main(args)
        except USER_FIXABLE as err:
            fail(err)
        except pickle.UnpicklingError as err:  # transformers or peft loading a crafted .bin
            print(f"error: {unpickling_reason(err)}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None
        except KeyboardInterrupt:
            interrupted()
        except SystemExit:
            if ctrl_c.pressed:
                interrupted()
            raise
