"""A quiet console: library notes that no medsft user can act on are dropped at their source,
one exact message at a time, each with the reason; everything else still prints.

`quiet_bitsandbytes_kernel_note` runs when medsft is imported (the note is logged while
bitsandbytes itself is imported, which peft and transformers do early). The command-line tools
call `quiet_known_noise` before they start.
"""

from __future__ import annotations

import logging
import warnings

BNB_KERNEL_NOTE = "Failed to load CPU gemm_4bit_forward from kernels-community"
"""bitsandbytes' note, logged at import on a CPU with AVX512-bf16 when the `kernels` package is
absent (bitsandbytes.backends.cpu.ops)."""


class DropMessages(logging.Filter):
    """Drops the records whose message starts with one of `prefixes`; passes all others."""

    def __init__(self, *prefixes: str):
        """
        Args:
            prefixes: starts of the messages to drop.
        """
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


def _add_once(logger_name: str, drop: DropMessages) -> None:
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, DropMessages) and f.prefixes == drop.prefixes for f in logger.filters):
        logger.addFilter(drop)


def quiet_bitsandbytes_kernel_note() -> None:
    """Drop bitsandbytes' "pip install kernels" note on CPUs.

    With the `kernels` package, bitsandbytes would download an optional faster CPU 4-bit matmul
    from the Hugging Face hub at run time; without it, it runs its own CPU kernel, which is what
    medsft uses anyway (offline runs, and 4-bit on CPU only in tests). The note was printed by
    every evaluate and export, and installing `kernels` would not make medsft offline-safe.
    Other bitsandbytes warnings still print.
    """
    _add_once("bitsandbytes.backends.cpu.ops", DropMessages(BNB_KERNEL_NOTE))


def quiet_known_noise() -> None:
    """Everything a command-line tool should not print: see each entry's reason."""
    quiet_bitsandbytes_kernel_note()
    # Lightning's banners where they say nothing: "GPU available: False, used: False" and the
    # same for TPU/HPU on a CPU run ("GPU available: True (cuda), used: True" still prints), and
    # its advertisement for LitLogger ("Tip: ...").
    _add_once(
        "lightning.pytorch.utilities.rank_zero",
        DropMessages(
            "GPU available: False",
            "TPU available: False",
            "HPU available: False",
            "💡 Tip:",
            "Tip:",
        ),
    )
    # Deprecations inside the libraries, not in medsft's calls; nothing for a user to do:
    # Lightning 2.6 calls a torch API that torch deprecated (treespec/LeafSpec), and peft calls
    # transformers' `is_gradient_checkpointing` (FutureWarning) each time it wraps a model.
    warnings.filterwarnings("ignore", message=r".*LeafSpec")
    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated")
    # PEFT looks for a config.json beside a `random:` preset name, which has none by design.
    warnings.filterwarnings("ignore", message=r"Could not find a config file in random:")
