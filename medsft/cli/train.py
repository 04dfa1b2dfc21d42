"""`python train.py` / `python -m medsft.cli.train`: the training command (LightningCLI).

`SFTCLI` ties the data's tokenizer to the model's and adds `--ckpt_path` (a path or `last`),
`--allow_changed` and `--export`. `main` parses, checks the run can start (checkpoint folder
writable and big enough, hub sources reachable), resumes into the checkpoint's own version
folder as the same experiment (medsft.training.runs), trains with preemption handling
(medsft.training.preemption), and saves the adapter or model.
"""

from __future__ import annotations

import os
import sys
from argparse import SUPPRESS, ArgumentTypeError
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jsonargparse import lazy_instance
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import Checkpoint, TQDMProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import TensorBoardLogger

from medsft.cli.errors import add_debug_argument
from medsft.cli.parsing import OneLineErrors
from medsft.data import SFTDataModule
from medsft.training import runs
from medsft.training.checkpoint import RunCheckpoint
from medsft.training.module import SFTModule
from medsft.training.samples import SampleAnswers

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
# Models up to this width train on one CPU thread unless OMP_NUM_THREADS says otherwise.
TINY_HIDDEN_SIZE = 256


def _tokenizer_of(name_or_path: str, tokenizer: str | None) -> str:
    return tokenizer or name_or_path


class TrainParser(OneLineErrors, LightningArgumentParser):
    """LightningCLI's parser with one-line command-line errors (medsft.cli.parsing)."""


class SFTCLI(LightningCLI):
    """LightningCLI with the data's tokenizer tied to the model's, and resume/export options."""

    resume: runs.CheckpointInfo | None = None
    """The checkpoint this run continues from, resolved before the classes are built."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # The optimizer and schedule are model.optimizer (medsft.training.optim); LightningCLI's
        # own --optimizer/--lr_scheduler would be ignored or fight it.
        from medsft.training.fsdp import register_strategy

        register_strategy()  # `--trainer.strategy fsdp2` (configs/full.yaml)
        super().__init__(*args, auto_configure_optimizers=False, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        # Always there, configurable as --checkpoint.*: last.ckpt every every_n_minutes of
        # training and every every_n_train_steps, which `--ckpt_path last` reads.
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
        # Sample answers in TensorBoard at each validation (--samples.n 0: off).
        parser.add_lightning_class_args(SampleAnswers, "samples")
        # One source of truth: the data is tokenized with the model's tokenizer.
        parser.link_arguments(
            ("model.name_or_path", "model.tokenizer"), "data.tokenizer", compute_fn=_tokenizer_of
        )
        parser.add_argument(
            "--ckpt_path",
            type=str | None,
            default=None,
            help="resume: a checkpoint path, or 'last' for this run name's latest checkpoint "
            "(a requeued SLURM job resumes from 'last' by itself)",
        )
        parser.add_argument(
            "--allow_changed",
            type=str | None,
            default=None,
            help="on resume, comma-separated config keys (or sections, e.g. data) allowed to "
            "differ from the checkpoint's, e.g. --allow_changed data.batch_size,data.seed",
        )
        add_debug_argument(parser)
        # Run configs saved before LightningCLI's automatic optimizer arguments were turned off
        # hold `optimizer: null` and `lr_scheduler: null`: still read as --config, null only (the
        # optimizer is model.optimizer), and neither in --help nor in new configs.
        for legacy in ("--optimizer", "--lr_scheduler"):
            parser.add_argument(legacy, type=_null_only, default=None, help=SUPPRESS)
        parser.add_argument(
            "--export",
            type=bool,
            default=False,
            help="after training, merge the adapter into a standalone model in <run>/merged",
        )

    def before_instantiate_classes(self) -> None:
        """Fail in seconds, not after GPU setup: a strategy that cannot work, an unreachable
        hub source, a checkpoint that is missing or not plain data. A resume logs into the
        checkpoint's own version folder."""
        from medsft.data import is_local
        from medsft.model.build import check_source, ensure_hub_reachable, is_hub_id
        from medsft.training.fsdp import validate_strategy

        config = self.config
        validate_strategy(config.trainer.strategy, config.model.finetune, config.model.quantize)
        choose_cpu_threads(config.model.name_or_path, config.trainer.accelerator)
        for name in {config.model.name_or_path, config.model.tokenizer or ""} - {""}:
            check_source(name)
            if is_hub_id(name):
                ensure_hub_reachable(name)
        for source in (config.data.source, config.data.val_source):
            if source and not is_local(source):
                ensure_hub_reachable(source, repo_type="dataset", probe="README.md")
        self._resolve_resume()

    def _resolve_resume(self) -> None:
        from medsft.training.preemption import slurm_job_id

        config = self.config
        logger_args = _logger_args(config)
        ckpt_path = config.get("ckpt_path")
        requeued = ckpt_path is None and slurm_job_id() is not None and _slurm_restarts() > 0
        found = runs.find_checkpoint(
            "last" if requeued else ckpt_path,
            dirpath=config.checkpoint.get("dirpath"),
            save_dir=(logger_args or {}).get("save_dir"),
            name=(logger_args or {}).get("name"),
            required=not requeued,
        )
        if found is None:
            return
        self.resume = runs.read_checkpoint(found)
        if logger_args is None:
            return
        save_dir, name = logger_args.get("save_dir"), logger_args.get("name")
        version = runs.version_of(found, save_dir, name)
        if version is None and self.resume.log_dir is not None:  # --checkpoint.dirpath elsewhere
            version = runs.run_version(self.resume.log_dir, save_dir, name)
        if version is not None and "version" in logger_args:
            # The logger's own options (public): the same folder, and for TensorBoard, events
            # the stopped run logged after this checkpoint hidden rather than drawn twice.
            logger_args["version"] = version
            if "purge_step" in logger_args and logger_args.get("purge_step") is None:
                logger_args["purge_step"] = self.resume.step


def _logger_args(config: Any) -> Any:
    """The init_args of a single configured logger (a class_path), else None."""
    logger = config.trainer.get("logger")
    if logger is None or isinstance(logger, bool | list) or "init_args" not in logger:
        return None
    return logger.init_args


def _slurm_restarts() -> int:
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    except ValueError:
        return 0


class RunConfig(SaveConfigCallback):
    """Saves the resolved config into the run folder, never over an earlier one: a resumed
    run writes `config.resume-K.yaml`, headed by what it changed."""

    changes: runs.Changes | None = None
    """Set for a resumed run: the allowed differences from the checkpoint's config."""
    resumed_from: runs.CheckpointInfo | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # trainer.log_dir is a collective under DDP: every rank asks for it, here.
        self._log_dir = trainer.log_dir
        if self.resumed_from is not None and not self.already_saved:
            # Decided on rank 0 and broadcast: every rank must agree on the file name.
            name = runs.resume_config_name(self._log_dir) if trainer.is_global_zero else ""
            self.config_filename = trainer.strategy.broadcast(name)
        super().setup(trainer, pl_module, stage)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.resumed_from is None:
            return
        path = Path(self._log_dir) / self.config_filename
        header = (
            f"# Resumed from {self.resumed_from.path} at step {self.resumed_from.step}; "
            f"changed: {self.changes.describe() if self.changes else 'nothing'}\n"
        )
        path.write_text(header + path.read_text(encoding="utf-8"), encoding="utf-8")


class NewLearningRate(Callback):
    """`--allow_changed model.optimizer.lr` on resume: the restored optimizer and schedule
    would keep the checkpoint's learning rate; scale them to the new one."""

    def __init__(self, old: float, new: float) -> None:
        self.ratio = new / old

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        for config in trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            scheduler.base_lrs = [lr * self.ratio for lr in scheduler.base_lrs]
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] *= self.ratio
                if "initial_lr" in group:
                    group["initial_lr"] *= self.ratio


def main(args: list[str] | None = None, callbacks: Sequence[Callback] = ()) -> SFTCLI:
    """Parse the config, train, and save the adapter or model (rank 0) into the run directory.

    Args:
        args: the command line (None: sys.argv).
        callbacks: added to the configured ones (benchmarks and tests observe the real run).
    """
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from medsft.errors import ConfigError
    from medsft.training.preemption import Preempted, exit_code, signals_deferred

    args = config_by_name(args)
    try:
        cli = SFTCLI(
            SFTModule,
            SFTDataModule,
            run=False,
            args=args,
            seed_everything_default=0,
            save_config_callback=RunConfig,
            save_config_kwargs={"overwrite": False},
            parser_class=TrainParser,
            trainer_defaults={
                "logger": lazy_instance(TensorBoardLogger, save_dir="logs", name="sft"),
            },
        )
    except MisconfigurationException as err:  # the Trainer refusing one of its arguments
        raise ConfigError(f"trainer: {err}") from err
    trainer = cli.trainer
    resume = cli.resume
    _record_config(cli)
    finished = _finished(resume, trainer.max_steps)
    if finished and trainer.world_size == 1 and _final_folder_complete(cli):
        return cli
    trainer.callbacks.extend(callbacks)
    _safeguard(cli)
    if trainer.progress_bar_callback is not None:
        trainer.callbacks = [c for c in trainer.callbacks if c is not trainer.progress_bar_callback]
        trainer.callbacks.append(StepProgressBar())
    try:
        trainer.fit(
            cli.model,
            datamodule=cli.datamodule,
            ckpt_path=str(resume.path) if resume else None,
            weights_only=True,
        )
    except Preempted:
        raise
    except SIGTERMException:
        # Lightning's own SIGTERM handling, before training started: no step to save.
        raise SystemExit(exit_code(15)) from None
    except BaseException:
        runs.remove_empty_run(
            _log_dir(trainer), step=trainer.global_step, resumed=resume is not None
        )
        raise

    from medsft.cli.export import export, save_trained

    if finished and trainer.world_size > 1 and _final_folder_complete(cli):  # ranks agree now
        return cli
    with signals_deferred("the final checkpoint and model"):
        if resume is None or resume.step is None or trainer.global_step > resume.step:
            _checkpoint_the_end(trainer)
        out = save_trained(cli.model, cli.datamodule.tokenizer, trainer)
    if cli.config.get("export") and trainer.is_global_zero:
        if cli.model.finetune != "lora":
            print(f"--export: full fine-tuning already saved a standalone model in {out}")
        else:
            export(out, out.parent / "merged")
    return cli


def _record_config(cli: SFTCLI) -> None:
    """Compare a resume with its checkpoint's config (medsft.training.runs.compare_configs) and make
    every checkpoint of this run carry its own."""
    import yaml

    saver = next((c for c in cli.trainer.callbacks if isinstance(c, RunConfig)), None)
    resolved = yaml.safe_load(cli.parser.dump(cli.config, skip_unset=False))
    experiment = runs.experiment_config(resolved, cli.trainer.world_size)
    resume = cli.resume
    changes = None
    if resume is not None:
        if resume.config is None:
            print(
                f"{resume.path} stores no config (written by an older medsft): the resumed "
                "config is not compared with it",
                flush=True,
            )
        else:
            allow = [k.strip() for k in (cli.config.allow_changed or "").split(",") if k.strip()]
            changes = runs.compare_configs(resume.config, experiment, allow)
            if changes.allowed:
                print(f"resuming with changes: {changes.describe()}", flush=True)
            for key, old, new in changes.allowed:
                if key == "model.optimizer.lr":
                    cli.trainer.callbacks.append(NewLearningRate(old, new))
                if key == "trainer.max_steps" and cli.config.model.optimizer.schedule == "cosine":
                    # The schedule is a function of max_steps (medsft.training.module): say that the
                    # learning rate from here on follows the new length.
                    print(
                        f"trainer.max_steps {old} -> {new}: the cosine learning-rate schedule "
                        f"now decays over {new} steps; from step {resume.step} on the rate "
                        "follows that longer curve (train/lr shows it)",
                        flush=True,
                    )
    if saver is not None:
        saver.resumed_from, saver.changes = resume, changes
    cli.trainer.callbacks.append(StoreConfig(experiment))


class StoreConfig(Callback):
    """Every checkpoint carries the config it was trained with and its run folder
    (medsft.training.runs.CONFIG_KEY)."""

    def __init__(self, experiment: dict[str, Any]) -> None:
        """
        Args:
            experiment: the flattened config (medsft.training.runs.experiment_config).
        """
        self.experiment = experiment
        self.log_dir: str | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # trainer.log_dir is a collective under DDP: asked once here, by every rank.
        log_dir = trainer.log_dir
        self.log_dir = str(Path(log_dir).resolve()) if log_dir else None

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[runs.CONFIG_KEY] = {"config": self.experiment, "log_dir": self.log_dir}


def _finished(resume: runs.CheckpointInfo | None, max_steps: int) -> bool:
    """Whether the checkpoint resumed from is at the last step already."""
    return (
        resume is not None
        and resume.step is not None
        and max_steps > 0
        and resume.step >= max_steps
    )


def _final_folder_complete(cli: SFTCLI) -> bool:
    """For a run resumed at its last step: say there is nothing to train when its `model/` or
    `adapter/` is whole (True), or that it will be written again from the checkpoint (False).
    Before training, one process looks; after it, every rank takes rank 0's answer."""
    from medsft.cli.export import trained_folder
    from medsft.model.trained import missing_files

    trainer, resume = cli.trainer, cli.resume
    logger = trainer.logger
    if logger is None:
        return True  # no run folder: nothing was ever written there
    folder = trained_folder(logger.log_dir, cli.model.finetune)
    if folder.is_dir():
        lacking = missing_files(folder)
        problem = f"has no {lacking}" if lacking else None
    else:
        problem = "is missing"
    if trainer.world_size > 1:
        problem = trainer.strategy.broadcast(problem)
    if problem is None:
        print(
            f"{resume.path} is at step {resume.step}, and trainer.max_steps is "
            f"{trainer.max_steps}: nothing to train. Raise --trainer.max_steps to continue.",
            flush=True,
        )
        return True
    if trainer.is_global_zero:
        print(
            f"{resume.path} is at the last step ({resume.step}), but {folder} {problem} (the "
            "run was stopped while saving it): writing it from the checkpoint",
            flush=True,
        )
    return False


def _log_dir(trainer: Trainer) -> str | None:
    return trainer.logger.log_dir if trainer.logger is not None and trainer.is_global_zero else None


def config_by_name(args: list[str] | None) -> list[str] | None:
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


def _insert_before_checkpoints(trainer: Trainer, callback: Callback) -> None:
    """Run `callback`'s batch-end hook before checkpoints are written at that batch, so what
    it updates (data counters) is in the checkpoint of the same step."""
    at = next(
        (i for i, c in enumerate(trainer.callbacks) if isinstance(c, Checkpoint)),
        len(trainer.callbacks),
    )
    trainer.callbacks.insert(at, callback)


def _safeguard(cli: SFTCLI) -> None:
    """Checkpoints written whole (medsft.training.checkpoint) into a folder checked writable and big
    enough now; data counters (truncation, drops) logged as they happen and an epoch without
    data stopped; signals end training with a checkpoint (medsft.training.preemption)."""
    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

    from medsft.training.checkpoint import FreeSpaceCheck, SafeCheckpointIO, check_writable
    from medsft.training.datastats import DataMonitor
    from medsft.training.preemption import Preemption

    trainer = cli.trainer
    if trainer.checkpoint_callback is not None:
        folder = trainer.checkpoint_callback.dirpath
        if folder is None and trainer.logger is not None:
            # The run's version folder is not chosen yet; its parent must be writable.
            folder = os.path.join(
                trainer.logger.save_dir or trainer.default_root_dir, trainer.logger.name or ""
            )
        folder = folder or trainer.default_root_dir
        check_writable(folder)
        trainer.callbacks.append(FreeSpaceCheck(folder))
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # not a user's own plugin
        trainer.strategy.checkpoint_io = SafeCheckpointIO()
    _insert_before_checkpoints(trainer, DataMonitor())
    _insert_before_checkpoints(trainer, Preemption())


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

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        bar = self.train_progress_bar
        if trainer.global_step != bar.n:
            bar.n = trainer.global_step
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=True)


def choose_cpu_threads(name_or_path: str, accelerator: Any) -> None:
    """One intra-op thread for a tiny model trained on CPU, when the user has not chosen.

    Measured on a 2-core machine (benchmarks/results/demo_threads.json): a `random:tiny` step's
    matrices are too small to split, torch's default of one thread per core gains nothing on an
    idle machine, and when anything else runs on a core, threads that spin-wait for a descheduled
    sibling make each step about 2x slower. Larger models keep torch's default.
    """
    import torch

    from medsft.model.build import PRESETS, RANDOM_PREFIX

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


def _null_only(value: Any) -> None:
    """The type of the retired --optimizer/--lr_scheduler: null, as older run configs hold."""
    if value in (None, "null", "None"):
        return None
    raise ArgumentTypeError(
        f"{value!r}: the optimizer and its schedule are model.optimizer "
        "(e.g. --model.optimizer.name adamw --model.optimizer.lr 2e-4)"
    )


def _checkpoint_the_end(trainer: Any) -> None:
    """last.ckpt at the final step, so resuming a finished run says there is nothing to do."""
    callback = trainer.checkpoint_callback
    if isinstance(callback, RunCheckpoint):
        callback.save_last_now(trainer)
    elif callback is not None and callback.dirpath is not None:
        trainer.save_checkpoint(os.path.join(callback.dirpath, "last.ckpt"))


def cli_main(argv: list[str] | None = None) -> None:
    """The command line entry point: train under medsft's error policy."""
    from medsft.cli.errors import run

    run(main, argv)


if __name__ == "__main__":
    cli_main()
