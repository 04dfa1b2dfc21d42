"""The attention kernel follows the batch, and every kernel gives packed rows the unpacked loss."""

import logging
import random

import pytest
import torch

from medsft.chat import IGNORE_INDEX
from medsft.data.batching import _packed, collate
from medsft.errors import ConfigError
from medsft.model.attention import (
    CPU_PACKED_KERNEL,
    AttentionChoice,
    _segments,
    available_kernels,
    check_attn_implementation,
    has_flash_attn,
)
from medsft.model.build import build_model


def _examples(lengths):
    rng = random.Random(0)
    out = []
    for i, n in enumerate(lengths):
        ids = [rng.randrange(10, 1000) for _ in range(n)]
        out.append(
            {"input_ids": ids, "labels": [IGNORE_INDEX] * (n // 3) + ids[n // 3 :], "index": i}
        )
    return out


@pytest.fixture(scope="module")
def batches():
    examples = _examples([37, 12, 50, 23, 9])
    plain = collate(examples, pad_token_id=0)
    rows = collate(list(_packed(iter(examples), 64, random.Random(0))), 0, pad_to_multiple_of=8)
    one = collate(list(_packed(iter(examples), 256, random.Random(0))), 0, pad_to_multiple_of=8)
    assert rows["input_ids"].shape[0] > 1 and one["input_ids"].shape[0] == 1
    return plain, rows, one


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("random:tiny", finetune="full").eval()


@pytest.fixture
def module(model):
    """SFTModule(attn_implementation=...) around the shared tiny model."""
    from medsft.training.module import SFTModule

    def make(attn):
        module = SFTModule(finetune="full", attn_implementation=attn)
        module.model = model
        return module

    return make


@pytest.mark.parametrize("kernel", available_kernels("cpu"))
def test_each_kernel_gives_packed_rows_the_unpacked_loss(kernel, batches, module):
    plain, rows, one = batches
    module = module(kernel)
    with torch.no_grad():
        nll, n = module.step(plain)
        results = [module.step(packed) for packed in (rows, one)]
    for packed_nll, packed_n in results:
        assert module.model.config._attn_implementation == kernel  # explicit: kept as asked
        assert int(packed_n) == int(n)
        assert packed_nll.item() == pytest.approx(nll.item(), rel=1e-5)


def test_varlen_gradients_equal_the_unpacked_ones(batches, module):
    plain, _, one = batches
    module = module("sdpa_varlen")
    params = [p for p in module.parameters() if p.requires_grad]
    grads = [torch.autograd.grad(module.step(b)[0], params) for b in (plain, one)]
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_auto_follows_the_batch_and_logs_each_choice_once(batches, caplog, module):
    plain, rows, one = batches
    module = module("auto")
    seen = []
    with caplog.at_level(logging.INFO, logger="medsft.model.attention"):
        for batch in (plain, rows, one, plain, rows):
            with torch.no_grad():
                module.step(batch)
            seen.append(module.model.config._attn_implementation)
    assert seen == ["sdpa", CPU_PACKED_KERNEL, CPU_PACKED_KERNEL, "sdpa", CPU_PACKED_KERNEL]
    lines = [r.getMessage() for r in caplog.records if r.name == "medsft.model.attention"]
    assert lines == [
        "attention: padded rows use sdpa (causal)",
        f"attention: packed rows use {CPU_PACKED_KERNEL} (measured fastest on the CPU)",
    ]


def test_packed_rows_on_a_gpu_get_a_varlen_kernel():
    choice = AttentionChoice("auto")

    class Config:
        _attn_implementation = "sdpa"

    class Model:
        config = Config()

        def set_attn_implementation(self, name):
            self.config._attn_implementation = name

    kernel = choice.follow(Model(), packed=True, device=torch.device("cuda"))
    assert kernel == ("flash_attention_2" if has_flash_attn() else "flex_attention")
    assert choice.follow(Model(), packed=False, device=torch.device("cuda")) == "sdpa"


def test_unknown_and_missing_kernels_are_rejected_with_a_fix():
    with pytest.raises(ConfigError, match="auto or one of"):
        check_attn_implementation("flash")
    if not has_flash_attn():
        with pytest.raises(ConfigError, match="pip install flash-attn"):
            check_attn_implementation("flash_attention_2")


def test_segments_split_at_restarts_and_keep_padding_in_one_piece():
    ids = torch.tensor([[0, 1, 2, 0, 1, 0, 0, 0], [0, 1, 2, 3, 4, 5, 0, 1]])
    assert _segments(ids) == [[(0, 3), (3, 5), (5, 8)], [(0, 6), (6, 8)]]
