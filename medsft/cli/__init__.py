"""Command-line tools: argument handling and the error policy shared by every entry point.

- `errors`: the error policy. A user-fixable error prints one `error: <reason>` line (the
  first line of its message) and exits 1; `MEDSFT_DEBUG=1` or `--debug` shows the traceback.
- `parsing`: `tool_parser`, the jsonargparse parser of `python -m medsft...` tools (formatted
  --help with the tool's examples, `--debug` listed).
- `train`: the training command (`python train.py`): LightningCLI, resume, preemption.
- `evaluate`: the evaluation command (`python evaluate.py`).
"""
