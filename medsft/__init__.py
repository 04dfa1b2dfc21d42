"""medsft: supervised fine-tuning of Qwen3 on medical (and any) instruction data."""

__version__ = "0.1.0"
