"""Tokenizers of the text metrics: every metric counts the tokens `tokenize` gives.

Tokenizers (`tokenizer=`):

- ``"zh"``: sacrebleu's Chinese tokenizer (each CJK character is a token, the rest follows 13a).
- ``"char"``: each CJK/kana/hangul character is a token; runs of other letters and digits form one
  word; every other non-space character (punctuation) is its own token.
- ``"jieba"``: jieba word segmentation (default dictionary, HMM on). A user dictionary loaded into
  jieba changes the tokens; the signature cannot see that.
- ``"13a"``: sacrebleu's default (mteval-v13a) tokenizer, for English.
- ``"auto"`` (default): ``"zh"`` if any text of the call contains a Han character, else ``"13a"``.
  It is decided once per call, so a corpus is tokenized one way. It never picks a tokenizer that
  drops CJK characters, unlike rouge-score's default tokenizer (``[a-z0-9]`` only), which scores
  identical Chinese strings 0.

``zh`` and ``13a`` are re-implemented here for speed and give exactly sacrebleu's tokens (tested).
``zh`` uses its own copy of sacrebleu's table of Chinese code points (`ZH_RANGES`, as sacrebleu
really applies it), so no private sacrebleu name is imported.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata

from sacrebleu import __version__ as _SACREBLEU_VERSION

from medsft import __version__ as _MEDSFT_VERSION

TOKENIZERS = ("auto", "zh", "char", "jieba", "13a")
"""Accepted values of every `tokenizer=` argument."""

ZH_RANGES: tuple[tuple[int, int], ...] = (
    (0x3400, 0x4DB5),  # CJK Unified Ideographs Extension A
    (0x4E00, 0x9FA5),  # CJK Unified Ideographs
    (0x9FA6, 0x9FBB),
    (0xF900, 0xFA2D),  # CJK Compatibility Ideographs
    (0xFA30, 0xFA6A),
    (0xFA70, 0xFAD9),
    # Meant as the Extension B plane (U+20000-U+2A6D6); sacrebleu writes '\u20000', which
    # Python reads as U+2000 followed by '0', and compares as strings: the range it really
    # applies is U+2001-U+2A6D (punctuation, arrows, math symbols, ...). Kept, to give its tokens.
    (0x2001, 0x2A6D),
    (0x2F81, 0x2FA1),  # likewise meant as U+2F800-U+2FA1D (Compatibility Supplement)
    (0xFF00, 0xFFEF),  # Halfwidth and Fullwidth Forms
    (0x2E80, 0x2EFF),  # CJK Radicals Supplement
    (0x3000, 0x303F),  # CJK Symbols and Punctuation
    (0x31C0, 0x31EF),  # CJK Strokes
    (0x2F00, 0x2FDF),  # Kangxi Radicals
    (0x2FF0, 0x2FFF),  # Ideographic Description Characters
    (0x3100, 0x312F),  # Bopomofo
    (0x31A0, 0x31BF),  # Bopomofo Extended
    (0xFE10, 0xFE1F),  # Vertical Forms
    (0xFE30, 0xFE4F),  # CJK Compatibility Forms
    (0x2600, 0x26FF),  # Miscellaneous Symbols
    (0x2700, 0x27BF),  # Dingbats
    (0x3200, 0x32FF),  # Enclosed CJK Letters and Months
    (0x3300, 0x33FF),  # CJK Compatibility
)
"""Code points sacrebleu's `zh` tokenizer pads as Chinese, as it applies its own table (tested
equal to sacrebleu's character by character, when sacrebleu is installed): inclusive ranges."""

# The mteval-v13a regexes that sacrebleu applies after padding CJK characters. Rule A is the same
# as sacrebleu's except that it no longer pads spaces with spaces: that only changes the amount of
# whitespace (removed by the final split) and was 80% of sacrebleu's tokenization time.
_RULE_PUNCT = re.compile(r"([\{-\~\[-\`!-\&\(-\+\:-\@\/])")
_RULE_DOT_AFTER = re.compile(r"([^0-9])([\.,])")
_RULE_DOT_BEFORE = re.compile(r"([\.,])([^0-9])")
_RULE_DASH = re.compile(r"([0-9])(-)")


def _mteval_rules(line: str) -> list[str]:
    line = _RULE_PUNCT.sub(r" \1 ", line)
    if "." in line or "," in line:
        line = _RULE_DOT_AFTER.sub(r"\1 \2 ", line)
        line = _RULE_DOT_BEFORE.sub(r" \1 \2", line)
    if "-" in line:
        line = _RULE_DASH.sub(r"\1 \2 ", line)
    return line.split()


@lru_cache(maxsize=1)
def _zh_padding_table() -> dict[int, str]:
    return {cp: f" {chr(cp)} " for lo, hi in ZH_RANGES for cp in range(lo, hi + 1)}


def _tokenize_zh(text: str) -> list[str]:
    return _mteval_rules(text.strip().translate(_zh_padding_table()))


def _tokenize_13a(text: str) -> list[str]:
    text = text.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in text:
        text = text.replace("&quot;", '"').replace("&amp;", "&")
        text = text.replace("&lt;", "<").replace("&gt;", ">")
    return _mteval_rules(f" {text} ")


_CJK = (
    r"\u3040-\u30ff\u31f0-\u31ff"  # kana
    r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"  # Han
    r"\uac00-\ud7af"  # hangul syllables
)
_CHAR_RE = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+|\S")
_HAN_RE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")


def _tokenize_char(text: str) -> list[str]:
    return _CHAR_RE.findall(text)


def _tokenize_jieba(text: str) -> list[str]:
    import jieba  # lazy: loading its dictionary takes about a second

    # jieba returns whitespace as tokens; splitting also keeps tokens free of spaces, which
    # sacrebleu's whitespace-joined input format needs.
    return [piece for token in jieba.lcut(text) for piece in token.split()]


_TOKENIZE: dict[str, Callable[[str], list[str]]] = {
    "zh": _tokenize_zh,
    "char": _tokenize_char,
    "jieba": _tokenize_jieba,
    "13a": _tokenize_13a,
}


def tokenizer_signature(kind: str) -> str:
    """How tokens were made, for metric signatures: `zh(sacrebleu-2.6.0)`, `jieba-0.42.1(hmm)`."""
    if kind in ("zh", "13a"):
        return f"{kind}(sacrebleu-{_SACREBLEU_VERSION})"
    if kind == "jieba":
        return f"jieba-{package_version('jieba')}(hmm)"
    return f"char(medsft-{_MEDSFT_VERSION})"


def package_version(package: str) -> str:
    """An installed package's version, or `absent`."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def check_tokenizer(tokenizer: str) -> None:
    """Raise ValueError naming the choices unless `tokenizer` is one of `TOKENIZERS`."""
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer {tokenizer!r}; choose one of {', '.join(TOKENIZERS)}")


def resolve_tokenizer(tokenizer: str, *corpora: Sequence[str]) -> str:
    """The concrete tokenizer `auto` stands for on these texts: `zh` if any has a Han character.

    Decide it once per comparison (from the references) so every system is tokenized alike.
    """
    check_tokenizer(tokenizer)
    if tokenizer != "auto":
        return tokenizer
    has_han = any(_HAN_RE.search(text) for corpus in corpora for text in corpus)
    return "zh" if has_han else "13a"


def tokenize(text: str, tokenizer: str = "auto", *, lowercase: bool = False) -> list[str]:
    """Split one text into the tokens every metric here counts.

    Args:
        text: the text. Trailing whitespace is ignored, as in sacrebleu.
        tokenizer: one of `TOKENIZERS` (see the module docstring). ``"auto"`` picks ``"zh"`` if the
            text has a Han character, else ``"13a"``; the metric functions decide this once for
            the whole corpus instead.
        lowercase: lowercase before tokenizing (sacrebleu's ``lowercase=True``).
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    kind = resolve_tokenizer(tokenizer, [text])
    if lowercase:
        text = text.lower()
    return _TOKENIZE[kind](text.rstrip())


@lru_cache(maxsize=8)
def tokenize_corpus(kind: str, lowercase: bool, texts: tuple[str, ...]) -> tuple[list[str], ...]:
    """Every text's tokens with the concrete tokenizer `kind` (not `auto`), cached per corpus."""
    # Cached per corpus so that bleu(), rouge() and vocab_f1() on the same lists tokenize once.
    # Interning stores each distinct token once: a CJK character is a 76-byte object, so 5,000
    # pairs of 300 characters would otherwise hold ~250 MB of duplicate one-character strings.
    fn = _TOKENIZE[kind]
    if lowercase:
        return tuple(list(map(sys.intern, fn(text.lower().rstrip()))) for text in texts)
    return tuple(list(map(sys.intern, fn(text.rstrip()))) for text in texts)


# --------------------------------------------------------------------------------------------
# Checked and tokenized inputs of the metrics
# --------------------------------------------------------------------------------------------


def as_texts(name: str, texts: Sequence[str]) -> tuple[str, ...]:
    """`texts` as a tuple of strings, or a TypeError naming `name` and the bad item."""
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Iterable):
        raise TypeError(
            f"{name} must be a list of strings, got {type(texts).__name__}; "
            f"wrap a single text as [text]"
        )
    texts = tuple(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(
                f"{name}[{i}] is {type(text).__name__}, not str; convert it "
                f"(e.g. None -> '' for a missing prediction) or drop the pair"
            )
    return texts


def as_pairs(
    predictions: Sequence[str], references: Sequence[str], name: str = "predictions"
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Predictions and references checked as one-to-one pairs of strings (at least one)."""
    preds = as_texts(name, predictions)
    refs = as_texts("references", references)
    if len(preds) != len(refs):
        raise ValueError(
            f"{name} has {len(preds)} items but references has {len(refs)}; "
            f"they must be paired one-to-one"
        )
    if not preds:
        raise ValueError("no examples: pass at least one prediction/reference pair")
    return preds, refs


@dataclass(frozen=True)
class Tokenized:
    """Prediction/reference pairs with their tokens, as every reference-based metric counts."""

    pred_texts: tuple[str, ...]
    ref_texts: tuple[str, ...]
    preds: tuple[list[str], ...]
    refs: tuple[list[str], ...]
    kind: str
    lowercase: bool

    @property
    def n(self) -> int:
        return len(self.preds)

    def signature(self) -> str:
        """The tokenizer part of a metric signature, e.g. `tok:zh(sacrebleu-2.6.0)|case:mixed`."""
        case = "lc" if self.lowercase else "mixed"
        return f"tok:{tokenizer_signature(self.kind)}|case:{case}"


def tokenize_pairs(
    preds: tuple[str, ...], refs: tuple[str, ...], kind: str, lowercase: bool
) -> Tokenized:
    """The pairs tokenized with `kind`; a reference without tokens is a ValueError."""
    ref_tokens = tokenize_corpus(kind, lowercase, refs)
    for i, tokens in enumerate(ref_tokens):
        if not tokens:
            raise ValueError(
                f"references[{i}] has no tokens ({refs[i]!r} with tokenizer {kind!r}); "
                f"a score against it is undefined, so drop that pair or fix the reference"
            )
    pred_tokens = tokenize_corpus(kind, lowercase, preds)
    return Tokenized(preds, refs, pred_tokens, ref_tokens, kind, lowercase)
