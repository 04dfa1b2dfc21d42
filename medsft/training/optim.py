"""The optimizer and its learning-rate schedule, built from plain settings (no Trainer needed).

`OptimizerSettings` is the `model.optimizer` section of a training config. `build_optimizer`
groups the trainable parameters (weight decay on matrices only) and builds torch's AdamW (fused
where it is safe) or a bitsandbytes 8-bit / paged variant; `lr_factor` is the warmup + cosine
schedule; `step_scheduler` applies it by optimizer steps taken.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import torch

from medsft.errors import ConfigError


@dataclass
class OptimizerSettings:
    """AdamW and its learning-rate schedule."""

    name: Literal["adamw", "adamw_8bit", "paged_adamw_8bit", "paged_adamw"] = "adamw"
    """`adamw` (torch, fused on GPU) or bitsandbytes' 8-bit / paged variants."""
    lr: float = 2e-4
    """Peak learning rate."""
    weight_decay: float = 0.0
    """Decoupled weight decay."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam betas."""
    warmup_steps: int = 0
    """Linear warmup from 0 to `lr`, in optimizer steps."""
    schedule: Literal["cosine", "constant"] = "cosine"
    """After warmup: cosine decay to `min_lr_ratio * lr` at the last step, or constant."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of `lr` (cosine)."""
    fused: bool | None = None
    """torch's fused AdamW kernel; null = on for a single-device or DDP CUDA run (not FSDP2,
    not fp16 with a loss scaler). Gradient clipping works with it (medsft clips itself)."""

    def validate(self, *, cuda: bool) -> None:
        """Refuse settings that would fail later, at the first step or on the first resume.

        Args:
            cuda: whether a CUDA GPU is available (bitsandbytes' optimizers need one).
        """
        checks = [
            (self.lr > 0, "lr", "> 0 (e.g. 2e-4)"),
            (self.weight_decay >= 0, "weight_decay", ">= 0"),
            (all(0 <= b < 1 for b in self.betas), "betas", "two numbers in [0, 1)"),
            (self.warmup_steps >= 0, "warmup_steps", ">= 0"),
            (0 <= self.min_lr_ratio <= 1, "min_lr_ratio", "in [0, 1]"),
        ]
        for ok, name, wanted in checks:
            if not ok:
                raise ConfigError(
                    f"model.optimizer.{name} must be {wanted}; got {getattr(self, name)!r}"
                )
        if self.name != "adamw" and self.fused is not None:
            raise ConfigError(
                f"model.optimizer.fused is torch AdamW's kernel choice; {self.name} is "
                "bitsandbytes' optimizer, which would ignore it: remove model.optimizer.fused, "
                "or use name: adamw"
            )
        if self.name != "adamw" and not cuda:
            raise ConfigError(f"optimizer.name={self.name!r} needs a CUDA GPU; use adamw on CPU")


def parameter_groups(
    params: Iterable[torch.nn.Parameter], weight_decay: float
) -> list[dict[str, Any]]:
    """The trainable parameters in two groups: matrices decay, norms and biases (1-d) do not.

    Args:
        params: the model's parameters; frozen ones (`requires_grad` false) are left out.
        weight_decay: decoupled weight decay of the matrices.
    """
    trainable = [p for p in params if p.requires_grad]
    if not trainable:
        raise ConfigError("no trainable parameter: check finetune and lora.target_modules")
    return [
        {"params": [p for p in trainable if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0},
    ]


def use_fused(settings: OptimizerSettings, *, cuda: bool, sharded: bool, scaler: bool) -> bool:
    """Whether AdamW runs torch's fused kernel.

    Args:
        settings: `fused` as configured (null: decide here).
        cuda: parameters on a CUDA GPU.
        sharded: FSDP2 (DTensor parameters; the fused kernel is not used there by default).
        scaler: a loss scaler (fp16 `16-mixed`) is in use.
    """
    if settings.fused is None:
        return cuda and not sharded and not scaler
    if settings.fused and scaler:
        raise ConfigError(
            "optimizer.fused: true cannot be combined with 16-mixed precision (the fused "
            "kernel unscales gradients itself, after clipping would have run): use "
            "bf16-mixed, or optimizer.fused: false"
        )
    return settings.fused


def build_optimizer(
    params: Iterable[torch.nn.Parameter],
    settings: OptimizerSettings,
    *,
    sharded: bool = False,
    scaler: bool = False,
) -> torch.optim.Optimizer:
    """The optimizer over the trainable `params` (see `parameter_groups`).

    Args:
        params: the model's parameters.
        settings: which optimizer, learning rate, betas, weight decay, fused kernel.
        sharded: the parameters are FSDP2 shards.
        scaler: fp16 training with a loss scaler.
    """
    groups = parameter_groups(params, settings.weight_decay)
    if settings.name == "adamw":
        fused = use_fused(settings, cuda=torch.cuda.is_available(), sharded=sharded, scaler=scaler)
        return torch.optim.AdamW(groups, lr=settings.lr, betas=settings.betas, fused=fused or None)
    import bitsandbytes as bnb

    cls = {
        "adamw_8bit": bnb.optim.AdamW8bit,
        "paged_adamw_8bit": bnb.optim.PagedAdamW8bit,
        "paged_adamw": bnb.optim.PagedAdamW,
    }[settings.name]
    return cls(groups, lr=settings.lr, betas=settings.betas)


def lr_factor(step: int, settings: OptimizerSettings, total: int) -> float:
    """The learning rate at optimizer step `step` (0-based) as a fraction of `settings.lr`.

    Linear warmup over `warmup_steps`, then constant or a cosine that reaches exactly
    `min_lr_ratio` at the last step (`total - 1`) and stays there.

    Args:
        step: optimizer steps taken so far.
        settings: the schedule (`warmup_steps`, `schedule`, `min_lr_ratio`).
        total: optimizer steps in the run (`trainer.max_steps`); needed by the cosine only.
    """
    warmup = settings.warmup_steps
    if step < warmup:
        return (step + 1) / warmup
    if settings.schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - 1 - warmup))
    ratio = settings.min_lr_ratio
    return ratio + (1 - ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def step_scheduler(
    optimizer: torch.optim.Optimizer,
    settings: OptimizerSettings,
    total: int,
    steps_taken: Callable[[], int],
) -> torch.optim.lr_scheduler.LambdaLR:
    """A scheduler that sets `lr_factor(steps_taken())` each time it is stepped.

    Keyed on optimizer steps taken (`trainer.global_step`), not on scheduler calls: ending an
    epoch early on every rank makes Lightning call the scheduler once without an optimizer step.

    Args:
        optimizer: from `build_optimizer`.
        settings: the schedule.
        total: optimizer steps in the run; the cosine needs it (>= 1).
        steps_taken: returns the optimizer steps taken so far.
    """
    if settings.schedule == "cosine" and total < 1:
        raise ConfigError(
            "the cosine schedule needs a known length, and streamed data has none: set "
            "trainer.max_steps (or use optimizer.schedule: constant)"
        )
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda _: lr_factor(steps_taken(), settings, total)
    )
