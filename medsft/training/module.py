"""SFTModule: one shared step for training and validation, token-weighted everywhere.

The model is built by medsft.model.build.build_model in `configure_model`, so each rank builds (and,
for nf4, quantizes) its own copy on its own device, and FSDP2 can shard it as it is built.

Exact token weighting. Each micro-batch backpropagates its *sum* of token losses. Lightning divides
by `accumulate_grad_batches` (A) and data-parallel reduction averages over ranks (W), so before the
optimizer step the gradients are rescaled by A * W / N, with N the supervised tokens of the whole
step across all ranks. Every supervised token then weighs the same, however answers are spread
over micro-batches and ranks. Logged losses follow the same rule.

No host syncs on ordinary steps of a single-device or DDP run: supervised positions come
precomputed from the data loader, the token counts stay on the device (one all-reduce per
optimizer step on several ranks), and metrics are read to the host only on logging steps
(`trainer.log_every_n_steps`); the non-finite guard adds one read per optimizer step
(`nonfinite: off` removes it). tests/test_gpu_path.py counts them. On several ranks one flag per
accumulation window is read to end the epoch together. The FSDP2 step selects supervised
positions with a boolean mask (a sync) and gathers the sharded gradient norm when the guard,
clipping or logging needs it.

Units tested without a Trainer: the optimizer and schedule (medsft.training.optim), FSDP2 (medsft.training.fsdp),
throughput and MFU (medsft.training.throughput).
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning import LightningModule

from medsft.chat import IGNORE_INDEX
from medsft.errors import ConfigError, UserError
from medsft.metrics.likelihood import TokenPerplexity
from medsft.model.attention import AttentionChoice, AttnImplementation
from medsft.model.build import (
    DType,
    Finetune,
    LoraSettings,
    Quantize,
    backbone_and_head,
    build_model,
    validate_model_args,
)
from medsft.model.flops import FlopCounter
from medsft.model.loss import masked_nll
from medsft.training.fsdp import full_tensor, shard_model, validate_strategy
from medsft.training.optim import OptimizerSettings, build_optimizer, step_scheduler
from medsft.training.throughput import Throughput

log = logging.getLogger(__name__)


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
                kernel for packed ones: medsft.model.attention), or `sdpa`, `eager`,
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
        optimizer.validate(cuda=torch.cuda.is_available())
        if finetune == "full" and lora != LoraSettings():
            log.warning(
                "model.lora is set (%s) but model.finetune is full, which trains every weight "
                "and adds no adapter: the lora settings are ignored; remove them, or use "
                "finetune: lora",
                ", ".join(
                    f"{k}: {v}" for k, v in vars(lora).items() if v != getattr(LoraSettings(), k)
                ),
            )
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
        # and token slots (real + padding).
        self._window = torch.zeros(5, dtype=torch.float64)
        self.throughput = Throughput()  # the FLOP counter comes with the model
        self._rng_to_restore: dict[str, Any] | None = None
        self._skipped_in_a_row = 0
        self._grad_norm: torch.Tensor | None = None
        self._grad_norm_full: torch.Tensor | None = None

    def configure_model(self) -> None:
        if self.model is not None:
            return
        try:
            device = self.trainer.strategy.root_device
        except RuntimeError:  # not attached to a Trainer: built on the CPU (tests, export)
            device = None
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
        self.throughput.flops = FlopCounter.from_config(
            self.model.config,
            self.finetune,
            lora_r=self.lora.r,
            lora_targets=self.lora.target_modules,
        )
        if self.device_mesh is not None:
            validate_strategy(self.trainer.strategy, self.finetune, self.quantize)
            shard_model(self.model, self.device_mesh)

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
        if self.device_mesh is not None:
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
        self.throughput.restart()
        if self._rng_to_restore is not None:
            _set_rng_state(self._rng_to_restore)
            self._rng_to_restore = None
        if self.trainer.ckpt_path is not None:
            # The restored optimizer holds the rate the checkpoint's schedule set for the next
            # step; the schedule follows trainer.max_steps, which a resume may change: the next
            # step takes its rate from the schedule as configured now.
            for config in self.trainer.lr_scheduler_configs:
                scheduler = config.scheduler
                rates = zip(scheduler.lr_lambdas, scheduler.base_lrs, strict=True)
                for group, (factor, base) in zip(
                    scheduler.optimizer.param_groups, rates, strict=True
                ):
                    group["lr"] = base * factor(scheduler.last_epoch)

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
        self.throughput.add(window[1:], loss)
        if guard and self._nonfinite(loss, params):
            return
        if logging:
            self._log_train_metrics(optimizer, window)

    def _full_grad_norm(self) -> torch.Tensor:
        """The step's gradient norm over all shards, gathered once per step (FSDP2 keeps it as a
        DTensor, which clipping uses as it is)."""
        if self._grad_norm_full is None:
            self._grad_norm_full = full_tensor(self._grad_norm)
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
            log.warning(
                "%s; skipping this optimizer step (%d in a row)", what, self._skipped_in_a_row
            )
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
        loss = nll_sum / step_tokens
        cuda = torch.cuda.is_available()
        since_log = self.throughput.read(
            device_name=torch.cuda.get_device_name() if cuda else None,
            devices=self.trainer.world_size,
        )
        metrics = {
            "train/loss": loss,
            "train/grad_norm": float(grad_norm),
            "train/lr": optimizer.param_groups[0]["lr"],
            "train/supervised_tokens": step_tokens,
            **{f"train/{name}": value for name, value in since_log.items()},
        }
        if cuda:
            metrics["train/peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
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

    def validation_pass(self) -> dict[str, float]:
        """One pass over the validation data outside Lightning's loop (every rank): what
        `validation_step` and `on_validation_epoch_end` compute, returned rather than logged
        (for a validation a resume must redo, medsft.training.checkpoint.validate_now)."""
        trainer = self.trainer
        loader = trainer.datamodule.val_dataloader()
        limit = trainer.limit_val_batches
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                for i, batch in enumerate(loader):
                    if isinstance(limit, int) and i >= limit:
                        break
                    self.validation_step(trainer.strategy.batch_to_device(batch), i)
            if self.val_ppl.update_count == 0:
                return {}
            result = self.val_ppl.compute()
            return {"val/loss": float(result["loss"]), "val/ppl": float(result["ppl"])}
        finally:
            self.val_ppl.reset()
            self.train(was_training)

    def configure_optimizers(self) -> dict[str, Any]:
        scaler = getattr(self.trainer.precision_plugin, "scaler", None) is not None
        optimizer = build_optimizer(
            self.parameters(), self.optim, sharded=self.device_mesh is not None, scaler=scaler
        )
        # max_steps, not trainer.estimated_stepping_batches: that sets up the train loader before
        # the checkpoint is restored, so a resumed stream would start from the wrong place.
        scheduler = step_scheduler(
            optimizer, self.optim, self.trainer.max_steps, lambda: self.trainer.global_step
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
