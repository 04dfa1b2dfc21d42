"""Every command-line entry point, and the argument handling and error policy they share.

- `train` (`python train.py`) and `evaluate` (`python evaluate.py`): the two commands.
- `chat`, `augment`, `export`, `publish`, `leakage`: the tools (`python -m medsft.cli.<tool>`;
  the old `python -m medsft.export`, `.publish` and `.leakage` still run them).
- `errors`: the error policy. A user-fixable error prints one `error: <reason>` line (the
  first line of its message) and exits 1; `MEDSFT_DEBUG=1` or `--debug` shows the traceback.
- `parsing`: `tool_parser`, the jsonargparse parser of the tools (formatted --help with the
  tool's examples, `--debug` listed).
- `console`: library notes no user can act on, silenced one exact message at a time.

May import: anything in medsft (the outermost layer). Nothing outside medsft.cli imports it; the
top-level aliases run a tool with runpy and import nothing.
"""
