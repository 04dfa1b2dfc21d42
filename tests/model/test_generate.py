"""Generation: the answer cut by token position, think blocks, left padding, stopping, DDP order."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from medsft.chat import END_OF_TURN
from medsft.model.generate import (
    Completion,
    GenerationSettings,
    cut_completion,
    encode_prompt,
    generate,
    generate_batch,
    length_buckets,
    prompt_seed,
)
from tests.helpers import prompts, tiny_model

ROOT = Path(__file__).resolve().parents[2]


# -- the answer cut ------------------------------------------------------------------------------
def test_answer_is_cut_by_token_position_not_decoded_prompt_length(qwen3_tokenizer):
    tok = qwen3_tokenizer
    messages = [
        {"role": "system", "content": "你是一名医生。"},
        {"role": "user", "content": "感冒了怎么办？"},
    ]
    prompt = encode_prompt(tok, messages)
    answer = "多喝水，注意休息；发烧超过三天请就医。"
    answer_ids = tok(answer, add_special_tokens=False)["input_ids"]
    pad, im_end = tok.pad_token_id, tok.convert_tokens_to_ids(END_OF_TURN)
    row = [pad, pad, *prompt, *answer_ids, im_end, pad, pad]
    width = 2 + len(prompt)

    # The premise of the old bug: decoding drops the special tokens, so the decoded prompt is
    # shorter than the prompt as rendered, and cutting the decoded output by its length is off.
    decoded_prompt = tok.decode(row[:width], skip_special_tokens=False)
    decoded_full = tok.decode(row, skip_special_tokens=True)
    assert len(tok.decode(row[:width], skip_special_tokens=True)) != len(decoded_prompt)
    assert decoded_full[len(decoded_prompt) :] != answer

    ids, stopped = cut_completion(row, width, [im_end])
    assert ids == answer_ids and stopped
    assert tok.decode(ids, skip_special_tokens=True) == answer


def test_cut_without_stop_keeps_everything_after_the_prompt():
    assert cut_completion([0, 1, 2, 7, 8, 9], 3, [5]) == ([7, 8, 9], False)
    assert cut_completion([0, 1, 2, 5, 8], 3, [5]) == ([], True)


class EchoModel(torch.nn.Module):
    """Stands in for a causal LM: 'generates' fixed ids (per prompt) and then the stop token."""

    def __init__(self, replies: dict[int, list[int]], stop: int, pad: int):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.replies, self.stop, self.pad = replies, stop, pad
        self.seen: list[torch.Tensor] = []

    def generate(self, input_ids, attention_mask, generation_config):
        self.seen.append(attention_mask.clone())
        rows = []
        for ids, mask in zip(input_ids, attention_mask, strict=True):
            first = int(ids[mask.bool()][0])  # keyed by the first real prompt token
            reply = [*self.replies[first], self.stop]
            rows.append(reply)
        width = max(map(len, rows))
        tail = torch.tensor([r + [self.pad] * (width - len(r)) for r in rows])
        return torch.cat([input_ids, tail], dim=1)


def test_generate_batch_cuts_each_left_padded_row(qwen3_tokenizer):
    tok = qwen3_tokenizer
    im_end = tok.convert_tokens_to_ids(END_OF_TURN)
    answers = ["多喝水。", "<think>\n先想一想。\n</think>\n\n少吃盐，少喝酒。"]
    short, long = [[11, 12], [13, 14, 15, 16, 17, 18]]
    replies = {
        p[0]: tok(a, add_special_tokens=False)["input_ids"]
        for p, a in zip([short, long], answers, strict=True)
    }
    model = EchoModel(replies, im_end, tok.pad_token_id)
    out = generate_batch(model, tok, [short, long], GenerationSettings(max_new_tokens=64))
    assert model.seen[0].tolist() == [[0, 0, 0, 0, 1, 1], [1] * 6]  # padded on the left
    assert [c.answer for c in out] == ["多喝水。", "少吃盐，少喝酒。"]
    assert out[1].think == "先想一想。" and out[0].think is None
    assert [c.finish_reason for c in out] == ["stop", "stop"]
    assert [c.new_tokens for c in out] == [len(replies[11]) + 1, len(replies[13]) + 1]
    assert [c.prompt_tokens for c in out] == [2, 6]


# -- think blocks -----------------------------------------------------------------------------
def test_enable_thinking_changes_the_prompt(qwen3_tokenizer):
    off, on = (prompts(qwen3_tokenizer, ["头痛"], enable_thinking=e)[0] for e in (False, True))
    think_close = qwen3_tokenizer.convert_tokens_to_ids("</think>")
    assert think_close in off and think_close not in on  # the template closes an empty block


# -- batching ---------------------------------------------------------------------------------
def test_length_buckets_cover_every_index_once_longest_first():
    lengths = [5, 1, 9, 3, 9, 2, 7]
    buckets = length_buckets(lengths, 3)
    assert sorted(i for b in buckets for i in b) == list(range(7))
    assert [len(b) for b in buckets] == [3, 3, 1]
    flat = [lengths[i] for b in buckets for i in b]
    assert flat == sorted(lengths, reverse=True)


def test_left_padded_batch_equals_one_by_one_greedy(qwen3_tokenizer):
    model = tiny_model()
    ids = prompts(qwen3_tokenizer)
    assert len({len(p) for p in ids}) == len(ids)  # really different lengths: real padding
    settings = GenerationSettings(max_new_tokens=16, batch_size=len(ids))
    batched = generate_batch(model, qwen3_tokenizer, ids, settings)
    single = [generate_batch(model, qwen3_tokenizer, [p], settings)[0] for p in ids]
    assert [c.text for c in batched] == [c.text for c in single]
    assert [c.new_tokens for c in batched] == [c.new_tokens for c in single]
    assert len({c.text for c in single}) == len(ids)  # the comparison is not vacuous


def test_generate_returns_input_order_through_the_predict_loop(qwen3_tokenizer):
    model = tiny_model()
    ids = prompts(qwen3_tokenizer)
    settings = GenerationSettings(max_new_tokens=8, batch_size=3)
    run = generate(model, qwen3_tokenizer, ids, settings, accelerator="cpu", progress=False)
    expected = [generate_batch(model, qwen3_tokenizer, [p], settings)[0].text for p in ids]
    assert [c.index for c in run.completions] == list(range(len(ids)))
    assert [c.text for c in run.completions] == expected
    assert run.new_tokens == sum(c.new_tokens for c in run.completions)
    assert run.tokens_per_second > 0 and run.world_size == 1


def test_sampling_is_seeded(qwen3_tokenizer):
    model = tiny_model()
    ids = prompts(qwen3_tokenizer)[:2]
    settings = GenerationSettings(max_new_tokens=8, do_sample=True, temperature=1.0, seed=3)
    first, second = (
        generate(model, qwen3_tokenizer, ids, settings, accelerator="cpu", progress=False)
        for _ in range(2)
    )
    assert [c.text for c in first.completions] == [c.text for c in second.completions]


def test_sampled_answer_depends_only_on_its_prompt_and_seed(qwen3_tokenizer):
    model = tiny_model()
    ids = prompts(qwen3_tokenizer)
    settings = GenerationSettings(max_new_tokens=8, do_sample=True, temperature=1.0, batch_size=4)

    def texts(prompt_ids, **overrides):
        run = generate(
            model,
            qwen3_tokenizer,
            prompt_ids,
            replace(settings, **overrides),
            accelerator="cpu",
            progress=False,
        )
        return [c.text for c in run.completions]

    together = texts(ids)
    # Other batch sizes, other neighbours, another order: each prompt keeps its answer.
    assert texts(ids[::-1], batch_size=1) == together[::-1]
    assert texts(ids[1:3], batch_size=2) == together[1:3]
    assert [generate_batch(model, qwen3_tokenizer, [p], settings)[0].text for p in ids] == together
    # Not vacuous: sampling really varies, with the seed and from prompt to prompt.
    assert texts(ids, seed=1) != together
    assert together != texts(ids, do_sample=False)
    # A caller's seeds (e.g. from cache keys) decide: equal seeds, equal draws.
    keyed = generate(
        model,
        qwen3_tokenizer,
        ids[:2],
        settings,
        accelerator="cpu",
        progress=False,
        seeds=[prompt_seed(0, "key-a"), prompt_seed(0, "key-a")],
    )
    alone = generate_batch(
        model, qwen3_tokenizer, ids[:1], settings, seeds=[prompt_seed(0, "key-a")]
    )
    assert keyed.completions[0].text == alone[0].text != together[0]
    assert prompt_seed(0, "key-a") != prompt_seed(1, "key-a") != prompt_seed(0, "key-b")


def test_generation_stops_at_end_of_turn(qwen3_tokenizer):
    tok = qwen3_tokenizer
    im_end = tok.convert_tokens_to_ids(END_OF_TURN)
    model = tiny_model(tie=False)
    prompt = prompts(tok)[:1]
    free = generate_batch(model, tok, prompt, GenerationSettings(max_new_tokens=8))[0]
    assert free.finish_reason == "length" and free.new_tokens == 8
    greedy = tok(free.text, add_special_tokens=False)["input_ids"]
    # Make <|im_end|> the likeliest token where the 4th greedy token was (or sooner): a scaled
    # copy of that token's output row. Other logits are untouched, so the prefix is the same.
    with torch.no_grad():
        head = model.get_output_embeddings().weight
        head[im_end] = 4 * head[greedy[3]]
    out = generate_batch(model, tok, prompt, GenerationSettings(max_new_tokens=8))[0]
    assert out.finish_reason == "stop"
    assert out.new_tokens <= 4
    assert out.text == tok.decode(greedy[: out.new_tokens - 1])
    assert END_OF_TURN not in out.text


def test_settings_are_validated():
    with pytest.raises(ValueError, match="max_new_tokens"):
        GenerationSettings(max_new_tokens=0).validate()
    with pytest.raises(ValueError, match="do_sample: false"):
        GenerationSettings(do_sample=True, temperature=0).validate()


def test_greedy_cache_key_ignores_batch_size_and_sampling_knobs():
    a = GenerationSettings(batch_size=2, temperature=0.1).fingerprint()
    b = GenerationSettings(batch_size=8, temperature=0.9).fingerprint()
    assert a == b
    assert GenerationSettings(max_new_tokens=9).fingerprint() != a
    sampled = GenerationSettings(do_sample=True, seed=1).fingerprint()
    assert sampled != GenerationSettings(do_sample=True, seed=2).fingerprint()
    # Sampling is seeded per prompt, so batch_size is not part of a sampled key either.
    assert sampled == GenerationSettings(do_sample=True, seed=1, batch_size=3).fingerprint()


# -- data parallel ----------------------------------------------------------------------------
DDP_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from dataclasses import asdict
    sys.path.insert(0, {tests!r})
    from tests.helpers import prompts, tiny_model
    from medsft.model.generate import GenerationSettings, generate
    from medsft.model.build import load_tokenizer

    tok = load_tokenizer("qwen3")
    ids = prompts(tok) * 2  # 8 prompts, 3 buckets of 3: ranks get unequal shares
    settings = GenerationSettings(max_new_tokens=6, batch_size=3)
    run = generate(tiny_model(), tok, ids, settings, accelerator="cpu", devices=2,
                   strategy="ddp", progress=False)
    if __import__("torch").distributed.get_rank() == 0:
        with open({out!r}, "w") as f:
            json.dump({{"world": run.world_size, "completions": [asdict(c) for c in run.completions]}}, f)
    """
)


@pytest.mark.slow
def test_ddp_generation_gathers_every_rank_in_input_order(tmp_path, qwen3_tokenizer):
    """Two ranks (a subprocess, as DDP needs) return what one process returns here."""
    out = tmp_path / "out2.json"
    script = tmp_path / "gen2.py"
    script.write_text(DDP_SCRIPT.format(tests=str(ROOT / "tests"), out=str(out)))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["world"] == 2
    double = [Completion(**c) for c in result["completions"]]
    assert [c.index for c in double] == list(range(8))
    one = generate(
        tiny_model(),
        qwen3_tokenizer,
        prompts(qwen3_tokenizer) * 2,
        GenerationSettings(max_new_tokens=6, batch_size=3),
        accelerator="cpu",
        devices=1,
        strategy="auto",
        progress=False,
    )
    single = one.completions
    assert double == single
