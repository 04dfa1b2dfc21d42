"""medsft: supervised fine-tuning of Qwen3 on medical (and any) instruction data."""

from medsft.console import quiet_bitsandbytes_kernel_note

__version__ = "0.1.0"

# Before anything imports bitsandbytes (peft and transformers do, early), which logs the note
# while it is imported: see medsft.console.
quiet_bitsandbytes_kernel_note()
