"""How a command-line tool starts: the environment the libraries read, no code from the Hub at
import, and a quiet console.

`prepare_process` runs first in every entry point (medsft.cli.errors.run calls it, before the
tool's own work imports bitsandbytes, peft or transformers' models). Nothing here runs when
medsft or any of its packages is imported: a library user's process is left as it was.

Library notes that no medsft user can act on are dropped at their source, one exact message at
a time, each with the reason below; everything else still prints.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

HUB_KERNELS_ENV = "MEDSFT_HUB_KERNELS"
"""Set to 1 to let libraries load compiled kernels from the Hugging Face Hub (see
`keep_hub_kernels_off`)."""

BNB_KERNEL_NOTE = "Failed to load CPU gemm_4bit_forward from kernels-community"
"""bitsandbytes' note, logged while it is imported on a CPU with AVX512-bf16 when its Hub kernel
is not loaded (bitsandbytes.backends.cpu.ops)."""


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


def keep_hub_kernels_off() -> bool:
    """No compiled code fetched from the Hub while libraries are imported, unless asked for.

    bitsandbytes (0.45 to 0.50 at least) calls `kernels.get_kernel("kernels-community/
    quantization-bitsandbytes")` while it is imported, on any CPU with AVX512-bf16. With the
    `kernels` package installed (transformers 5.25 requires it) and the Hub reachable, that
    downloads a compiled library and loads it into the process; offline, kernels logs that it
    skips the publisher trust check. Neither package offers a switch for this import-time fetch
    (kernels documents KERNELS_CACHE and DISABLE_KERNEL_MAPPING; transformers' USE_HUB_KERNELS
    covers transformers' own kernels only). So the entry points make `import kernels` fail (a
    None entry in sys.modules: Python's documented way to block one import) and set
    USE_HUB_KERNELS=NO for transformers: bitsandbytes then runs its own CPU kernel, and medsft
    never asks for Hub kernels anywhere else. `MEDSFT_HUB_KERNELS=1` leaves both alone.

    Returns:
        Whether Hub kernels are off (False: asked for, or `kernels` was imported already).
    """
    if os.environ.get(HUB_KERNELS_ENV, "") not in ("", "0"):
        return False
    if sys.modules.get("kernels", None) is not None:
        return False  # imported before the tool started: too late to keep it out
    sys.modules["kernels"] = None  # type: ignore[assignment]
    os.environ.setdefault("USE_HUB_KERNELS", "NO")
    return True


def quiet_known_noise() -> None:
    """Everything a command-line tool should not print: see each entry's reason."""
    # bitsandbytes says "pip install kernels" when its Hub kernel is not loaded: with medsft that
    # is on purpose (keep_hub_kernels_off), and following the advice would make every import
    # fetch code from the Hub. Its own CPU kernel, which runs instead, is what medsft tests.
    # Other bitsandbytes warnings still print.
    _add_once("bitsandbytes.backends.cpu.ops", DropMessages(BNB_KERNEL_NOTE))
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


def prepare_process() -> None:
    """What every command-line tool sets up before its work starts (idempotent).

    - TOKENIZERS_PARALLELISM=false unless set: the tokenizers library otherwise warns, and turns
      its threads off itself, each time a DataLoader worker forks after the tokenizer ran.
    - No Hub kernels loaded at import (`keep_hub_kernels_off`).
    - The known library noise dropped (`quiet_known_noise`).
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    keep_hub_kernels_off()
    quiet_known_noise()
