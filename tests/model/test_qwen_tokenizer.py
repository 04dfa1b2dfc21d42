"""The bundled Qwen3 tokenizer read by `tokenizers` (Rust) behaves as transformers' own loading."""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest

from medsft.model.build import bundled_tokenizer_dir, load_tokenizer

ROOT = Path(__file__).resolve().parents[2]

EDGE_CASES = [
    "  leading spaces  and   runs\n\n\n  x",
    "你好，世界！ 头痛  怎么办？\t\n",
    "以下是关于临床知识的单项选择题，请直接给出正确答案的选项。\n\n题目：…\nA. 1/16 \n答案是：B",
    "<|im_start|>user\n 你好<|im_end|>\n<|endoftext|>",
    "<think>\n\n</think>\n\n答：多喝水。",
    "é café naïve ﬁ ｆｕｌｌ　ｗｉｄｔｈ",  # NFC and full-width forms
    "😀😀 emoji, 12345 digits, 3.14159, HbA1c 6.5%, it's we'll",
    "",
]


def _sample_texts() -> list[str]:
    """Edge cases plus real Chinese medical questions and answers from the shipped samples."""
    rows = json.loads((ROOT / "data/sample/test_zh_med.json").read_text(encoding="utf-8"))
    return EDGE_CASES + [text for row in rows[:20] for text in row]


@pytest.fixture(scope="module")
def pair():
    """(transformers' own load, parsed in Python; medsft's load, read by `tokenizers`)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(bundled_tokenizer_dir()), load_tokenizer("qwen3")


def test_same_ids_special_tokens_template_and_decoding(pair, tmp_path):
    python, rust = pair
    assert type(rust).__name__ == "Qwen2Tokenizer" and isinstance(rust, type(python))
    texts = _sample_texts()
    for text in texts:
        a = python(text, return_offsets_mapping=True)
        b = rust(text, return_offsets_mapping=True)
        assert a["input_ids"] == b["input_ids"], text
        assert a["offset_mapping"] == b["offset_mapping"], text
        for skip in (False, True):
            assert python.decode(a["input_ids"], skip_special_tokens=skip) == rust.decode(
                b["input_ids"], skip_special_tokens=skip
            )
    padded = dict(padding=True, return_tensors="pt")
    assert python(texts[:6], **padded)["attention_mask"].equal(
        rust(texts[:6], **padded)["attention_mask"]
    )
    assert python(texts[:6], **padded)["input_ids"].equal(rust(texts[:6], **padded)["input_ids"])

    assert (python.pad_token_id, python.eos_token_id) == (rust.pad_token_id, rust.eos_token_id)
    assert (python.bos_token_id, python.unk_token_id) == (rust.bos_token_id, rust.unk_token_id)
    assert python.all_special_ids == rust.all_special_ids
    assert python.added_tokens_decoder == rust.added_tokens_decoder
    assert python.get_vocab() == rust.get_vocab() and len(python) == len(rust)
    assert python.convert_tokens_to_ids("<|im_end|>") == rust.convert_tokens_to_ids("<|im_end|>")
    assert python.chat_template == rust.chat_template
    messages = [
        {"role": "system", "content": "你是医生。"},
        {"role": "user", "content": texts[-1]},
        {"role": "assistant", "content": "<think>\n想一想\n</think>\n\n" + texts[-2]},
        {"role": "user", "content": "还有呢？"},
    ]
    for thinking in (False, True):
        options = dict(add_generation_prompt=True, enable_thinking=thinking)
        assert python.apply_chat_template(messages, tokenize=False, **options) == (
            rust.apply_chat_template(messages, tokenize=False, **options)
        )
        assert list(python.apply_chat_template(messages, **options)["input_ids"]) == list(
            rust.apply_chat_template(messages, **options)["input_ids"]
        )

    # Saved as before: the same tokenizer_config.json, and it loads back the same.
    python.save_pretrained(tmp_path / "python")
    rust.save_pretrained(tmp_path / "rust")
    config = "tokenizer_config.json"
    assert (tmp_path / "rust" / config).read_text() == (tmp_path / "python" / config).read_text()
    again = load_tokenizer(str(tmp_path / "rust"))
    assert type(again) is type(rust)
    assert again(texts[-1])["input_ids"] == python(texts[-1])["input_ids"]


def test_tokenizer_json_is_read_by_tokenizers_not_parsed_in_python(monkeypatch):
    from transformers import tokenization_utils_tokenizers as backend

    real, read = backend.TokenizerFast, []

    def from_file(path: str):
        read.append(Path(path).name)
        return real.from_file(path)

    # Only `from_file` is offered: the Python rebuild (from_str, TokenizerFast(BPE(...))) fails.
    monkeypatch.setattr(backend, "TokenizerFast", types.SimpleNamespace(from_file=from_file))
    tokenizer = load_tokenizer("qwen3")
    assert read == ["tokenizer.json"]
    assert tokenizer("答案是：A")["input_ids"][-1] == real.from_file(
        str(bundled_tokenizer_dir() / "tokenizer.json")
    ).token_to_id("A")
