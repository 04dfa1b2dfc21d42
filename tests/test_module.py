"""SFTModule's optimizer: the learning-rate schedule and the weight-decay groups."""

import math
from types import SimpleNamespace

import pytest
import torch

from medsft.module import OptimizerSettings, SFTModule


def optimizer_of(total: int, finetune: str = "full", **settings):
    """configure_optimizers on a built tiny model, with the Trainer figures it reads."""
    module = SFTModule("random:tiny", finetune=finetune, optimizer=OptimizerSettings(**settings))
    module.configure_model()
    module._trainer = SimpleNamespace(
        max_steps=total, global_step=0, precision_plugin=None, world_size=1
    )
    config = module.configure_optimizers()
    return module, config["optimizer"], config["lr_scheduler"]["scheduler"]


def lrs(total: int, **settings) -> list[float]:
    """The learning rate of each optimizer step, as Lightning steps the scheduler."""
    module, optimizer, scheduler = optimizer_of(total, **settings)
    out = []
    for step in range(total):
        out.append(optimizer.param_groups[0]["lr"])
        module._trainer.global_step = step + 1  # Lightning counts the step, then calls step()
        scheduler.step()
    return out


def test_warmup_then_cosine_to_the_minimum_at_the_last_step():
    lr, warmup, total, ratio = 1e-3, 4, 14, 0.1
    got = lrs(total, lr=lr, warmup_steps=warmup, min_lr_ratio=ratio)
    assert got[:warmup] == pytest.approx([lr * (s + 1) / warmup for s in range(warmup)])
    assert got[warmup] == pytest.approx(lr)  # the peak, then decay
    assert all(a > b for a, b in zip(got[warmup:], got[warmup + 1 :], strict=False))
    assert got[-1] == pytest.approx(lr * ratio)  # as documented: the minimum at the last step
    mid = warmup + (total - 1 - warmup) / 2  # half way: halfway between peak and minimum
    if mid == int(mid):
        assert got[int(mid)] == pytest.approx(lr * (ratio + (1 - ratio) / 2))
    expected = [
        lr * (ratio + (1 - ratio) * 0.5 * (1 + math.cos(math.pi * (s - warmup) / (total - 1 - warmup))))
        for s in range(warmup, total)
    ]  # fmt: skip
    assert got[warmup:] == pytest.approx(expected)


def test_constant_schedule_and_no_warmup():
    assert lrs(6, lr=2e-4, schedule="constant", warmup_steps=2) == pytest.approx(
        [1e-4, 2e-4, 2e-4, 2e-4, 2e-4, 2e-4]
    )
    got = lrs(5, lr=1.0, warmup_steps=0, min_lr_ratio=0.0)
    assert got[0] == 1.0 and got[-1] == pytest.approx(0.0, abs=1e-12)


def test_cosine_needs_a_known_length():
    with pytest.raises(ValueError, match="set trainer.max_steps"):
        optimizer_of(-1)  # trainer.max_steps unset
    _, optimizer, _ = optimizer_of(-1, schedule="constant")
    assert optimizer.param_groups[0]["lr"] == 2e-4


@pytest.mark.parametrize("finetune", ["full", "lora"])
def test_weight_decay_skips_norms_and_biases_and_frozen_weights(finetune):
    module, optimizer, _ = optimizer_of(10, finetune=finetune, weight_decay=0.05)
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in module.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    plain = {names[id(p)] for p in no_decay["params"]}
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert decayed | plain == trainable and not decayed & plain  # each trainable param once
    assert all("norm" in n or n.endswith("bias") for n in plain)
    if finetune == "full":
        assert any("norm" in n for n in plain) and any("embed_tokens" in n for n in decayed)
        assert any("q_proj.weight" in n for n in decayed)
    else:
        assert decayed and all("lora_" in n for n in decayed) and not plain
    assert {torch.Size(p.shape).numel() > 0 for p in decay["params"]} == {True}
