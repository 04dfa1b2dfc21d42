"""Supervised fine-tuning of Qwen3 (QLoRA, LoRA or full) with PyTorch Lightning.

    python train.py --config configs/demo.yaml                       # offline, CPU, < 1 minute
    python train.py --config configs/qlora.yaml --trainer.devices 4  # Qwen3-4B on Huatuo26M-Lite
    python train.py --config configs/lora.yaml --model.lora.r 32 --data.batch_size 8
    python train.py --config configs/qlora.yaml --ckpt_path last     # resume the latest run
    python train.py --config configs/demo.yaml --print_config        # the resolved config

Each run writes logs/<name>/version_N/: config.yaml (resolved), TensorBoard events
(`tensorboard --logdir logs`), checkpoints/, and adapter/ (PEFT) or model/ (full fine-tuning);
`--export true` also writes merged/, a standalone model (see medsft/export.py).

Multi-node: launch the same command with torchrun or under SLURM (srun); Lightning reads the
rank from the environment. Set --trainer.num_nodes and --trainer.devices to match.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from jsonargparse import lazy_instance  # noqa: E402
from lightning.pytorch import Callback  # noqa: E402
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402
from lightning.pytorch.cli import LightningCLI  # noqa: E402
from lightning.pytorch.loggers import TensorBoardLogger  # noqa: E402

from medsft.data import SFTDataModule  # noqa: E402
from medsft.module import SFTModule  # noqa: E402


def _tokenizer_of(name_or_path: str, tokenizer: str | None) -> str:
    return tokenizer or name_or_path


class SFTCLI(LightningCLI):
    """LightningCLI with the data's tokenizer tied to the model's and a resume/export switch."""

    def add_arguments_to_parser(self, parser) -> None:
        # Always there, configurable as --checkpoint.*: save_last makes `--ckpt_path last` work.
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.save_last": True, "checkpoint.save_top_k": 0})
        # One source of truth: the data is tokenized with the model's tokenizer.
        parser.link_arguments(
            ("model.name_or_path", "model.tokenizer"), "data.tokenizer", compute_fn=_tokenizer_of
        )
        parser.add_argument(
            "--ckpt_path", type=str | None, default=None,
            help="resume: a checkpoint path, or 'last' for this run name's latest checkpoint",
        )  # fmt: skip
        parser.add_argument(
            "--export", type=bool, default=False,
            help="after training, merge the adapter into a standalone model in <run>/merged",
        )  # fmt: skip

    def before_instantiate_classes(self) -> None:
        """Fail in seconds, not after GPU setup, when a hub model or dataset cannot be reached."""
        from medsft.data import is_local
        from medsft.model import check_source, ensure_hub_reachable, is_hub_id
        from medsft.module import validate_strategy

        config = self.config
        validate_strategy(config.trainer.strategy, config.model.finetune, config.model.quantize)
        _choose_cpu_threads(config.model.name_or_path, config.trainer.accelerator)
        for name in {config.model.name_or_path, config.model.tokenizer or ""} - {""}:
            check_source(name)
            if is_hub_id(name):
                ensure_hub_reachable(name)
        for source in (config.data.source, config.data.val_source):
            if source and not is_local(source):
                ensure_hub_reachable(source, repo_type="dataset", probe="README.md")


# Models up to this width train on one CPU thread unless OMP_NUM_THREADS says otherwise.
TINY_HIDDEN_SIZE = 256


def _choose_cpu_threads(name_or_path: str, accelerator: Any) -> None:
    """One intra-op thread for a tiny model trained on CPU, when the user has not chosen.

    Measured on a 2-core machine (benchmarks/results/demo_threads.json): a `random:tiny` step's
    matrices are too small to split, torch's default of one thread per core gains nothing on an
    idle machine, and when anything else runs on a core, threads that spin-wait for a descheduled
    sibling make each step about 2x slower. Larger models keep torch's default.
    """
    import torch

    from medsft.model import PRESETS, RANDOM_PREFIX

    if "OMP_NUM_THREADS" in os.environ or accelerator not in ("cpu", "auto", None):
        return
    if accelerator != "cpu" and torch.cuda.is_available():
        return
    hidden = None
    if name_or_path.startswith(RANDOM_PREFIX):
        hidden = PRESETS.get(name_or_path[len(RANDOM_PREFIX) :], {}).get("hidden_size")
    elif os.path.isfile(os.path.join(name_or_path, "config.json")):
        import json

        with open(os.path.join(name_or_path, "config.json"), encoding="utf-8") as f:
            hidden = json.load(f).get("hidden_size")
    if hidden is not None and hidden <= TINY_HIDDEN_SIZE:
        torch.set_num_threads(1)
        print(
            f"CPU training of a tiny model (hidden size {hidden}): 1 thread; set OMP_NUM_THREADS to choose"
        )


def main(args: list[str] | None = None, callbacks: Sequence[Callback] = ()) -> SFTCLI:
    """Parse the config, train, and save the adapter or model (rank 0) into the run directory.

    `callbacks` are added to the configured ones (benchmarks and tests observe the real run).
    """
    cli = SFTCLI(
        SFTModule,
        SFTDataModule,
        run=False,
        args=args,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={
            "logger": lazy_instance(TensorBoardLogger, save_dir="logs", name="sft"),
        },
    )
    cli.trainer.callbacks.extend(callbacks)
    ckpt_path = cli.config.get("ckpt_path")
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=_resolve_ckpt(cli, ckpt_path))

    from medsft.export import export, save_trained

    out = save_trained(cli.model, cli.datamodule.tokenizer, cli.trainer)
    if cli.config.get("export") and cli.trainer.is_global_zero:
        if cli.model.finetune != "lora":
            print(f"--export: full fine-tuning already saved a standalone model in {out}")
        else:
            export(out, out.parent / "merged")
    return cli


def _resolve_ckpt(cli: SFTCLI, ckpt_path: str | None) -> str | None:
    """'last' means the newest last.ckpt under this run name's versions (a new version logs)."""
    if ckpt_path != "last":
        return ckpt_path
    import glob

    logger = cli.trainer.logger
    pattern = os.path.join(logger.save_dir, logger.name, "version_*", "checkpoints", "last.ckpt")
    found = sorted(glob.glob(pattern), key=os.path.getmtime)
    if not found:
        sys.exit(f"--ckpt_path last: no checkpoint matches {pattern}; start without --ckpt_path")
    print(f"resuming from {found[-1]}")
    return found[-1]


if __name__ == "__main__":
    from medsft.model import HubUnreachable

    try:
        main()
    except HubUnreachable as err:
        sys.exit(f"error: {err}")
