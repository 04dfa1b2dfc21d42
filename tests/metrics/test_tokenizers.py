"""medsft.metrics.tokenizers: our table of Chinese code points is the one sacrebleu applies."""

from __future__ import annotations

import pytest

from medsft.metrics.tokenizers import ZH_RANGES, tokenize


def _ours(char: str) -> bool:
    return any(lo <= ord(char) <= hi for lo, hi in ZH_RANGES)


def test_zh_ranges_equal_sacrebleus_character_by_character():
    zh = pytest.importorskip("sacrebleu.tokenizers.tokenizer_zh")
    theirs = zh.TokenizerZh._is_chinese_char
    # Its bounds are compared as strings, some of them two characters long: only a character by
    # character comparison shows what it really applies. Every range lies below U+10000.
    assert max(hi for _, hi in ZH_RANGES) < 0x10000
    differ = [cp for cp in range(0x10000) if _ours(chr(cp)) != theirs(chr(cp))]
    assert differ == []
    for astral in ("\U00020000", "\U0002a6d6", "\U0002f800"):  # meant, not applied, by sacrebleu
        assert not theirs(astral) and not _ours(astral)


def test_a_changed_table_would_change_the_tokens():
    # Through sacrebleu's '\u20000'-'\u2a6d6' bounds, U+2001-U+2A6D are padded: an arrow, and
    # U+2A6D, the last one; U+2A6E is not.
    assert tokenize("a→b", "zh") == ["a", "→", "b"]
    assert tokenize("a\u2a6db", "zh") == ["a", "\u2a6d", "b"]
    assert tokenize("a\u2a6eb", "zh") == ["a\u2a6eb"]
