"""medsft.cli.console: each silenced library message is dropped exactly, and its neighbours print."""

import logging
import subprocess
import sys

import pytest

from medsft.cli.console import BNB_KERNEL_NOTE, DropMessages, quiet_known_noise
from tests.helpers import ROOT


def logged(logger_name: str, *messages: str) -> list[str]:
    """What a handler on `logger_name` receives of these warnings."""
    got: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            got.append(record.getMessage())

    logger = logging.getLogger(logger_name)
    handler = Keep()
    logger.addHandler(handler)
    try:
        for message in messages:
            logger.warning(message)
    finally:
        logger.removeHandler(handler)
    return got


def test_importing_medsft_drops_bitsandbytes_kernel_note_only():
    note = f"{BNB_KERNEL_NOTE}: No module named 'kernels'. Please make sure you already `pip..."
    other = "some other bitsandbytes warning"
    assert logged("bitsandbytes.backends.cpu.ops", note, other) == [other]


def test_importing_bitsandbytes_after_medsft_prints_nothing():
    """The note is logged while bitsandbytes is imported (on CPUs with AVX512-bf16)."""
    pytest.importorskip("bitsandbytes")
    code = "import medsft, bitsandbytes"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and "kernels" not in result.stderr, result.stderr


def test_lightning_banners_print_only_where_they_inform():
    quiet_known_noise()
    quiet_known_noise()  # idempotent: one filter per logger
    name = "lightning.pytorch.utilities.rank_zero"
    informative = ["GPU available: True (cuda), used: True", "Seed set to 0"]
    silent = ["GPU available: False, used: False", "TPU available: False, using: 0 TPU cores"]
    assert logged(name, *silent, *informative, "💡 Tip: For seamless cloud logging") == informative
    assert sum(isinstance(f, DropMessages) for f in logging.getLogger(name).filters) == 1
