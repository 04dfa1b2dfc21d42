"""medsft.cli.console: a tool's start. Importing medsft changes nothing in the process; a tool
keeps bitsandbytes from loading Hub kernels, and each silenced library message is dropped
exactly while its neighbours print."""

import importlib.metadata
import logging
import os
import subprocess
import sys

import pytest

from medsft.cli.console import BNB_KERNEL_NOTE, DropMessages, quiet_known_noise
from tests.helpers import ROOT

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


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


def test_a_tools_start_drops_the_bitsandbytes_kernel_note_only():
    quiet_known_noise()
    note = f"{BNB_KERNEL_NOTE}: No module named 'kernels'. Please make sure you already `pip..."
    other = "some other bitsandbytes warning"
    assert logged("bitsandbytes.backends.cpu.ops", note, other) == [other]


def test_importing_medsft_changes_nothing_until_a_tool_starts_which_loads_no_hub_kernel():
    """No logging filter, environment variable, blocked import or Lightning registration comes
    with an import; `prepare_process` (what every entry point runs first) makes them. Then
    bitsandbytes, which asks the `kernels` package for a Hub kernel while it is imported (on
    CPUs with AVX512-bf16; offline, kernels says it skips the publisher trust check), gets none
    and prints nothing."""
    pytest.importorskip("bitsandbytes")
    code = """
import logging, os, sys
import lightning.pytorch, torch, transformers  # libraries set variables of their own
before = dict(os.environ)
import medsft, medsft.metrics, medsft.training.module, medsft.cli.train, medsft.cli.evaluate
from lightning.pytorch.strategies import StrategyRegistry
from medsft.cli.console import DropMessages, prepare_process

def state():
    loggers = [logging.getLogger(n) for n in logging.root.manager.loggerDict]
    return (
        sum(isinstance(f, DropMessages) for lg in loggers for f in lg.filters),
        sorted(k for k in os.environ if os.environ.get(k) != before.get(k)),
        "kernels" in sys.modules and sys.modules["kernels"] is None,
        "fsdp2" in StrategyRegistry,
    )

print(state())
prepare_process()
medsft.training.fsdp.register_strategy()
print(state())
import bitsandbytes
print(sys.modules["kernels"])
"""
    env = {k: v for k, v in ENV.items() if k not in ("TOKENIZERS_PARALLELISM", "USE_HUB_KERNELS")}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    imported, started, kernels = result.stdout.strip().splitlines()
    assert imported == "(0, [], False, False)"
    assert started == "(2, ['TOKENIZERS_PARALLELISM', 'USE_HUB_KERNELS'], True, True)"
    assert kernels == "None" and "kernels" not in result.stderr, result.stderr


def test_asking_for_hub_kernels_leaves_them_on():
    try:
        importlib.metadata.version("kernels")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the kernels package is not installed")
    code = "import sys; from medsft.cli.console import prepare_process; prepare_process(); import kernels"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**ENV, "MEDSFT_HUB_KERNELS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr


def test_lightning_banners_print_only_where_they_inform():
    quiet_known_noise()
    quiet_known_noise()  # idempotent: one filter per logger
    name = "lightning.pytorch.utilities.rank_zero"
    informative = ["GPU available: True (cuda), used: True", "Seed set to 0"]
    silent = ["GPU available: False, used: False", "TPU available: False, using: 0 TPU cores"]
    assert logged(name, *silent, *informative, "💡 Tip: For seamless cloud logging") == informative
    assert sum(isinstance(f, DropMessages) for f in logging.getLogger(name).filters) == 1
