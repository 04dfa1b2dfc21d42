"""Option-letter log-probabilities with shared prefixes and batches, checked against one plain
forward pass per whole prompt (what CMMLU's loop does)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medsft.evaluation.config import McqSpec
from medsft.evaluation.mcq import load_mcq_set
from medsft.evaluation.mcq_loglik import Encoded, batches, encode, letter_logprobs

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = McqSpec(
    source=str(ROOT / "data/sample/mcq_sample.csv"),
    dev_source=str(ROOT / "data/sample/mcq_dev.csv"),
    shots=1,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random tiny Qwen3 and the real tokenizer, saved and loaded back the way users load."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from medsft.model.build import load_tokenizer, random_qwen3

    path = tmp_path_factory.mktemp("tiny")
    random_qwen3("tiny", seed=5).save_pretrained(path)
    load_tokenizer("qwen3").save_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(path)


def one_forward_per_prompt(
    model, tokenizer, prompts: list[str], letters: str, *, last_only: bool = False
) -> list[list[float]]:
    """The plain loop: each whole prompt encoded and run on its own, the last position's
    log-softmax read at each letter's token (`last_only`: project only that position)."""
    letter_ids = [tokenizer.convert_tokens_to_ids(c) for c in letters]
    out = []
    with torch.inference_mode():
        for prompt in prompts:
            ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])
            extra = {"logits_to_keep": 1} if last_only else {}
            logits = model(input_ids=ids, **extra).logits[0, -1]
            out.append(torch.log_softmax(logits.float(), -1)[letter_ids].tolist())
    return out


def argmaxes(rows: list[list[float]]) -> list[int]:
    """The likeliest of A-D per question (every question offers those four; a random model's
    `E` would often win over all of them, which would compare little)."""
    return [max(range(4), key=r.__getitem__) for r in rows]


def max_difference(a: list[list[float]], b: list[list[float]]) -> float:
    assert [len(r) for r in a] == [len(r) for r in b]
    return max(abs(x - y) for r, q in zip(a, b, strict=True) for x, y in zip(r, q, strict=True))


def test_equal_to_one_forward_per_prompt_projecting_once_per_question(tiny):
    model, tokenizer = tiny
    mcq = load_mcq_set(SAMPLE)
    assert len(set(mcq.prefixes)) == 5  # 4 subjects, one of them with a multi-answer question
    plain = one_forward_per_prompt(model, tokenizer, mcq.prompts, "ABCDE")

    projected: list[int] = []
    run: list[int] = []
    head = model.get_output_embeddings()
    hooks = [
        head.register_forward_hook(lambda _m, args, _o: projected.append(args[0].shape[0])),
        model.model.register_forward_hook(
            lambda _m, _a, kwargs, _o: run.append(kwargs["input_ids"].numel()), with_kwargs=True
        ),
    ]
    try:
        for batch_size in (1, 5):
            projected.clear(), run.clear()
            got = letter_logprobs(
                model, tokenizer, mcq.prompts, mcq.prefixes, "ABCDE", batch_size=batch_size
            )
            assert argmaxes(got) == argmaxes(plain)
            diff = max_difference(got, plain)
            assert diff < 1e-4, diff
            # One [vocab] row per question, never one per prompt token.
            assert sum(projected) == len(mcq.prompts)
            if batch_size == 1:  # no padding: each prefix's tokens once, then the questions'
                n = {p: len(tokenizer(p)["input_ids"]) for p in mcq.prompts + mcq.prefixes}
                questions = sum(n[p] - n[f] for p, f in zip(mcq.prompts, mcq.prefixes, strict=True))
                assert sum(run) == sum(n[f] for f in set(mcq.prefixes)) + questions
    finally:
        for hook in hooks:
            hook.remove()


def test_a_prefix_merging_with_its_question_runs_whole(tiny):
    _, tokenizer = tiny
    # `内科` is one token: a prefix cut between its characters is no prefix of the prompt's ids.
    prompts = ["以下是关于内科的题目：一", "以下是关于内科的题目：二二二", "以下是关于内科的题：三"]
    prefixes = ["以下是关于内科的题目：", "以下是关于内科的题目：", "以下是关于内"]
    prefix_ids, encoded = encode(tokenizer, prompts, prefixes, "AB")
    assert [e.prefix for e in encoded] == [0, 0, -1]
    assert encoded[2].ids == tokenizer(prompts[2])["input_ids"]  # the whole prompt
    for e in encoded[:2]:
        assert prefix_ids[0] + e.ids == tokenizer(prompts[e.index])["input_ids"]

    model = tiny[0]
    got = letter_logprobs(model, tokenizer, prompts, prefixes, "AB", batch_size=2)
    plain = one_forward_per_prompt(model, tokenizer, prompts, "AB")
    assert max_difference(got, plain) < 1e-4
    assert letter_logprobs(model, tokenizer, [], [], "AB") == []  # a rank's empty share


def test_batches_by_prefix_and_length_with_little_padding():
    lengths = {0: 10, 1: 7, 2: 9, 3: 4, 4: 8, 5: 5}
    prefix = {5: -1}  # one prompt runs whole; the others share prefix 0
    encoded = [Encoded(i, prefix.get(i, 0), [7] * n, [1, 2]) for i, n in lengths.items()]
    got = [[e.index for e in b] for b in batches(encoded, 3)]
    # Longest first, at most 3, and 4 tokens are not padded to 7 (more than a quarter).
    assert got == [[0, 2, 4], [1], [3], [5]]
    assert [[e.index for e in b] for b in batches(encoded, 1)] == [[0], [2], [4], [1], [3], [5]]


def test_a_letter_merging_with_the_prompt_is_refused(tiny):
    _, tokenizer = tiny
    with pytest.raises(ValueError, match="merges option letter 'A'"):
        encode(tokenizer, ["The answer is "], [""], "AB")  # ` ` + `A` is one token, ` A`


@pytest.mark.slow
def test_every_shipped_cmmlu_question_as_the_one_prompt_loop_scores_it(tiny, shared_data):
    model, tokenizer = tiny
    data = shared_data / "cmmlu_medical"
    spec = McqSpec(source=str(data / "test"), dev_source=str(data / "dev"), shots=5)
    mcq = load_mcq_set(spec)
    got = letter_logprobs(model, tokenizer, mcq.prompts, mcq.prefixes, "ABCD", batch_size=16)
    plain = one_forward_per_prompt(model, tokenizer, mcq.prompts, "ABCD", last_only=True)
    assert len(got) == 1034 and argmaxes(got) == argmaxes(plain)
    assert max_difference(got, plain) < 1e-4
    # Not vacuous: every prompt ran after its subject's cached 5-shot prefix.
    assert all(e.prefix >= 0 for e in encode(tokenizer, mcq.prompts, mcq.prefixes, "ABCD")[1])
