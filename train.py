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
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from jsonargparse import lazy_instance  # noqa: E402
from lightning.pytorch import Callback  # noqa: E402
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar  # noqa: E402
from lightning.pytorch.cli import LightningCLI  # noqa: E402
from lightning.pytorch.loggers import TensorBoardLogger  # noqa: E402

from medsft.data import SFTDataModule  # noqa: E402
from medsft.errors import ConfigError  # noqa: E402
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
        from medsft.fsdp import validate_strategy
        from medsft.model import check_source, ensure_hub_reachable, is_hub_id

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
    args = _config_by_name(args)
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
    trainer = cli.trainer
    trainer.callbacks.extend(callbacks)
    _safeguard(cli)
    resume = _resolve_ckpt(cli, cli.config.get("ckpt_path"))
    if resume is not None and _continue_run(cli, resume) == "done":
        return cli
    if trainer.progress_bar_callback is not None:
        trainer.callbacks = [c for c in trainer.callbacks if c is not trainer.progress_bar_callback]
        trainer.callbacks.append(StepProgressBar())
    try:
        trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=resume)
    except BaseException:
        _remove_empty_run(trainer, resumed=resume is not None)
        raise

    _checkpoint_the_end(trainer)
    from medsft.export import export, save_trained

    out = save_trained(cli.model, cli.datamodule.tokenizer, trainer)
    if cli.config.get("export") and trainer.is_global_zero:
        if cli.model.finetune != "lora":
            print(f"--export: full fine-tuning already saved a standalone model in {out}")
        else:
            export(out, out.parent / "merged")
    return cli


CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def _config_by_name(args: list[str] | None) -> list[str] | None:
    """`--config lora.yaml` (or `lora`) not in the working directory: the one in configs/.

    Rewrites the arguments (sys.argv when `args` is None, so DDP workers re-launched from it
    agree) and says which file it used.
    """
    argv = sys.argv[1:] if args is None else list(args)
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            at, prefix = i + 1, ""
        elif arg.startswith("--config="):
            at, prefix = i, "--config="
        else:
            continue
        name = argv[at][len(prefix) :]
        if os.path.exists(name) or os.path.dirname(name):
            continue
        for candidate in (CONFIG_DIR / name, CONFIG_DIR / f"{name}.yaml"):
            if candidate.is_file():
                print(f"--config {name}: using {candidate}", flush=True)
                argv[at] = f"{prefix}{candidate}"
                break
    if args is None:
        sys.argv[1:] = argv
        return None
    return argv


def _safeguard(cli: SFTCLI) -> None:
    """Checkpoints written whole (medsft.checkpoint) into a folder checked writable now; data
    counters (truncation, drops) logged as they happen and an epoch without data stopped."""
    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

    from medsft.checkpoint import SafeCheckpointIO, check_writable
    from medsft.datastats import DataMonitor

    trainer = cli.trainer
    if trainer.checkpoint_callback is not None:
        folder = trainer.checkpoint_callback.dirpath
        if folder is None and trainer.logger is not None:
            # The run's version folder is not chosen yet; its parent must be writable.
            folder = os.path.join(
                trainer.logger.save_dir or trainer.default_root_dir, trainer.logger.name or ""
            )
        check_writable(folder or trainer.default_root_dir)
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # not a user's own plugin
        trainer.strategy.checkpoint_io = SafeCheckpointIO()
    trainer.callbacks.append(DataMonitor())


class StepProgressBar(TQDMProgressBar):
    """Optimizer steps out of max_steps, continuing across epochs and resumes.

    Lightning's bar counts batches per epoch, which a stream of unknown length shows as
    "Epoch 1/-2" and, after a resume, "28/20".
    """

    def on_train_epoch_start(self, trainer: Any, *_: Any) -> None:
        bar = self.train_progress_bar
        if bar.total is None or bar.total != trainer.max_steps:
            bar.reset(total=trainer.max_steps if trainer.max_steps > 0 else None)
            bar.initial = trainer.global_step
        bar.set_description(f"step (epoch {trainer.current_epoch})")

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:  # fmt: skip
        bar = self.train_progress_bar
        if trainer.global_step != bar.n:
            bar.n = trainer.global_step
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=True)


def _resolve_ckpt(cli: SFTCLI, ckpt_path: str | None) -> str | None:
    """`last`: the newest last.ckpt of this experiment: in `checkpoint.dirpath` when set, else
    under this run name's versions. A checkpoint that cannot be read falls back to the one kept
    before it (medsft.checkpoint.usable_checkpoint)."""
    import glob

    from medsft.checkpoint import usable_checkpoint

    if ckpt_path != "last":
        return None if ckpt_path is None else str(usable_checkpoint(ckpt_path))

    dirpath = cli.config.checkpoint.get("dirpath")
    if dirpath:
        pattern = os.path.join(dirpath, "last.ckpt")
    else:
        logger = cli.trainer.logger
        pattern = os.path.join(
            logger.save_dir, logger.name, "version_*", "checkpoints", "last.ckpt"
        )
    found = sorted(glob.glob(pattern), key=os.path.getmtime)
    if not found:
        raise ConfigError(
            f"--ckpt_path last: no checkpoint matches {pattern}; start without --ckpt_path"
        )
    print(f"resuming from {found[-1]}")
    return str(usable_checkpoint(found[-1]))


def _continue_run(cli: SFTCLI, ckpt: str) -> str | None:
    """Log into the checkpoint's own version folder (one unbroken TensorBoard curve), or say
    that the run is already complete."""
    import re

    step = _checkpoint_step(ckpt)
    max_steps = cli.trainer.max_steps
    if step is not None and max_steps > 0 and step >= max_steps:
        print(f"{ckpt} is at step {step}, and trainer.max_steps is {max_steps}: nothing to "
              "train. Raise --trainer.max_steps to continue.")  # fmt: skip
        return "done"
    logger = cli.trainer.logger
    run_dir = os.path.dirname(os.path.dirname(os.path.abspath(ckpt)))
    version = re.fullmatch(r"version_(\d+)", os.path.basename(run_dir))
    same_run = os.path.abspath(os.path.join(logger.save_dir, logger.name)) == os.path.dirname(
        run_dir
    )
    if isinstance(logger, TensorBoardLogger) and version and same_run:
        logger._version = int(version.group(1))
        # Events the killed run logged after this checkpoint are hidden, not drawn twice.
        if logger._kwargs.get("purge_step") is None:
            logger._kwargs["purge_step"] = step
    return None


def _checkpoint_the_end(trainer: Any) -> None:
    """last.ckpt at the final step, so resuming a finished run says there is nothing to do."""
    callback = trainer.checkpoint_callback
    if callback is None or not callback.save_last or callback.dirpath is None:
        return
    last = os.path.join(callback.dirpath, "last.ckpt")
    if (
        trainer.global_step > 0
        and callback.last_model_path != last
        or (os.path.exists(last) and _checkpoint_step(last) != trainer.global_step)
    ):
        trainer.save_checkpoint(last)


def _checkpoint_step(path: str) -> int | None:
    """The optimizer step a checkpoint file was saved at (read lazily, not the weights)."""
    import torch

    if not os.path.isfile(path):
        return None
    return torch.load(path, map_location="cpu", mmap=True, weights_only=False)["global_step"]


def _remove_empty_run(trainer: Any, *, resumed: bool) -> None:
    """A run that failed before its first step leaves no version folder behind."""
    import shutil

    logger = trainer.logger
    if resumed or trainer.global_step > 0 or not trainer.is_global_zero or logger is None:
        return
    version = getattr(logger, "_version", None)
    if version is not None and os.path.isdir(logger.log_dir):
        shutil.rmtree(logger.log_dir, ignore_errors=True)


def _one_line(err: BaseException) -> str:
    """The last line of a message: a DataLoader worker's error carries its traceback."""
    import re

    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    if len(lines) > 1:  # "module.Class: message", the traceback's last line
        return re.sub(r"^[\w.]+: ", "", lines[-1])
    return lines[0] if lines else type(err).__name__


if __name__ == "__main__":
    from medsft.console import quiet_known_noise
    from medsft.errors import UserError

    quiet_known_noise()
    try:
        main()
    except UserError as err:
        sys.exit(f"error: {_one_line(err)}")
