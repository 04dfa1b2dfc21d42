"""Where a training run keeps what it trained: `adapter/` (LoRA, PEFT format), `model/` (full
fine-tuning, a standalone transformers model) or `merged/` (an export). Paths and JSON only, so
command-line tools can check a run directory before importing torch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def resolve_trained(path: str | os.PathLike) -> Path:
    """The model directory inside a training run (`adapter/` or `model/`), or `path` itself.

    Args:
        path: a run directory (logs/<name>/version_N), its adapter/ or model/, or a merged
            export.
    """
    path = Path(path)
    if (path / "adapter_config.json").exists() or (path / "config.json").exists():
        return path
    for sub in ("adapter", "model", "merged"):
        if (path / sub / "adapter_config.json").exists() or (path / sub / "config.json").exists():
            return path / sub
    raise FileNotFoundError(
        f"{path} holds no adapter (adapter_config.json) or model (config.json); give a training "
        "run directory (logs/<name>/version_N), its adapter/ or model/, or a merged export"
    )


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
