"""SFTModule's wiring: its optimizer follows the Trainer's steps, and bad settings fail at once.

The units it wires are tested on their own: tests/training/test_optim.py, test_fsdp.py, test_throughput.py.
"""

from types import SimpleNamespace

import pytest

from medsft.training.module import SFTModule
from medsft.training.optim import OptimizerSettings, lr_factor


def test_configure_optimizers_schedules_by_the_trainers_steps():
    settings = OptimizerSettings(lr=1.0, warmup_steps=2, weight_decay=0.1, min_lr_ratio=0.2)
    module = SFTModule("random:tiny", finetune="full", optimizer=settings)
    module.configure_model()
    module.trainer = SimpleNamespace(
        max_steps=6, global_step=0, precision_plugin=None, world_size=1
    )
    config = module.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert config["lr_scheduler"]["interval"] == "step"
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) == trainable
    assert optimizer.param_groups[0]["weight_decay"] == 0.1
    for step in (1, 3, 5):
        module.trainer.global_step = step
        optimizer.step()  # no gradients: a no-op, in the order Lightning calls them
        scheduler.step()
        assert optimizer.param_groups[0]["lr"] == pytest.approx(lr_factor(step, settings, 6))
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.2)  # the last step's minimum


def test_bad_optimizer_settings_fail_when_the_module_is_made():
    with pytest.raises(ValueError, match="min_lr_ratio"):
        SFTModule(optimizer=OptimizerSettings(min_lr_ratio=2.0))
