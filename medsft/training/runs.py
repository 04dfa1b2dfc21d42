"""A training run across resumes: which checkpoint, which version folder, the same experiment.

- `find_checkpoint` turns `--ckpt_path last` into this experiment's newest `last.ckpt` (and a
  path into the last good checkpoint, see medsft.training.checkpoint.usable_checkpoint).
- `read_checkpoint` reads a checkpoint's step and the config it was trained with, with
  `weights_only=True`: a checkpoint is data, and a crafted one never runs code.
- `version_of` says which `version_N` folder a checkpoint belongs to, so the resumed run logs
  there (one TensorBoard curve) instead of a new folder.
- `compare_configs` decides whether a resume is the same experiment. A key that changes what is
  trained stops the run unless named in `--allow_changed`; bookkeeping keys are allowed and
  recorded. The run's first `config.yaml` is never rewritten: each resume saves its own config
  as `config.resume-K.yaml` with what changed (`resume_config_name`, `latest_config`).

Nothing here imports torch or Lightning at module level: the evaluation's ablation table reads
run configs through `latest_config` without them.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medsft.errors import ConfigError, InputError

CONFIG_KEY = "medsft_run"
"""Where a checkpoint keeps the flattened config it was trained with, and the world size."""
FIRST_CONFIG = "config.yaml"
RESUME_CONFIG = "config.resume-{}.yaml"
_RESUME_CONFIG = re.compile(r"config\.resume-(\d+)\.yaml")

NOT_COMPARED = (
    "trainer.logger",
    "trainer.callbacks",
    "trainer.devices",
    "trainer.num_nodes",
    "trainer.accelerator",
    "trainer.default_root_dir",
    "ckpt_path",
    "allow_changed",
    "config",
    "debug",
)
"""Bookkeeping: where the run logs and how it is launched (the world size is compared as such)."""
SAFE = (
    "trainer.max_steps",
    "trainer.max_epochs",
    "trainer.max_time",
    "trainer.min_steps",
    "trainer.min_epochs",
    "trainer.log_every_n_steps",
    "trainer.val_check_interval",
    "trainer.check_val_every_n_epoch",
    "trainer.limit_val_batches",
    "trainer.num_sanity_val_steps",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.profiler",
    "checkpoint.",
    "samples.",
    "export",
    "data.num_workers",
    "data.val_source",
)
"""Keys a resume may change without changing what is trained: allowed, printed and recorded.
Every other key (model, fine-tuning mode, LoRA, quantization, data, seeds, accumulation,
optimizer, precision, strategy, world size) changes the experiment."""
IGNORED_BY_RESTORE = (
    "model.optimizer.name",
    "model.optimizer.betas",
    "model.optimizer.weight_decay",
)
"""Held in the restored optimizer state: a new value would not take effect, so it is refused
even when allowed (`model.optimizer.lr` is applied to the restored state instead)."""

ADDED_SINCE = {"data.encoding": "utf-8"}
"""Keys added after checkpoints began storing their config, each with the value that does what
runs before it did: a checkpoint without the key compares as if it had that value."""


@dataclass
class CheckpointInfo:
    """What a resume needs to know about a checkpoint before training."""

    path: Path
    step: int | None
    """The optimizer step it was saved at (None: a distributed checkpoint, not read here)."""
    config: dict[str, Any] | None = None
    """The flattened config it was trained with (None: saved by an older medsft)."""
    log_dir: str | None = None
    """The run folder (`version_N`) it was trained in, wherever the checkpoint itself lies
    (`--checkpoint.dirpath`); None: saved by an older medsft."""


@dataclass
class Changes:
    """How a resume's config differs from the checkpoint's: (key, old, new) triples."""

    allowed: list[tuple[str, Any, Any]] = field(default_factory=list)

    def describe(self) -> str:
        """`key: old -> new, ...`, or `nothing` when the configs agree."""
        return ", ".join(f"{k}: {o!r} -> {n!r}" for k, o, n in self.allowed) or "nothing"


class ResumeMismatch(ConfigError):
    """`--ckpt_path` with a config that changes the experiment the checkpoint belongs to."""


def find_checkpoint(
    ckpt_path: str | None,
    *,
    dirpath: str | None,
    save_dir: str | None,
    name: str | None,
    required: bool = True,
) -> Path | None:
    """The checkpoint to resume from: `ckpt_path`, or for `last` this experiment's newest
    last.ckpt (in `dirpath` when set, else under `<save_dir>/<name>/version_*`; the
    `last-vN.ckpt` that older medsft versions wrote after a resume count too).

    Args:
        ckpt_path: a path, `last`, or None (no resume).
        dirpath: the configured `--checkpoint.dirpath`, if any.
        save_dir: the logger's save_dir.
        name: the logger's run name.
        required: for `last`: raise when nothing is found (False: return None, as a requeued
            job that was preempted before its first checkpoint starts afresh).

    Raises:
        ConfigError: `last` with no checkpoint found (when required).
        CheckpointError: neither the checkpoint nor the one kept before it is usable.
    """
    from medsft.training.checkpoint import usable_checkpoint

    if ckpt_path is None:
        return None
    if ckpt_path != "last":
        return usable_checkpoint(ckpt_path)
    if dirpath:
        pattern = os.path.join(dirpath, "last.ckpt")
    else:
        pattern = os.path.join(save_dir or ".", name or "", "version_*", "checkpoints", "last.ckpt")
    found = sorted(
        glob.glob(pattern) + glob.glob(pattern.removesuffix(".ckpt") + "-v*.ckpt"),
        key=os.path.getmtime,
    )
    if not found:
        if not required:
            return None
        raise ConfigError(
            f"--ckpt_path last: no checkpoint matches {pattern}; start without --ckpt_path"
        )
    print(f"resuming from {found[-1]}", flush=True)
    return usable_checkpoint(found[-1])


def read_checkpoint(path: str | Path) -> CheckpointInfo:
    """A checkpoint's step and stored config, read as data only (`weights_only=True`).

    Raises:
        CheckpointError: the file holds objects beyond tensors and plain data (refused without
            running anything), or cannot be read.
    """
    import pickle

    import torch

    from medsft.training.checkpoint import CheckpointError

    path = Path(path)
    if path.is_dir():  # an FSDP2 distributed checkpoint: read by Lightning itself, sharded
        return CheckpointInfo(path, None)
    try:
        state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"refusing checkpoint {path}: it holds Python objects other than tensors and plain "
            f"data, which loading could execute ({_first_line(err)}); use a checkpoint written "
            "by medsft"
        ) from None
    except (OSError, RuntimeError) as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {_first_line(err)}") from None
    stored = state.get(CONFIG_KEY) or {}
    return CheckpointInfo(
        path, int(state["global_step"]), stored.get("config"), stored.get("log_dir")
    )


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def version_of(checkpoint: str | Path, save_dir: str | None, name: str | None) -> int | None:
    """N when `checkpoint` is `<save_dir>/<name>/version_N/checkpoints/<file>`, else None."""
    return run_version(Path(checkpoint).absolute().parent.parent, save_dir, name)


def run_version(run_dir: str | Path, save_dir: str | None, name: str | None) -> int | None:
    """N when `run_dir` is `<save_dir>/<name>/version_N`, else None."""
    run_dir = Path(run_dir).resolve()
    found = re.fullmatch(r"version_(\d+)", run_dir.name)
    if found and run_dir.parent == Path(save_dir or ".", name or "").resolve():
        return int(found.group(1))
    return None


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as dotted keys (`model.lora.r`); lists and empty dicts stay values."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, dotted))
        else:
            flat[dotted] = list(value) if isinstance(value, tuple) else value
    return flat


def experiment_config(resolved: Mapping[str, Any], world_size: int) -> dict[str, Any]:
    """What a checkpoint stores: the resolved config flattened, without bookkeeping keys, plus
    the world size (which changes how the data is sharded and the global batch)."""
    flat = {k: v for k, v in flatten(resolved).items() if not _matches(k, NOT_COMPARED)}
    flat["world_size"] = world_size
    return flat


def _matches(key: str, prefixes: Iterable[str]) -> bool:
    return any(key == p or key.startswith(p if p.endswith(".") else p + ".") for p in prefixes)


def compare_configs(
    old: Mapping[str, Any], new: Mapping[str, Any], allow: Iterable[str] = ()
) -> Changes:
    """Check that `new` continues the experiment `old` describes.

    Args:
        old: the checkpoint's stored config (`experiment_config`).
        new: this run's.
        allow: keys (or dotted prefixes, e.g. `data`) the user changes on purpose.

    Returns:
        The allowed differences, to print and record.

    Raises:
        ResumeMismatch: one line listing each difference not allowed (old -> new) and the
            option that allows them.
    """
    allow = list(allow)
    old = {**{k: v for k, v in ADDED_SINCE.items() if k in new}, **old}
    keys = sorted(set(old) | set(new))
    diffs = [(k, old.get(k), new.get(k)) for k in keys if not same_value(old.get(k), new.get(k))]
    stuck = [d for d in diffs if _matches(d[0], IGNORED_BY_RESTORE)]
    if stuck:
        listed = ", ".join(f"{k}: {o!r} -> {n!r}" for k, o, n in stuck)
        raise ResumeMismatch(
            f"the checkpoint's optimizer state keeps its own settings, so these changes would "
            f"not take effect: {listed}; resume with the old values or start a new run without "
            "--ckpt_path"
        )
    refused = [d for d in diffs if not _matches(d[0], SAFE) and not _matches(d[0], allow)]
    if refused:
        listed = ", ".join(f"{k}: {o!r} -> {n!r}" for k, o, n in refused)
        keys_arg = ",".join(k for k, _, _ in refused)
        raise ResumeMismatch(
            f"resuming with a changed experiment: {listed}; resume with the checkpoint's "
            f"settings, or allow it on purpose with --allow_changed {keys_arg}"
        )
    return Changes(allowed=diffs)


def same_value(old: Any, new: Any) -> bool:
    """Equal, or two spellings of one local path (`./data/x` and `data/x`, or an absolute path),
    compared resolved from the working directory; a glob compares normalised."""
    if old == new:
        return True
    if not (isinstance(old, str) and isinstance(new, str)):
        return False
    if glob.has_magic(old) or glob.has_magic(new):
        return os.path.abspath(old) == os.path.abspath(new)
    return os.path.exists(old) and os.path.exists(new) and os.path.samefile(old, new)


def resume_config_name(run_dir: str | Path) -> str:
    """`config.yaml` for a new run; `config.resume-K.yaml` (the next K) for a resumed one."""
    run_dir = Path(run_dir)
    if not (run_dir / FIRST_CONFIG).exists():
        return FIRST_CONFIG
    taken = [
        int(m.group(1))
        for p in run_dir.glob("config.resume-*.yaml")
        if (m := _RESUME_CONFIG.fullmatch(p.name))
    ]
    return RESUME_CONFIG.format(max(taken, default=0) + 1)


def latest_config(run_dir: str | Path) -> Path | None:
    """The config the run last trained with: its newest `config.resume-K.yaml`, else
    `config.yaml`; None when it has neither."""
    run_dir = Path(run_dir)
    resumes = [
        (int(m.group(1)), p)
        for p in run_dir.glob("config.resume-*.yaml")
        if (m := _RESUME_CONFIG.fullmatch(p.name))
    ]
    if resumes:
        return max(resumes)[1]
    first = run_dir / FIRST_CONFIG
    return first if first.is_file() else None


def read_run_config(run_dir: str | Path) -> dict[str, Any] | None:
    """The config the run last trained with (`latest_config`), read; None when it has none.

    Raises:
        InputError: the file is not YAML (named with its line) or not a mapping of settings.
    """
    import yaml

    path = latest_config(run_dir)
    if path is None:
        return None
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(err, "problem", None) or type(err).__name__
        raise InputError(
            f"{where}: the run's config is not valid YAML ({problem}); fix or restore it"
        ) from None
    if not isinstance(config, dict):
        raise InputError(f"{path}: the run's config is not a mapping of settings")
    return config


def remove_empty_run(log_dir: str | None, *, step: int, resumed: bool) -> None:
    """A run that failed before its first step leaves no version folder behind.

    Args:
        log_dir: the run's folder (`trainer.log_dir`), if the logger made one.
        step: the optimizer steps taken.
        resumed: a resumed run's folder holds earlier steps and is kept.
    """
    import shutil

    if resumed or step > 0 or not log_dir:
        return
    if os.path.isdir(log_dir) and not glob.glob(os.path.join(log_dir, "checkpoints", "*.ckpt")):
        shutil.rmtree(log_dir, ignore_errors=True)
