"""Qwen2-family tokenizers loaded from their tokenizer.json by `tokenizers` (Rust).

transformers 5 builds `Qwen2Tokenizer` by parsing tokenizer.json with Python's json module and
rebuilding the byte-level BPE from the vocabulary and merges it read (0.5 s an idle load on this
project's CPU, 1.2-4 s on a busy one); every entry point, every test process and every run's
tokenizer pays it. It hands the file to `tokenizers.Tokenizer.from_file` instead when the class
has no `__init__` of its own, which is what `Qwen2Tokenizer` below is: the same class, loaded the
way transformers 4 loaded Qwen2TokenizerFast. Same name, so a saved tokenizer says
`Qwen2Tokenizer` as before; a module-level class, so it pickles. Equal behaviour (ids, special
tokens, chat template, decoding) is tested in tests/model/test_qwen_tokenizer.py and the load
time measured by benchmarks/tokenizer_load.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import transformers

QWEN2_CLASSES = ("Qwen2Tokenizer", "Qwen2TokenizerFast")
"""tokenizer_config.json `tokenizer_class` values this loads (Qwen2, Qwen2.5, Qwen3)."""


def _rebuilds_in_python() -> bool:
    """Whether this transformers' Qwen2Tokenizer rebuilds its backend in Python (5.x); 4.x's
    Qwen2Tokenizer is the slow pure-Python one, and AutoTokenizer already picks the fast one."""
    try:
        from transformers.tokenization_utils_tokenizers import TokenizersBackend
    except ImportError:
        return False
    return issubclass(transformers.Qwen2Tokenizer, TokenizersBackend)


if _rebuilds_in_python():

    class Qwen2Tokenizer(transformers.Qwen2Tokenizer):
        """transformers' Qwen2Tokenizer, its backend read from tokenizer.json by `tokenizers`.

        No `__init__` here on purpose: that is transformers' condition for passing the file to
        `Tokenizer.from_file` rather than rebuilding the BPE from a Python parse of it.
        """

else:  # pragma: no cover - transformers 4.x
    Qwen2Tokenizer = None  # type: ignore[assignment,misc]


def rust_loadable(directory: str | Path) -> bool:
    """Whether the tokenizer in `directory` is a Qwen2-family one with a tokenizer.json that this
    module loads (and this transformers would otherwise parse in Python)."""
    directory = Path(directory)
    config = directory / "tokenizer_config.json"
    if Qwen2Tokenizer is None or not (directory / "tokenizer.json").is_file():
        return False
    try:
        declared = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False  # AutoTokenizer reads it again and reports what is wrong
    # A repository's own tokenizer code (auto_map) is AutoTokenizer's business.
    return declared.get("tokenizer_class") in QWEN2_CLASSES and "auto_map" not in declared
