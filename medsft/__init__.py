"""medsft: supervised fine-tuning of Qwen3 on medical (and any) instruction data."""

from medsft.cli.console import quiet_bitsandbytes_kernel_note

__version__ = "0.1.0"

# Before anything imports bitsandbytes (peft and transformers do, early), which logs the note
# while it is imported: see medsft.cli.console.
quiet_bitsandbytes_kernel_note()
