"""FSDP2 for full fine-tuning: the strategy (`--trainer.strategy fsdp2`), the settings it refuses,
and how a model is sharded (each decoder layer, then the whole model).

`register_strategy` gives Lightning the `fsdp2` name; train.py calls it before the Trainer is built
(importing this module registers nothing).
"""

from __future__ import annotations

import re
from importlib.metadata import version
from typing import Any

import torch
from lightning.pytorch.strategies import ModelParallelStrategy, StrategyRegistry

from medsft.errors import ConfigError
from medsft.model.build import backbone_and_head
from medsft.training.checkpoint import WholeShardedSaves


class FSDP2Strategy(WholeShardedSaves, ModelParallelStrategy):
    """FSDP2 across every rank: ModelParallelStrategy with all ranks data-parallel.

    Sharded checkpoints are written whole or not at all (medsft.training.checkpoint.WholeShardedSaves).

    ModelParallelStrategy's own default spends a node's GPUs on tensor parallelism, so
    `--trainer.devices 4` would need a matching `data_parallel_size`; here it follows the devices.
    """

    def __init__(
        self, save_distributed_checkpoint: bool = True, process_group_backend: str | None = None
    ):
        """
        Args:
            save_distributed_checkpoint: write sharded checkpoints (fast, resumable at any size).
            process_group_backend: `nccl` on GPUs, `gloo` on CPUs (default: chosen by device).
        """
        super().__init__(
            data_parallel_size="auto",
            tensor_parallel_size=1,
            save_distributed_checkpoint=save_distributed_checkpoint,
            process_group_backend=process_group_backend,
        )

    def setup_environment(self) -> None:
        self._data_parallel_size = self.world_size
        super().setup_environment()


# The FSDP2 step passes a boolean [batch, tokens] `logits_to_keep` (supervised positions only);
# transformers takes one from 5.21.0 on (older versions index the hidden states with it and fail).
FSDP2_TRANSFORMERS = (5, 21, 0)


def transformers_version() -> tuple[int, ...]:
    """The installed transformers' (major, minor, patch)."""
    return tuple(map(int, re.findall(r"\d+", version("transformers"))[:3]))


def register_strategy() -> None:
    """`--trainer.strategy fsdp2`: the name in Lightning's StrategyRegistry (idempotent)."""
    StrategyRegistry.register(
        "fsdp2", FSDP2Strategy, description="FSDP2 over all ranks (medsft)", override=True
    )


def validate_strategy(strategy: Any, finetune: str, quantize: str | None) -> None:
    """FSDP2 shards full fine-tuning only: say so before any model is built.

    Args:
        strategy: as configured (`"fsdp2"`, a class path) or a Strategy instance.
        finetune: `full` or `lora`.
        quantize: `nf4` or None.
    """
    if isinstance(strategy, ModelParallelStrategy):
        sharded = True
    else:
        name = strategy if isinstance(strategy, str) else str(getattr(strategy, "class_path", ""))
        sharded = name == "fsdp2" or name.endswith(("FSDP2Strategy", "ModelParallelStrategy"))
    if sharded and (finetune != "full" or quantize is not None):
        raise ConfigError(
            "strategy fsdp2 shards full fine-tuning only: 4-bit weights cannot be sharded and a "
            "LoRA adapter is small enough to replicate. Use --trainer.strategy ddp for LoRA and "
            "QLoRA (configs/lora.yaml, configs/qlora.yaml), or --model.finetune full with "
            "--model.quantize null for FSDP2 (configs/full.yaml)."
        )
    if sharded and transformers_version() < FSDP2_TRANSFORMERS:
        needed = ".".join(map(str, FSDP2_TRANSFORMERS))
        raise ConfigError(
            f"strategy fsdp2 needs transformers >= {needed} (a boolean logits_to_keep), found "
            f"{version('transformers')}: pip install -U 'transformers>={needed}', or use "
            "--trainer.strategy ddp"
        )


def shard_model(model: torch.nn.Module, device_mesh: Any) -> None:
    """Shard `model` in place with FSDP2: each decoder layer, then the whole model.

    Args:
        model: a transformers causal LM (full fine-tuning).
        device_mesh: ModelParallelStrategy's mesh, with `data_parallel` and `tensor_parallel`
            dimensions.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if device_mesh["tensor_parallel"].size() > 1:
        # ModelParallelStrategy's default puts a node's GPUs on tensor parallelism, which
        # medsft does not implement: ranks would then train unsynchronised copies.
        raise ConfigError(
            "medsft shards with FSDP2 only: use --trainer.strategy fsdp2 (see configs/full.yaml)"
        )
    mesh = device_mesh["data_parallel"]
    policy = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if (torch.cuda.is_available())
        else MixedPrecisionPolicy()
    )
    backbone, _ = backbone_and_head(model)
    for layer in backbone.layers:
        fully_shard(layer, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)


def full_tensor(value: torch.Tensor) -> torch.Tensor:
    """A plain tensor of `value`: a DTensor (FSDP2's gradient norm) is gathered from all ranks,
    anything else is returned as it is.

    Args:
        value: a tensor or DTensor.
    """
    return value.full_tensor() if hasattr(value, "full_tensor") else value
