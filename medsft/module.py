"""SFTModule: one shared step for training and validation, token-weighted everywhere.

The model is built by medsft.model.build_model in `configure_model`, so each rank builds (and,
for nf4, quantizes) its own copy on its own device, and FSDP2 can shard it as it is built.

Exact token weighting. Each micro-batch backpropagates its *sum* of token losses. Lightning divides
by `accumulate_grad_batches` (A) and data-parallel reduction averages over ranks (W), so before the
optimizer step the gradients are rescaled by A * W / N, with N the supervised tokens of the whole
step across all ranks. Every supervised token then weighs the same, however answers are spread
over micro-batches and ranks. Logged losses follow the same rule.

No host syncs on ordinary steps: supervised positions come precomputed from the data loader, the
token counts stay on the device (one all-reduce per optimizer step on several ranks), and
metrics are read to the host only on logging steps (`trainer.log_every_n_steps`). On several
ranks one flag per accumulation window is read to end the epoch together.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning import LightningModule
from lightning.pytorch.strategies import ModelParallelStrategy, StrategyRegistry

from medsft.attention import AttentionChoice, AttnImplementation
from medsft.chat import IGNORE_INDEX
from medsft.checkpoint import WholeShardedSaves
from medsft.errors import ConfigError, UserError
from medsft.flops import FlopCounter, mfu
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

log = logging.getLogger(__name__)


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


class NonFiniteLoss(UserError, RuntimeError):
    """The loss or gradient norm became NaN or infinite; the message says what to try."""


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


class FSDP2Strategy(WholeShardedSaves, ModelParallelStrategy):
    """FSDP2 across every rank: ModelParallelStrategy with all ranks data-parallel.

    Sharded checkpoints are written whole or not at all (medsft.checkpoint.WholeShardedSaves).

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


def validate_strategy(strategy: Any, finetune: str, quantize: str | None) -> None:
    """FSDP2 shards full fine-tuning only: say so before any model is built.

    `strategy` as configured (`"fsdp2"`, a class path) or a Strategy instance.
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
        attn_implementation: AttnImplementation = "auto",
        dtype: DType = "auto",
        trust_remote_code: bool = False,
        nonfinite: Literal["stop", "skip", "off"] = "stop",
        max_nonfinite_skips: int = 3,
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
            attn_implementation: `auto` (SDPA's causal kernel for padded rows, a varlen-capable
                kernel for packed ones: medsft.attention), or `sdpa`, `eager`,
                `flash_attention_2`, `flex_attention`, `sdpa_varlen` for every batch.
            dtype: weight dtype; `auto` = bf16 on a capable GPU, else fp32.
            trust_remote_code: allow code from the model repository.
            nonfinite: a NaN/inf loss or gradient norm `stop`s the run (exit code 1, weights
                untouched), `skip`s that optimizer step, or is not checked (`off`, one host
                read less per step).
            max_nonfinite_skips: with `skip`, stop after this many non-finite steps in a row.
        """
        super().__init__()
        validate_model_args(name_or_path, finetune, quantize, lora)
        if optimizer.name != "adamw" and not torch.cuda.is_available():
            # bitsandbytes' 8-bit/paged optimizers need a GPU; fail now, not at the first step.
            raise ConfigError(
                f"optimizer.name={optimizer.name!r} needs a CUDA GPU; use adamw on CPU"
            )
        if optimizer.warmup_steps < 0 or not 0 <= optimizer.min_lr_ratio <= 1:
            raise ConfigError("optimizer.warmup_steps must be >= 0 and min_lr_ratio in [0, 1]")
        self.save_hyperparameters()
        self.name_or_path, self.finetune, self.quantize = name_or_path, finetune, quantize
        self.lora, self.optim = lora, optimizer
        self.max_skips = max_nonfinite_skips
        self._attention = AttentionChoice(attn_implementation)
        self.model: Any = None
        self.val_ppl = TokenPerplexity()
        # LoRA checkpoints hold only the adapter; the frozen base is rebuilt from name_or_path.
        self.strict_loading = finetune == "full"
        # This optimizer step's nll sum, supervised tokens, real tokens, causal attention pairs
        # and token slots (real + padding); and the last four summed since the last log.
        self._window = torch.zeros(5, dtype=torch.float64)
        self._since_log = torch.zeros(4, dtype=torch.float64)
        self._flops: FlopCounter | None = None
        self._rng_to_restore: dict[str, Any] | None = None
        self._skipped_in_a_row = 0
        self._loss_max = torch.zeros((), dtype=torch.float64)  # worst step loss since the log
        self._log_start = time.perf_counter()
        self._grad_norm: torch.Tensor | None = None
        self._grad_norm_full: torch.Tensor | None = None

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
            attn_implementation=self._attention.load_kernel,
            dtype=self.hparams.dtype,
            trust_remote_code=self.hparams.trust_remote_code,
            device=device if self.quantize else None,
            seed=torch.initial_seed(),  # seed_everything's seed: the same adapter init on all ranks
        )
        if self.finetune == "lora":
            # PEFT records the model's own path; a preset must be rebuilt by name when loading.
            self.model.peft_config["default"].base_model_name_or_path = self.name_or_path
        self._flops = FlopCounter.from_config(
            self.model.config, self.finetune, lora_r=self.lora.r,
            lora_targets=self.lora.target_modules,
        )  # fmt: skip
        if self._device_mesh is not None:
            validate_strategy(self.trainer.strategy, self.finetune, self.quantize)
            self._fully_shard()

    def _fully_shard(self) -> None:
        """FSDP2 (ModelParallelStrategy): shard each decoder layer, then the whole model."""
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        if self.device_mesh["tensor_parallel"].size() > 1:
            # ModelParallelStrategy's default puts a node's GPUs on tensor parallelism, which
            # medsft does not implement: ranks would then train unsynchronised copies.
            raise ConfigError(
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
        labels = batch["labels"]
        positions, targets = batch.get("positions"), batch.get("targets")
        # No attention mask: batches are right-padded, and under causal attention a real token
        # never sees the padding after it, so its output is the same. Padding positions are never
        # supervised. Without a mask, transformers needs no host sync to inspect it and SDPA runs
        # its causal (flash) kernel.
        input_ids = batch["input_ids"]
        # Packed rows (data.packing): position ids restart at each example, which is how
        # transformers keeps attention inside each one (block-diagonal, or flash varlen).
        position_ids = batch.get("position_ids")
        self._attention.follow(self.model, position_ids is not None, input_ids.device)
        if self._device_mesh is not None:
            # Under FSDP2 the root module must run its own forward to gather its parameters; its
            # boolean `logits_to_keep` still projects supervised positions only ([N, V] logits).
            keep = torch.zeros_like(labels, dtype=torch.bool)
            keep[:, :-1] = labels[:, 1:] != IGNORE_INDEX
            logits = self.model(
                input_ids=input_ids, position_ids=position_ids, logits_to_keep=keep
            ).logits
            next_tokens = labels[:, 1:][keep[:, :-1]]
            return F.cross_entropy(logits.float(), next_tokens, reduction="sum"), keep.sum()
        backbone, head = backbone_and_head(self.model)
        hidden = backbone(
            input_ids=input_ids, position_ids=position_ids, use_cache=False
        ).last_hidden_state
        return masked_nll(
            labels, hidden_states=hidden, head=head, positions=positions, targets=targets
        )

    def on_train_start(self) -> None:
        self._log_start = time.perf_counter()
        if self._rng_to_restore is not None:
            _set_rng_state(self._rng_to_restore)
            self._rng_to_restore = None

    def on_train_epoch_start(self) -> None:
        self._window = torch.zeros_like(self._window)

    def on_train_batch_start(self, batch: dict[str, Any], batch_idx: int) -> int | None:
        # Every rank has finished its shard: end the epoch together, but only on an accumulation
        # boundary, so a partial window is completed by zero-token padding batches and stepped.
        # The one host read per window on several ranks (see the module docstring).
        if self.trainer.world_size > 1 and batch_idx % self.trainer.accumulate_grad_batches == 0:
            padding = torch.tensor(float(batch.get("padding", False)), device=self.device)
            if self.trainer.strategy.reduce(padding, reduce_op="sum") >= self.trainer.world_size:
                return -1
        return None

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        nll, n = self.step(batch)
        counts = torch.stack(
            [nll.detach(), n, batch["attention_mask"].sum(), batch["attention_pairs"]]
        ).to(torch.float64)
        self._window = self._window.to(counts.device)
        self._window[:4] += counts
        self._window[4] += batch["input_ids"].numel()  # a host number: no copy, no sync
        return nll

    def _is_logging_step(self) -> bool:
        step, trainer = self.trainer.global_step, self.trainer
        return step % trainer.log_every_n_steps == 0 or step + 1 == trainer.max_steps

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        window = self._window.to(self.device)
        self._window = torch.zeros_like(window)
        if self.trainer.world_size > 1:
            window = self.trainer.strategy.reduce(window, reduce_op="sum")
        n_sup = window[1]
        # The data path drops examples without supervised tokens and the epoch ends before a
        # window of padding only, so this is a bug upstream; checked without a host sync.
        torch._assert_async(n_sup > 0, "an optimizer step saw no supervised token on any rank")
        scale = (self.trainer.accumulate_grad_batches * self.trainer.world_size / n_sup).float()
        params = [p for p in self.parameters() if p.grad is not None]
        grads = [p.grad for p in params]
        torch._foreach_mul_(grads, scale)
        logging = self._is_logging_step()
        guard = self.hparams.nonfinite != "off"
        self._grad_norm_full = None
        self._grad_norm = (
            torch.nn.utils.get_total_norm(grads)
            if logging or guard or self.trainer.gradient_clip_val
            else None
        )
        loss = window[0] / n_sup
        self._loss_max = torch.maximum(self._loss_max.to(loss.device), loss)
        self._since_log = self._since_log.to(window.device) + window[1:]
        if guard and self._nonfinite(loss, params):
            return
        if logging:
            self._log_train_metrics(optimizer, window)

    def _full_grad_norm(self) -> torch.Tensor:
        """The step's gradient norm over all shards, gathered once per step (FSDP2 keeps it as a
        DTensor, which clipping uses as it is)."""
        if self._grad_norm_full is None:
            norm = self._grad_norm
            self._grad_norm_full = norm.full_tensor() if hasattr(norm, "full_tensor") else norm
        return self._grad_norm_full

    def _nonfinite(self, loss: torch.Tensor, params: list[torch.nn.Parameter]) -> bool:
        """The guard: the one host read of an ordinary step (`nonfinite: off` removes it).

        Runs before the optimizer's update, so non-finite values never reach the weights: `stop`
        raises (no checkpoint or model is saved after it); `skip` drops the gradients, so the
        optimizer leaves every weight and its state untouched, and stops after
        `max_nonfinite_skips` in a row.
        """
        grad_norm = self._full_grad_norm()
        if bool(torch.isfinite(loss) & torch.isfinite(grad_norm)):
            self._skipped_in_a_row = 0
            return False
        step = self.global_step
        what = f"step {step}: the loss is {float(loss)} and the gradient norm {float(grad_norm)}"
        self._skipped_in_a_row += 1
        if self.hparams.nonfinite == "skip" and self._skipped_in_a_row <= self.max_skips:
            log.warning("%s; skipping this optimizer step (%d in a row)", what,
                        self._skipped_in_a_row)  # fmt: skip
            for p in params:
                p.grad = None
            if self.logger is not None and self.trainer.is_global_zero:
                self.logger.log_metrics({"train/nonfinite_skips": self._skipped_in_a_row}, step)
            return True
        raise NonFiniteLoss(
            f"{what}. Training stopped before this update: the weights and the last checkpoint "
            "are finite. Try a lower --model.optimizer.lr, more warmup_steps, "
            "--trainer.gradient_clip_val 1.0, bf16 instead of fp16, or --model.nonfinite skip."
        )

    def _log_train_metrics(self, optimizer: torch.optim.Optimizer, window: torch.Tensor) -> None:
        """Read the step's figures to the host (the only sync of a logging step) and log them."""
        grad_norm = self._full_grad_norm()
        nll_sum, step_tokens, *_ = window.tolist()
        n_sup, n_all, pairs, slots = self._since_log.tolist()
        now = time.perf_counter()
        elapsed, self._log_start = now - self._log_start, now
        self._since_log = torch.zeros_like(self._since_log)
        loss = nll_sum / step_tokens
        loss_max, self._loss_max = float(self._loss_max), torch.zeros_like(self._loss_max)
        metrics = {
            "train/loss": loss,
            "train/loss_max": loss_max,  # a spike between logging steps still shows
            "train/grad_norm": float(grad_norm),
            "train/lr": optimizer.param_groups[0]["lr"],
            "train/supervised_tokens_per_s": n_sup / elapsed,
            "train/tokens_per_s": n_all / elapsed,
            "train/supervised_tokens": step_tokens,
            "train/padding_fraction": 1 - n_all / slots,  # token slots spent on padding
        }
        if torch.cuda.is_available():
            metrics["train/peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
            flops = self._flops.step_flops(int(n_all), int(n_sup), int(pairs))
            name, devices = torch.cuda.get_device_name(), self.trainer.world_size
            if (utilisation := mfu(flops, elapsed, name, devices)) is not None:
                metrics["train/mfu"] = utilisation  # None (not logged) for an unknown GPU
        if self.trainer.is_global_zero and self.logger is not None:
            self.logger.log_metrics(metrics, step=self.global_step)
        self.log("loss", loss, prog_bar=True, on_step=True, logger=False, rank_zero_only=True)

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip with the norm already computed for logging.

        Lightning's own clipping refuses fused optimizers under any mixed precision (it cannot
        tell bf16 without a loss scaler from fp16 with one); medsft never fuses with a scaler.
        """
        if not gradient_clip_val:
            return
        params = [p for p in self.parameters() if p.grad is not None]
        if gradient_clip_algorithm == "value":
            torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
        else:
            torch.nn.utils.clip_grads_with_norm_(params, gradient_clip_val, self._grad_norm)

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
            scaler = getattr(self.trainer.precision_plugin, "scaler", None)
            fused = opt.fused
            if fused is None:
                fused = torch.cuda.is_available() and self._device_mesh is None and scaler is None
            elif fused and scaler is not None:
                raise ConfigError(
                    "optimizer.fused: true cannot be combined with 16-mixed precision (the fused "
                    "kernel unscales gradients itself, after clipping would have run): use "
                    "bf16-mixed, or optimizer.fused: false"
                )
            optimizer = torch.optim.AdamW(groups, lr=opt.lr, betas=opt.betas, fused=fused or None)
        else:
            import bitsandbytes as bnb

            cls = {
                "adamw_8bit": bnb.optim.AdamW8bit,
                "paged_adamw_8bit": bnb.optim.PagedAdamW8bit,
                "paged_adamw": bnb.optim.PagedAdamW,
            }[opt.name]
            optimizer = cls(groups, lr=opt.lr, betas=opt.betas)
        # max_steps, not trainer.estimated_stepping_batches: that sets up the train loader before
        # the checkpoint is restored, so a resumed stream would start from the wrong place.
        total = self.trainer.max_steps
        if opt.schedule == "cosine" and total < 1:
            raise ConfigError(
                "the cosine schedule needs a known length, and streamed data has none: set "
                "trainer.max_steps (or use optimizer.schedule: constant)"
            )
        warmup = opt.warmup_steps

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            if opt.schedule == "constant":
                return 1.0
            # The last step (total - 1) takes exactly min_lr_ratio * lr, as documented.
            progress = min(1.0, (step - warmup) / max(1, total - 1 - warmup))
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

    def _gather(self, obj: Any) -> list[Any]:
        if self.trainer.world_size == 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.trainer.world_size
        dist.all_gather_object(out, obj)
        return out

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        states = checkpoint.get("rng_states") or []
        if len(states) == self.trainer.world_size:
            # Applied when training starts, after everything that set up the run.
            self._rng_to_restore = states[self.trainer.global_rank]
        if self.finetune == "lora":
            # Loading is not strict (the frozen base is not in the file), so check by hand that
            # the adapter in the file is the one being trained.
            trainable = self._trainable_names()
            saved = set(checkpoint["state_dict"])
            if saved != trainable:
                missing, extra = sorted(trainable - saved), sorted(saved - trainable)
                raise ConfigError(
                    f"the checkpoint's adapter does not match this model's: it lacks "
                    f"{len(missing)} and has {len(extra)} other adapter tensors (e.g. "
                    f"{(missing or extra)[0]}). Was it trained with other lora settings? Resume "
                    "with the run's config.yaml, or start without --ckpt_path."
                )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Each rank's random state (dropout), so a resumed run draws the same masks.
        checkpoint["rng_states"] = self._gather(_rng_state())
        if self.finetune == "lora":
            trainable = self._trainable_names()
            checkpoint["state_dict"] = {
                k: v for k, v in checkpoint["state_dict"].items() if k in trainable
            }
