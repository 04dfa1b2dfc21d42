"""A system's answers, and what identifies a model system's weights (for the caches' keys)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medsft.hub import RANDOM_PREFIX

_HASH_LIMIT = 256 * 2**20  # files up to this size are hashed by content, larger ones by stat


@dataclass
class SystemOutput:
    """A system's answers to the test set and what it cost to get them."""

    name: str
    kind: str
    source: str
    """The resolved path (e.g. the run directory that `latest` picked)."""
    answers: list[str]
    thinks: list[str | None]
    generation: dict[str, Any] = field(default_factory=dict)
    """Model systems: how the answers were generated (or reused), finish reasons, the file."""
    new_tokens: list[int] | None = None
    """Model systems: each answer's generated tokens."""
    perplexity: dict[str, Any] = field(default_factory=dict)
    run_dir: Path | None = None
    model_loaded: bool = False


def model_fingerprint(name_or_path: str) -> dict[str, Any]:
    """What identifies a model's weights: a preset name, a hub commit, or local file digests."""
    if name_or_path.startswith(RANDOM_PREFIX):
        return {"model": name_or_path}  # seeded: rebuilt identically
    path = Path(name_or_path)
    if path.is_dir():
        out: dict[str, Any] = {"files": _dir_fingerprint(path)}
        adapter = path / "adapter_config.json"
        if adapter.exists():
            base = json.loads(adapter.read_text())["base_model_name_or_path"]
            out["base"] = model_fingerprint(base)
        return out
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(name_or_path, "config.json")
    commit = Path(cached).parent.name if isinstance(cached, str) else None
    return {"model": name_or_path, "commit": commit}


def hub_commits(fingerprint: dict[str, Any]) -> list[str | None]:
    """The hub commits a model fingerprint names (its own, its adapter's base's); None: unknown."""
    commits = [fingerprint["commit"]] if "commit" in fingerprint else []
    return commits + (hub_commits(fingerprint["base"]) if "base" in fingerprint else [])


def _file_digest(path: Path) -> str:
    stat = path.stat()
    if stat.st_size > _HASH_LIMIT:
        # Hashing gigabytes of weights on every run costs more than regenerating small sets.
        return f"stat:{stat.st_size}:{stat.st_mtime_ns}"
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(2**20), b""):
            h.update(chunk)
    return h.hexdigest()


def _dir_fingerprint(path: Path) -> dict[str, str]:
    skip = {"tokenizer.json", "vocab.json", "merges.txt", "README.md"}
    return {
        str(f.relative_to(path)): _file_digest(f)
        for f in sorted(path.rglob("*"))
        if f.is_file() and f.name not in skip
    }
