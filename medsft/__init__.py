"""medsft: supervised fine-tuning of Qwen3 on medical (and any) instruction data.

Importing medsft (or any of its packages) only defines things: the command-line tools set up
their process themselves (medsft.cli.console.prepare_process).
"""

__version__ = "0.1.0"
