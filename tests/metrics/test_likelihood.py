"""Perplexity of reference answers: token-weighted, assistant tokens only, batch-invariant."""

import math

import pytest
import torch

from medsft.chat import IGNORE_INDEX, qa_messages, render
from medsft.metrics import TokenPerplexity, perplexity, perplexity_from_nll
from medsft.model.build import build_model
from medsft.model.loss import masked_nll

QA = [
    ("头痛怎么办？", "注意休息，多喝水，持续不缓解请就医。"),
    ("孩子发烧38.5度需要吃药吗？", "可在医生指导下使用退烧药。"),
    ("高血压患者饮食要注意什么？", "少盐少油，多吃蔬菜水果，戒烟限酒，规律监测血压。"),
]


@pytest.fixture(scope="module")
def model():
    return build_model("random:tiny", finetune="full").eval()


def test_token_weighted_and_independent_of_batching(model, qwen3_tokenizer):
    conversations = [qa_messages(q, a) for q, a in QA]
    batched = perplexity(model, qwen3_tokenizer, conversations, batch_size=3, progress=False)
    single = perplexity(model, qwen3_tokenizer, conversations, batch_size=1, progress=False)
    assert batched.score == pytest.approx(single.score, rel=1e-5)
    counts = [
        sum(t != IGNORE_INDEX for t in render(c, qwen3_tokenizer)["labels"]) for c in conversations
    ]
    assert batched.per_sample_tokens == counts and batched.n_tokens == sum(counts)
    expected = math.exp(sum(batched.per_sample_nll) / sum(counts))
    assert batched.score == pytest.approx(expected, rel=1e-6)
    # Token-weighted, not the mean of per-example perplexities.
    assert batched.score != pytest.approx(sum(batched.per_sample) / len(QA), rel=1e-3)
    assert "tokens:assistant-only" in batched.signature


@pytest.mark.parametrize("finetune", ["full", "lora"])
def test_equals_full_logits_path_and_projects_only_supervised_positions(finetune, qwen3_tokenizer):
    torch.manual_seed(0)
    model = build_model("random:tiny", finetune=finetune).eval()
    conversations = [qa_messages(q, a) for q, a in QA]
    projected: list[int] = []
    head = model.get_output_embeddings()
    hook = head.register_forward_hook(lambda _m, args, _out: projected.append(args[0].shape[-2]))
    try:
        result = perplexity(model, qwen3_tokenizer, conversations, batch_size=2, progress=False)
    finally:
        hook.remove()
    # The full-logits computation, one example at a time: [1, T, vocab] logits.
    for i, conversation in enumerate(conversations):
        rendered = render(conversation, qwen3_tokenizer)
        ids = torch.tensor([rendered["input_ids"]])
        with torch.no_grad():
            nll, n = masked_nll(
                torch.tensor([rendered["labels"]]), logits=model(input_ids=ids).logits
            )
        assert result.per_sample_tokens[i] == int(n)
        assert result.per_sample_nll[i] == pytest.approx(nll.item(), rel=1e-5)
    assert sum(projected) == result.n_tokens  # vocabulary logits only where supervised


def test_examples_without_supervised_tokens_are_skipped_and_counted(model, qwen3_tokenizer):
    conversations = [qa_messages(q, a) for q, a in QA] + [qa_messages("很长的问题" * 50, "答")]
    result = perplexity(model, qwen3_tokenizer, conversations, max_length=64, progress=False)
    assert result.skipped == 1 and math.isnan(result.per_sample[-1])
    assert result.per_sample_tokens[-1] == 0


def test_metric_sums_across_updates_and_refuses_nothing():
    metric = TokenPerplexity()
    metric.update(torch.tensor(10.0), torch.tensor(4))
    metric.update(torch.tensor(2.0), torch.tensor(2))
    out = metric.compute()
    assert out["loss"].item() == pytest.approx(2.0) and out["ppl"].item() == pytest.approx(
        math.e**2
    )
    assert perplexity_from_nll(12.0, 6) == pytest.approx(math.e**2)
    with pytest.raises(ValueError, match="at least one supervised token"):
        perplexity_from_nll(0.0, 0)
    with pytest.raises(RuntimeError, match="no supervised token"):
        TokenPerplexity().compute()


def test_batches_examples_of_like_length(model, qwen3_tokenizer):
    # Long, short, long, short: batched in input order, every batch would pad a short one.
    qa = [(q * 4, a * 4) if i % 2 == 0 else (q, a) for i, (q, a) in enumerate(QA + QA[:1])]
    conversations = [qa_messages(q, a) for q, a in qa]
    widths: list[int] = []
    hook = model.model.register_forward_hook(
        lambda _m, _a, kwargs, _o: widths.append(kwargs["input_ids"].shape[1]), with_kwargs=True
    )
    try:
        perplexity(model, qwen3_tokenizer, conversations, batch_size=2, progress=False)
    finally:
        hook.remove()
    lengths = sorted(len(render(c, qwen3_tokenizer)["input_ids"]) for c in conversations)
    assert widths == [max(lengths[i : i + 2]) for i in range(0, len(lengths), 2)]
