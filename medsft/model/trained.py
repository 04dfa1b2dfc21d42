"""Where a training run keeps what it trained: `adapter/` (LoRA, PEFT format), `model/` (full
fine-tuning, a standalone transformers model) or `merged/` (an export). Paths and JSON only, so
command-line tools can check a run directory before importing torch.

train.py writes `adapter/` and `model/` whole or not at all (medsft.training.checkpoint.
write_folder); a folder that lacks its weights or tokenizer (left by an older medsft stopped
while saving, or copied in part) is refused here in one line rather than failing later inside
transformers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from medsft.errors import UserError

FOLDERS = ("adapter", "model", "merged")
"""A run's trained folders, in the order `resolve_trained` looks for them."""


class IncompleteModel(UserError, FileNotFoundError):
    """A trained folder that lacks files it needs (its weights, its tokenizer)."""

    def __init__(self, folder: Path, lacking: str) -> None:
        """
        Args:
            folder: the trained folder.
            lacking: what it lacks (`missing_files`).
        """
        super().__init__(
            f"{folder} is incomplete: it has no {lacking} (its save was interrupted); write it "
            "again by resuming the run with its command and --ckpt_path last, or export again"
        )
        self.folder = folder


def _holds_model(path: Path) -> bool:
    return (path / "adapter_config.json").exists() or (path / "config.json").exists()


def missing_files(model_dir: str | os.PathLike) -> str | None:
    """What a trained folder lacks to load (None: nothing).

    An adapter needs `adapter_config.json` and its weights; a model needs `config.json`, its
    weights (every shard an index names) and its tokenizer (train.py and export write it there).

    Args:
        model_dir: a folder with adapter_config.json or config.json.
    """
    model_dir = Path(model_dir)
    if (model_dir / "adapter_config.json").exists():
        names = ("adapter_model.safetensors", "adapter_model.bin")
        return None if any((model_dir / n).is_file() for n in names) else "adapter weights"
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (model_dir / index).is_file():
            try:
                shards = set(json.loads((model_dir / index).read_text())["weight_map"].values())
            except (ValueError, KeyError):
                return f"a readable {index}"
            lacking = sorted(s for s in shards if not (model_dir / s).is_file())
            if lacking:
                return f"weight shard {lacking[0]}" + (
                    f" (and {len(lacking) - 1} more)" if len(lacking) > 1 else ""
                )
            break
    else:
        if not any((model_dir / n).is_file() for n in ("model.safetensors", "pytorch_model.bin")):
            return "model weights (model.safetensors)"
    if not (model_dir / "tokenizer_config.json").is_file():
        return "its tokenizer (tokenizer_config.json)"
    return None


def resolve_trained(path: str | os.PathLike) -> Path:
    """The model directory inside a training run (`adapter/` or `model/`), or `path` itself.

    Args:
        path: a run directory (logs/<name>/version_N), its adapter/ or model/, or a merged
            export.

    Raises:
        FileNotFoundError: no trained folder there.
        IncompleteModel: the folder lacks its weights or tokenizer (one line, with the fix).
    """
    path = Path(path)
    found = next(
        (p for p in (path, *(path / sub for sub in FOLDERS)) if _holds_model(p)),
        None,
    )
    if found is None:
        raise FileNotFoundError(
            f"{path} holds no adapter (adapter_config.json) or model (config.json); give a "
            "training run directory (logs/<name>/version_N), its adapter/ or model/, or a "
            "merged export"
        )
    lacking = missing_files(found)
    if lacking is not None:
        raise IncompleteModel(found, lacking)
    return found


def is_adapter(model_dir: str | os.PathLike) -> bool:
    """Whether a directory from `resolve_trained` holds a PEFT adapter (else a whole model).

    Args:
        model_dir: a directory from `resolve_trained`.
    """
    return (Path(model_dir) / "adapter_config.json").exists()


def tokenizer_source(model_dir: str | os.PathLike) -> str:
    """Where a trained model's tokenizer lives: its own files, else its adapter's base model.

    Args:
        model_dir: a directory from `resolve_trained`.
    """
    model_dir = Path(model_dir)
    adapter_config = model_dir / "adapter_config.json"
    if not (model_dir / "tokenizer_config.json").exists() and adapter_config.exists():
        return json.loads(adapter_config.read_text())["base_model_name_or_path"]
    return str(model_dir)
