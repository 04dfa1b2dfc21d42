"""Command-line tools: every entry point, with the start, argument handling and error policy
they share. Nothing outside this package imports it.

- `errors`: the error policy, run by every entry point (`run`). A user-fixable error prints one
  `error: <reason>` line (the first line of its message) and exits 1; Ctrl-C one line and 130;
  `MEDSFT_DEBUG=1` or `--debug` shows the traceback.
- `console`: a tool's start (`prepare_process`): the environment the libraries read, no Hub
  kernels at import, the library notes dropped with their reasons.
- `parsing`: `tool_parser` and `OneLineErrors`: formatted --help with the tool's examples,
  `--debug` listed, and one line for a command-line mistake.
- `train`, `evaluate`: `python train.py` (LightningCLI, resume, preemption), `python evaluate.py`.
- `chat`, `augment`, `export`, `publish`, `leakage`: the `python -m medsft.cli.X` tools.
"""
