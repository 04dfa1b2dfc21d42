"""SFTModule: one shared step for training and validation, token-weighted everywhere.

The model is built by medsft.model.build_model in `configure_model`, so each rank builds (and,
for nf4, quantizes) its own copy on its own device, and FSDP2 can shard it as it is built.

Exact token weighting. Each micro-batch backpropagates its *sum* of token losses. Lightning divides
by `accumulate_grad_batches` (A) and data-parallel reduction averages over ranks (W), so before the
optimizer step the gradients are rescaled by A * W / N, with N the supervised tokens of the whole
step across all ranks. Every supervised token then weighs the same, however answers are spread
over micro-batches and ranks. Logged losses follow the same rule.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Literal

import torch
from lightning import LightningModule
from lightning.pytorch.strategies import ModelParallelStrategy, StrategyRegistry

from medsft.loss import masked_nll
from medsft.metrics.likelihood import TokenPerplexity
from medsft.model import (
    DType,
    Finetune,
    LoraSettings,
    Quantize,
    backbone_and_head,
    build_model,
    validate_model_args,
)


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


class FSDP2Strategy(ModelParallelStrategy):
    """FSDP2 across every rank: ModelParallelStrategy with all ranks data-parallel.

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
            data_parallel_size="auto", tensor_parallel_size=1,
            save_distributed_checkpoint=save_distributed_checkpoint,
            process_group_backend=process_group_backend,
        )  # fmt: skip

    def setup_environment(self) -> None:
        self._data_parallel_size = self.world_size
        super().setup_environment()


# `--trainer.strategy fsdp2`
StrategyRegistry.register(
    "fsdp2", FSDP2Strategy, description="FSDP2 over all ranks (medsft)", override=True
)


class SFTModule(LightningModule):
    """Supervised fine-tuning of a causal LM with the masked, token-weighted loss."""

    def __init__(
        self,
        name_or_path: str = "random:tiny",
        tokenizer: str | None = None,
        finetune: Finetune = "lora",
        quantize: Quantize = None,
        lora: LoraSettings = LoraSettings(),
        optimizer: OptimizerSettings = OptimizerSettings(),
        gradient_checkpointing: bool = False,
        attn_implementation: str = "sdpa",
        dtype: DType = "auto",
        trust_remote_code: bool = False,
    ):
        """
        Args:
            name_or_path: hub id, local directory, or `random:<preset>` (tiny, Qwen3-0.6B, 1.7B,
                4B, 8B, 14B shapes with random weights).
            tokenizer: tokenizer source if not the model's (`qwen3` = the bundled real one).
            finetune: `lora` (adapters) or `full`.
            quantize: `nf4` (with lora: QLoRA) or null.
            lora: LoRA settings.
            optimizer: optimizer and schedule.
            gradient_checkpointing: trade compute for activation memory.
            attn_implementation: `sdpa`, `eager` or `flash_attention_2`.
            dtype: weight dtype; `auto` = bf16 on a capable GPU, else fp32.
            trust_remote_code: allow code from the model repository.
        """
        super().__init__()
        validate_model_args(name_or_path, finetune, quantize, lora)
        if optimizer.name != "adamw" and not torch.cuda.is_available():
            # bitsandbytes' 8-bit/paged optimizers need a GPU; fail now, not at the first step.
            raise ValueError(
                f"optimizer.name={optimizer.name!r} needs a CUDA GPU; use adamw on CPU"
            )
        if optimizer.warmup_steps < 0 or not 0 <= optimizer.min_lr_ratio <= 1:
            raise ValueError("optimizer.warmup_steps must be >= 0 and min_lr_ratio in [0, 1]")
        self.save_hyperparameters()
        self.name_or_path, self.finetune, self.quantize = name_or_path, finetune, quantize
        self.lora, self.optim = lora, optimizer
        self.model: Any = None
        self.val_ppl = TokenPerplexity()
        # LoRA checkpoints hold only the adapter; the frozen base is rebuilt from name_or_path.
        self.strict_loading = finetune == "full"
        self._window = torch.zeros(3, dtype=torch.float64)  # nll sum, supervised, all tokens
        self._window_start = time.perf_counter()

    def configure_model(self) -> None:
        if self.model is not None:
            return
        device = self.trainer.strategy.root_device if self._trainer is not None else None
        self.model = build_model(
            self.name_or_path,
            finetune=self.finetune,
            quantize=self.quantize,
            lora=self.lora,
            gradient_checkpointing=self.hparams.gradient_checkpointing,
            attn_implementation=self.hparams.attn_implementation,
            dtype=self.hparams.dtype,
            trust_remote_code=self.hparams.trust_remote_code,
            device=device if self.quantize else None,
            seed=torch.initial_seed(),  # seed_everything's seed: the same adapter init on all ranks
        )
        if self.finetune == "lora":
            # PEFT records the model's own path; a preset must be rebuilt by name when loading.
            self.model.peft_config["default"].base_model_name_or_path = self.name_or_path
        if self._device_mesh is not None:
            self._fully_shard()

    def _fully_shard(self) -> None:
        """FSDP2 (ModelParallelStrategy): shard each decoder layer, then the whole model."""
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        if self.device_mesh["tensor_parallel"].size() > 1:
            # ModelParallelStrategy's default puts a node's GPUs on tensor parallelism, which
            # medsft does not implement: ranks would then train unsynchronised copies.
            raise ValueError(
                "medsft shards with FSDP2 only: use --trainer.strategy fsdp2 "
                "(see configs/full.yaml)"
            )
        mesh = self.device_mesh["data_parallel"]
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if (
            torch.cuda.is_available()
        ) else MixedPrecisionPolicy()  # fmt: skip
        backbone, _ = backbone_and_head(self.model)
        for layer in backbone.layers:
            fully_shard(layer, mesh=mesh, mp_policy=policy)
        fully_shard(self.model, mesh=mesh, mp_policy=policy)

    def step(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum of token NLL, supervised tokens) of a batch: the one step train and val share."""
        if self._device_mesh is not None:
            # Under FSDP2 the root module must run its own forward to gather its parameters.
            logits = self.model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits
            return masked_nll(batch["labels"], logits=logits)
        backbone, head = backbone_and_head(self.model)
        hidden = backbone(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
        ).last_hidden_state
        return masked_nll(batch["labels"], hidden_states=hidden, head=head)

    def on_train_epoch_start(self) -> None:
        self._window = torch.zeros_like(self._window)
        self._window_start = time.perf_counter()

    def on_train_batch_start(self, batch: dict[str, Any], batch_idx: int) -> int | None:
        # Every rank has finished its shard: end the epoch together, but only on an accumulation
        # boundary, so a partial window is completed by zero-token padding batches and stepped.
        if self.trainer.world_size > 1 and batch_idx % self.trainer.accumulate_grad_batches == 0:
            padding = torch.tensor(float(batch.get("padding", False)), device=self.device)
            if self.trainer.strategy.reduce(padding, reduce_op="sum") >= self.trainer.world_size:
                return -1
        return None

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        nll, n = self.step(batch)
        # Kept on the device: no host sync per micro-batch.
        counts = torch.stack([nll.detach(), n, batch["attention_mask"].sum()]).to(torch.float64)
        self._window = self._window.to(counts.device) + counts
        return nll

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        window = self._window.to(self.device)
        if self.trainer.world_size > 1:
            window = self.trainer.strategy.reduce(window, reduce_op="sum")
        nll_sum, n_sup, n_all = (float(x) for x in window)
        self._window = torch.zeros_like(self._window)
        if n_sup == 0:
            # The data path drops examples without supervised tokens, so this is a bug upstream.
            raise RuntimeError("an optimizer step saw no supervised token on any rank")
        scale = self.trainer.accumulate_grad_batches * self.trainer.world_size / n_sup
        params = [p for p in self.parameters() if p.grad is not None]
        torch._foreach_mul_([p.grad for p in params], scale)
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        if hasattr(grad_norm, "full_tensor"):
            grad_norm = grad_norm.full_tensor()
        now = time.perf_counter()
        elapsed, self._window_start = now - self._window_start, now
        metrics = {
            "train/loss": nll_sum / n_sup,
            "train/grad_norm": float(grad_norm),
            "train/lr": optimizer.param_groups[0]["lr"],
            "train/supervised_tokens_per_s": n_sup / elapsed,
            "train/tokens_per_s": n_all / elapsed,
            "train/supervised_tokens": n_sup,
        }
        if torch.cuda.is_available():
            metrics["train/peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        self.log_dict(metrics, on_step=True, prog_bar=False, rank_zero_only=True)
        self.log(
            "loss", nll_sum / n_sup, prog_bar=True, on_step=True, logger=False, rank_zero_only=True
        )

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        nll, n = self.step(batch)
        self.val_ppl.update(nll, n)

    def on_validation_epoch_end(self) -> None:
        if self.val_ppl.update_count == 0:
            return
        result = self.val_ppl.compute()
        self.log("val/loss", result["loss"], prog_bar=True, sync_dist=False)
        self.log("val/ppl", result["ppl"], sync_dist=False)
        self.val_ppl.reset()

    def configure_optimizers(self) -> dict[str, Any]:
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            raise RuntimeError("no trainable parameter: check finetune and lora.target_modules")
        opt = self.optim
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]  # norms and biases take no weight decay
        groups = [
            {"params": decay, "weight_decay": opt.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        if opt.name == "adamw":
            fused = torch.cuda.is_available() and self._device_mesh is None
            optimizer = torch.optim.AdamW(groups, lr=opt.lr, betas=opt.betas, fused=fused or None)
        else:
            import bitsandbytes as bnb

            cls = {
                "adamw_8bit": bnb.optim.AdamW8bit,
                "paged_adamw_8bit": bnb.optim.PagedAdamW8bit,
                "paged_adamw": bnb.optim.PagedAdamW,
            }[opt.name]
            optimizer = cls(groups, lr=opt.lr, betas=opt.betas)
        total = self.trainer.estimated_stepping_batches
        if opt.schedule == "cosine" and not math.isfinite(total):
            raise ValueError(
                "the cosine schedule needs a known length, and streamed data has none: set "
                "trainer.max_steps (or use optimizer.schedule: constant)"
            )
        total = int(total) if math.isfinite(total) else 0
        warmup = opt.warmup_steps

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            if opt.schedule == "constant":
                return 1.0
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return opt.min_lr_ratio + (1 - opt.min_lr_ratio) * 0.5 * (
                1 + math.cos(math.pi * progress)
            )

        # Keyed on optimizer steps taken, not scheduler calls: ending an epoch early on every rank
        # (see on_train_batch_start) makes Lightning call the scheduler once without a step.
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda _: factor(self.trainer.global_step)
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def _trainable_names(self) -> set[str]:
        """What a LoRA checkpoint holds: the adapter, not the frozen base."""
        return {n for n, p in self.named_parameters() if p.requires_grad}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.finetune == "lora":
            # Loading is not strict (the frozen base is not in the file), so check by hand that
            # the adapter in the file is the one being trained.
            trainable = self._trainable_names()
            saved = set(checkpoint["state_dict"])
            if saved != trainable:
                missing, extra = sorted(trainable - saved), sorted(saved - trainable)
                raise ValueError(
                    f"the checkpoint's adapter does not match this model's: it lacks "
                    f"{len(missing)} and has {len(extra)} other adapter tensors (e.g. "
                    f"{(missing or extra)[0]}). Was it trained with other lora settings? Resume "
                    "with the run's config.yaml, or start without --ckpt_path."
                )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.finetune == "lora":
            trainable = self._trainable_names()
            checkpoint["state_dict"] = {
                k: v for k, v in checkpoint["state_dict"].items() if k in trainable
            }
