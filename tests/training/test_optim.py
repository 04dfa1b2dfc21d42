"""medsft.training.optim without a Trainer: the learning-rate schedule, the weight-decay groups, the fused
kernel choice and the settings refused up front."""

import math

import pytest
import torch

from medsft.errors import ConfigError
from medsft.model.build import build_model
from medsft.training.optim import (
    OptimizerSettings,
    build_optimizer,
    lr_factor,
    parameter_groups,
    step_scheduler,
    use_fused,
)


def lrs(total: int, **settings) -> list[float]:
    """The learning rate of each optimizer step, as Lightning steps the scheduler."""
    opt = OptimizerSettings(**settings)
    optimizer = build_optimizer([torch.nn.Parameter(torch.zeros(2, 2))], opt)
    taken = [0]
    scheduler = step_scheduler(optimizer, opt, total, lambda: taken[0])
    out = []
    for step in range(total):
        out.append(optimizer.param_groups[0]["lr"])
        taken[0] = step + 1  # Lightning counts the step, then calls scheduler.step()
        optimizer.step()  # no gradients: a no-op, in the order Lightning calls them
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
        lr
        * (
            ratio
            + (1 - ratio) * 0.5 * (1 + math.cos(math.pi * (s - warmup) / (total - 1 - warmup)))
        )
        for s in range(warmup, total)
    ]
    assert got[warmup:] == pytest.approx(expected)


def test_constant_schedule_and_no_warmup():
    assert lrs(6, lr=2e-4, schedule="constant", warmup_steps=2) == pytest.approx(
        [1e-4, 2e-4, 2e-4, 2e-4, 2e-4, 2e-4]
    )
    got = lrs(5, lr=1.0, warmup_steps=0, min_lr_ratio=0.0)
    assert got[0] == 1.0 and got[-1] == pytest.approx(0.0, abs=1e-12)


def test_the_schedule_follows_steps_taken_not_scheduler_calls():
    """An epoch ended early on every rank calls the scheduler once without an optimizer step."""
    opt = OptimizerSettings(lr=1.0, warmup_steps=4)
    optimizer = build_optimizer([torch.nn.Parameter(torch.zeros(2, 2))], opt)
    scheduler = step_scheduler(optimizer, opt, 10, lambda: 1)
    for _ in range(3):
        optimizer.step()  # no gradients: a no-op, in the order Lightning calls them
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(lr_factor(1, opt, 10)) == 0.5


def test_after_the_last_step_the_cosine_stays_at_its_minimum():
    opt = OptimizerSettings(min_lr_ratio=0.25)
    assert lr_factor(9, opt, 10) == pytest.approx(0.25) == lr_factor(50, opt, 10)


def test_cosine_needs_a_known_length():
    optimizer = build_optimizer([torch.nn.Parameter(torch.zeros(2, 2))], OptimizerSettings())
    with pytest.raises(ValueError, match="set trainer.max_steps"):
        step_scheduler(optimizer, OptimizerSettings(), -1, lambda: 0)  # trainer.max_steps unset
    step_scheduler(optimizer, OptimizerSettings(schedule="constant"), -1, lambda: 0)
    assert optimizer.param_groups[0]["lr"] == 2e-4


@pytest.mark.parametrize("finetune", ["full", "lora"])
def test_weight_decay_skips_norms_and_biases_and_frozen_weights(finetune):
    model = build_model("random:tiny", finetune=finetune, seed=0)
    decay, no_decay = build_optimizer(
        model.parameters(), OptimizerSettings(weight_decay=0.05)
    ).param_groups
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    plain = {names[id(p)] for p in no_decay["params"]}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert decayed | plain == trainable and not decayed & plain  # each trainable param once
    assert all("norm" in n or n.endswith("bias") for n in plain)
    if finetune == "full":
        assert any("norm" in n for n in plain) and any("embed_tokens" in n for n in decayed)
        assert any("q_proj.weight" in n for n in decayed)
    else:
        assert decayed and all("lora_" in n for n in decayed) and not plain


def test_no_trainable_parameter_is_a_config_error():
    frozen = torch.nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameter"):
        parameter_groups(frozen.parameters(), 0.0)


def test_fused_only_where_it_is_safe():
    auto = OptimizerSettings()
    assert use_fused(auto, cuda=True, sharded=False, scaler=False)
    assert not use_fused(auto, cuda=False, sharded=False, scaler=False)
    assert not use_fused(auto, cuda=True, sharded=True, scaler=False)  # FSDP2
    assert not use_fused(auto, cuda=True, sharded=False, scaler=True)  # fp16 + loss scaler
    assert not use_fused(OptimizerSettings(fused=False), cuda=True, sharded=False, scaler=False)
    with pytest.raises(ValueError, match="16-mixed"):
        use_fused(OptimizerSettings(fused=True), cuda=True, sharded=False, scaler=True)
    # Asked for on CPU: torch's fused AdamW runs there too.
    optimizer = build_optimizer(
        [torch.nn.Parameter(torch.zeros(2, 2))], OptimizerSettings(fused=True)
    )
    assert optimizer.defaults["fused"] is True


def test_settings_refused_before_training():
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        OptimizerSettings(name="paged_adamw_8bit").validate(cuda=False)
    OptimizerSettings(name="paged_adamw_8bit").validate(cuda=True)
    for key, bad in (
        ("warmup_steps", -1),
        ("min_lr_ratio", 1.5),
        ("lr", -0.01),
        ("lr", 0.0),
        ("weight_decay", -0.1),
        ("betas", (0.9, 1.0)),
    ):
        with pytest.raises(ConfigError, match=rf"^model\.optimizer\.{key} must be .*; got"):
            OptimizerSettings(**{key: bad}).validate(cuda=True)
    with pytest.raises(ConfigError, match="fused is torch AdamW's kernel choice"):
        OptimizerSettings(name="adamw_8bit", fused=True).validate(cuda=True)
