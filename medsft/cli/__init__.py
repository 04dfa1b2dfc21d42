"""Every command-line entry point, and the start, argument handling and error policy they share.

- `train` (`python train.py`: LightningCLI, resume, preemption) and `evaluate`
  (`python evaluate.py`): the two commands.
- `chat`, `augment`, `export`, `publish`, `leakage`: the tools (`python -m medsft.cli.<tool>`;
  the old `python -m medsft.export`, `.publish` and `.leakage` still run them).
- `errors`: the error policy, run by every entry point (`run`). A user-fixable error prints one
  `error: <reason>` line (the first line of its message) and exits 1; Ctrl-C one line and 130;
  `MEDSFT_DEBUG=1` or `--debug` shows the traceback.
- `console`: a tool's start (`prepare_process`): the environment the libraries read, no Hub
  kernels at import, the library notes dropped with their reasons.
- `parsing`: `tool_parser` and `OneLineErrors`: formatted --help with the tool's examples,
  `--debug` listed, and one line for a command-line mistake.

May import: anything in medsft (the outermost layer). Nothing outside medsft.cli imports it; the
top-level aliases run a tool with runpy and import nothing.
"""
