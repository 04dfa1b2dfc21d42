"""The training path as a GPU run takes it, reproduced on CPU: models loaded the way users load
them (a saved directory, in eval mode after from_pretrained), fused AdamW with bf16 and clipping,
no host syncs on ordinary steps, and the settings FSDP2 cannot take."""

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback

from medsft.cli.train import main
from medsft.model.build import build_model, random_qwen3
from tests.helpers import HostSyncCounter, decoder_layers, scalars

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory, qwen3_tokenizer):
    """A tiny Qwen3 written with save_pretrained, tokenizer beside it: a user's model directory."""
    path = tmp_path_factory.mktemp("models") / "tiny-qwen3"
    random_qwen3("tiny").save_pretrained(path)
    qwen3_tokenizer.save_pretrained(path)
    return str(path)


class ModeProbe(Callback):
    """Counts checkpointed layer calls and records each layer's mode in training and validation."""

    def __init__(self):
        self.checkpointed, self.train_modes, self.val_modes = 0, set(), set()

    def on_train_start(self, trainer, module):
        for layer in decoder_layers(module.model):
            inner = layer._gradient_checkpointing_func

            def counted(*args, _inner=inner, **kwargs):
                self.checkpointed += 1
                return _inner(*args, **kwargs)

            layer._gradient_checkpointing_func = counted

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.train_modes |= {m.training for m in module.model.modules()}

    def on_validation_batch_start(self, trainer, module, batch, batch_idx, dataloader_idx=0):
        self.val_modes |= {m.training for m in module.model.modules()}


def run(tmp_path, *args, callbacks=(), steps=3):
    return main(
        [
            "--config",
            str(ROOT / "configs/demo.yaml"),
            "--data.source",
            str(ROOT / "data/sample/huatuo_sample.jsonl"),
            "--data.val_fraction",
            "0.2",
            "--data.batch_size",
            "2",
            "--data.max_length",
            "128",
            "--trainer.max_steps",
            str(steps),
            "--trainer.val_check_interval",
            str(steps),
            "--trainer.limit_val_batches",
            "2",
            "--trainer.num_sanity_val_steps",
            "0",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.logger.init_args.save_dir",
            str(tmp_path),
            *args,
        ],
        callbacks=callbacks,
    )


def test_from_pretrained_leaves_eval_mode_and_build_model_undoes_it(saved_model):
    from transformers import AutoModelForCausalLM

    assert not AutoModelForCausalLM.from_pretrained(saved_model).training  # the trap
    for quantize in (None, "nf4"):
        model = build_model(saved_model, quantize=quantize, gradient_checkpointing=True, seed=0)
        assert all(m.training for m in model.modules())
        assert all(layer.gradient_checkpointing for layer in decoder_layers(model))


@pytest.mark.parametrize(
    "mode",
    [
        ["--model.finetune", "lora"],
        ["--model.finetune", "lora", "--model.quantize", "nf4"],
        ["--model.finetune", "full"],
    ],
    ids=["lora", "qlora", "full"],
)
def test_a_saved_model_trains_in_train_mode_with_checkpointing(tmp_path, saved_model, mode):
    probe = ModeProbe()
    cli = run(
        tmp_path,
        "--model.name_or_path",
        saved_model,
        "--model.gradient_checkpointing",
        "true",
        *mode,
        callbacks=[probe],
    )
    layers = len(decoder_layers(cli.model.model))
    assert probe.train_modes == {True}
    assert probe.checkpointed == 3 * layers  # every layer of every training forward
    assert probe.val_modes == {False}  # validation runs in eval mode (no dropout)


def test_fused_adamw_with_bf16_mixed_and_clipping_trains(tmp_path):
    """configs/lora.yaml on a GPU: fused AdamW, bf16-mixed, gradient_clip_val (Lightning #21435)."""
    clip = 0.05
    norms = []

    class ClipProbe(Callback):
        def on_train_start(self, trainer, module):
            def record(optimizer, args, kwargs):
                grads = [p.grad for g in optimizer.param_groups for p in g["params"]]
                norms.append(
                    float(torch.nn.utils.get_total_norm([g for g in grads if g is not None]))
                )

            trainer.optimizers[0].register_step_pre_hook(record)

    cli = run(
        tmp_path,
        "--model.finetune",
        "lora",
        "--model.optimizer.fused",
        "true",
        "--model.optimizer.lr",
        "0.02",
        "--trainer.precision",
        "bf16-mixed",
        "--trainer.gradient_clip_val",
        str(clip),
        "--trainer.log_every_n_steps",
        "1",
        callbacks=[ClipProbe()],
        steps=4,
    )
    assert cli.trainer.optimizers[0].defaults["fused"] is True
    assert len(norms) == 4 and all(n <= clip * (1 + 1e-4) for n in norms), norms
    logged = scalars(cli.trainer.log_dir, "train/grad_norm")  # before clipping
    assert len(logged) == 4 and min(logged) > clip
    losses = scalars(cli.trainer.log_dir, "train/loss")
    assert losses[-1] < losses[0], losses  # and it trains


def test_fused_adamw_with_a_loss_scaler_is_refused(tmp_path):
    """fp16 with a GradScaler: the fused kernel would unscale after medsft's clipping."""
    from lightning import Trainer
    from lightning.pytorch.plugins import MixedPrecision

    from medsft.data import SFTDataModule
    from medsft.training.module import SFTModule
    from medsft.training.optim import OptimizerSettings

    scaler = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))
    trainer = Trainer(
        accelerator="cpu",
        plugins=[scaler],
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    module = SFTModule(finetune="full", optimizer=OptimizerSettings(fused=True))
    data = SFTDataModule(str(ROOT / "data/sample/huatuo_sample.jsonl"), val_fraction=0)
    with pytest.raises(ValueError, match="16-mixed"):
        trainer.fit(module, datamodule=data)


@pytest.mark.parametrize(
    "mode",
    [
        ["--model.finetune", "lora"],
        # Full + nf4 alone: were the strategy check blind to quantize, the model's own check
        # would answer with another message ("cannot train 4-bit weights").
        ["--model.finetune", "full", "--model.quantize", "nf4"],
    ],
    ids=["lora", "nf4"],
)
def test_fsdp2_with_lora_or_nf4_is_refused_before_building(mode):
    with pytest.raises(ValueError, match="fsdp2 shards full fine-tuning only"):
        main(["--config", str(ROOT / "configs/demo.yaml"), "--trainer.strategy", "fsdp2", *mode])


def test_dtype_auto_uses_native_bf16_only(monkeypatch):
    from medsft.model.build import resolve_dtype

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_dtype("auto") == torch.float32  # CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for native, expected in ((True, torch.bfloat16), (False, torch.float16)):

        def supported(including_emulation=True, _native=native):
            return _native or including_emulation  # a T4 or V100 emulates bf16

        monkeypatch.setattr(torch.cuda, "is_bf16_supported", supported)
        assert resolve_dtype("auto") == expected
    assert resolve_dtype("bfloat16") == torch.bfloat16


@pytest.mark.parametrize("guard", ["off", "stop"])
def test_no_host_sync_in_medsft_on_ordinary_steps(tmp_path, guard):
    """None at all with the non-finite guard off; with it on, its one flag per optimizer step."""
    per_step: list[tuple[list, list]] = []

    class SyncProbe(Callback):
        mode = None

        def on_train_start(self, trainer, module):
            # Lightning runs the step (forward, backward, hooks, clipping) in the optimizer's
            # closure; stop after clipping, before the optimizer's own update.
            clip = module.configure_gradient_clipping

            def clip_then_stop(*args, **kwargs):
                clip(*args, **kwargs)
                self.mode.__exit__(None, None, None)
                per_step.append((self.mode.ours, self.mode.library))

            module.configure_gradient_clipping = clip_then_stop

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            self.mode = HostSyncCounter()
            self.mode.__enter__()

    run(
        tmp_path,
        "--model.finetune",
        "lora",
        "--trainer.log_every_n_steps",
        "3",
        "--trainer.gradient_clip_val",
        "1.0",
        "--model.nonfinite",
        guard,
        callbacks=[SyncProbe()],
        steps=5,
    )
    ours = [o for o, _ in per_step]
    assert len(ours) == 5
    assert len(ours[0]) > 1 and len(ours[3]) > 1 and len(ours[4]) > 1, ours  # logging steps
    expected = [] if guard == "off" else [ours[1][0]]
    assert ours[1] == ours[2] == expected, ours  # ordinary steps
    if guard == "stop":
        assert ours[1][0].startswith("module.py:")
