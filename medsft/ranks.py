"""Which process this is among data-parallel ranks: the one home of the rank helpers used by the
data layer (medsft.data.module), evaluation and perplexity.

Light on purpose: torch.distributed and Lightning are imported inside the functions that need
them, so importing this module costs nothing.
"""

from __future__ import annotations

from typing import Any


def process_group_rank() -> tuple[int, int]:
    """(rank, world size) of the initialised torch.distributed process group; (0, 1) without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def trainer_rank(trainer: Any | None) -> tuple[int, int]:
    """(global rank, world size) of a Lightning trainer; (0, 1) outside one (tests, previews)."""
    return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)


def is_global_zero() -> bool:
    """Whether this process is rank 0 (or the only one): it writes files, logs and the report.

    Lightning's own answer (set from the launcher's environment, then by the strategy), so it is
    right before a process group exists too.
    """
    from lightning.pytorch.utilities import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def all_ranks(flag: bool, strategy: Any, world_size: int) -> bool:
    """Collective over a Lightning strategy's ranks: whether `flag` holds on every one."""
    import torch

    total = strategy.reduce(torch.tensor(float(flag), device=strategy.root_device), reduce_op="sum")
    return bool(total >= world_size)
