"""medsft.training.fsdp without a Trainer: the settings FSDP2 refuses, the `fsdp2` strategy name, and a
model sharded on a one-rank gloo mesh (each decoder layer and the root; same outputs, same
training step as unsharded, and the host syncs the FSDP2 step makes)."""

from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
from lightning.pytorch.strategies import DDPStrategy, StrategyRegistry

from medsft.model.build import build_model
from medsft.training.fsdp import (
    FSDP2_TRANSFORMERS,
    FSDP2Strategy,
    full_tensor,
    register_strategy,
    shard_model,
    transformers_version,
    validate_strategy,
)
from tests.helpers import HostSyncCounter, decoder_layers


@pytest.mark.parametrize(
    "strategy",
    ["fsdp2", "medsft.training.fsdp.FSDP2Strategy", SimpleNamespace(class_path="x.FSDP2Strategy")],
)
def test_fsdp2_refuses_lora_and_4bit_weights(strategy):
    validate_strategy(strategy, "full", None)
    for finetune, quantize in (("lora", None), ("full", "nf4"), ("lora", "nf4")):
        with pytest.raises(ValueError, match="fsdp2 shards full fine-tuning only"):
            validate_strategy(strategy, finetune, quantize)


def test_fsdp2_needs_a_transformers_that_takes_a_boolean_logits_to_keep(monkeypatch):
    import medsft.training.fsdp

    monkeypatch.setattr(medsft.training.fsdp, "version", lambda name: "5.20.2")
    with pytest.raises(ValueError, match=r"fsdp2 needs transformers >= 5\.21\.0.*found 5\.20\.2"):
        validate_strategy("fsdp2", "full", None)
    validate_strategy("ddp", "full", None)  # the other strategies do not


def test_other_strategies_take_every_mode():
    for strategy in ("ddp", "auto", DDPStrategy()):
        validate_strategy(strategy, "lora", "nf4")


def test_fsdp2_is_a_registered_strategy_name():
    register_strategy()
    register_strategy()  # idempotent
    assert StrategyRegistry["fsdp2"]["strategy"] is FSDP2Strategy


def test_tensor_parallel_meshes_are_refused():
    class Dim:
        def __init__(self, n):
            self.n = n

        def size(self):
            return self.n

    mesh = {"tensor_parallel": Dim(2), "data_parallel": Dim(1)}
    with pytest.raises(ValueError, match="FSDP2 only"):
        shard_model(torch.nn.Linear(2, 2), mesh)


@pytest.fixture
def one_rank_mesh(tmp_path):
    from torch.distributed.device_mesh import init_device_mesh

    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        yield init_device_mesh("cpu", (1, 1), mesh_dim_names=("data_parallel", "tensor_parallel"))
    finally:
        dist.destroy_process_group()


def _batch():
    from medsft.data import collate

    gen = torch.Generator().manual_seed(0)
    examples = []
    for n in (19, 11):
        ids = torch.randint(10, 1000, (n,), generator=gen).tolist()
        examples.append({"input_ids": ids, "labels": [-100] * (n // 2) + ids[n // 2 :]})
    return collate(examples, pad_token_id=0)


@pytest.mark.skipif(
    transformers_version() < FSDP2_TRANSFORMERS,
    reason="the FSDP2 step needs a transformers that takes a boolean logits_to_keep",
)
def test_sharded_model_gives_the_same_step_and_syncs_only_where_documented(one_rank_mesh):
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor

    from medsft.training.module import SFTModule

    batch = _batch()
    module = SFTModule(finetune="full")
    module.model = build_model("random:tiny", finetune="full", seed=0).eval()  # no dropout
    plain_nll, plain_n = module.step(batch)
    plain_nll.backward()
    plain_norm = torch.nn.utils.get_total_norm([p.grad for p in module.model.parameters()])
    module.model.zero_grad(set_to_none=True)

    shard_model(module.model, one_rank_mesh)
    assert all(isinstance(layer, FSDPModule) for layer in decoder_layers(module.model))
    assert isinstance(module.model, FSDPModule)
    assert all(isinstance(p, DTensor) for p in module.model.parameters())

    module._device_mesh = one_rank_mesh  # the root's own forward, as under FSDP2Strategy
    with HostSyncCounter() as syncs:
        nll, n = module.step(batch)
    assert int(n) == int(plain_n)
    torch.testing.assert_close(nll, plain_nll, rtol=1e-5, atol=1e-4)
    # The supervised positions by boolean mask: module.py's docstring names this sync.
    assert syncs.ours and all(s.startswith("module.py:") for s in syncs.ours), syncs.ours
    nll.backward()
    norm = torch.nn.utils.get_total_norm([p.grad for p in module.model.parameters()])
    assert isinstance(norm, DTensor) and not isinstance(full_tensor(norm), DTensor)
    torch.testing.assert_close(full_tensor(norm), plain_norm, rtol=1e-4, atol=1e-5)


def test_full_tensor_leaves_plain_tensors_alone():
    value = torch.tensor(3.0)
    assert full_tensor(value) is value
