"""OpenAI-compatible servers: which request fields each kind takes, and how an endpoint is named.

- **Naming an endpoint**: `public_url` (without credentials, safe to store) and `endpoint_key`
  (one spelling per server, for cache keys).
- **Request fields per server kind** (`request_fields`): OpenAI-defined fields as they are;
  settings the API lacks (top_k, min_p, repetition_penalty, do_sample, Qwen3's thinking switch)
  where the server kind takes them: vLLM and SGLang as extra top-level fields, `transformers
  serve` in its `generation_config` JSON string, all three `chat_template_kwargs`. An OpenAI
  server takes none: `UnsupportedSetting` is raised before any request. `server_kind` tells a
  server's kind from its `/models` listing.

The client that sends them is medsft.metrics.endpoint.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from medsft.errors import UserError

log = logging.getLogger(__name__)


OPENAI_URL = "https://api.openai.com/v1"


ServerKind = Literal["openai", "vllm", "sglang", "transformers"]


SERVER_KINDS: tuple[ServerKind, ...] = ("openai", "vllm", "sglang", "transformers")


OPENAI_FIELDS = frozenset(
    {"max_tokens", "max_completion_tokens", "temperature", "top_p", "seed", "stop"}
)
"""The request settings of the OpenAI chat completions API that callers send."""


# Settings the OpenAI API lacks, and their value that asks for nothing (an OpenAI server may
# then be sent nothing). do_sample: the temperature says it (0: greedy) except to `transformers
# serve`, which samples only when the model's generation config or the request says so.
_OFF: dict[str, Any] = {
    "top_k": 0,
    "min_p": 0.0,
    "repetition_penalty": 1.0,
    "enable_thinking": False,
    "do_sample": None,
}


def public_url(base_url: str | None) -> str | None:
    """The URL without credentials, query or trailing slash (safe to show and store)."""
    if base_url is None:
        return None
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


_LOOPBACK = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}


_DEFAULT_PORTS = {"http": 80, "https": 443}


def endpoint_key(base_url: str) -> str:
    """The endpoint as the cache knows it: one spelling for `localhost`, `127.0.0.1`, `[::1]`,
    an explicit default port, letter case and a trailing slash of the same server."""
    parts = urlsplit(base_url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    host = "localhost" if host in _LOOPBACK or host.startswith("127.") else host
    port = parts.port or _DEFAULT_PORTS.get(scheme)
    return f"{scheme}://{host}:{port}{parts.path.rstrip('/')}"


class UnsupportedSetting(UserError, ValueError):
    """A setting the server kind does not take (raised before any request)."""

    def __init__(self, name: str, value: Any, server: str) -> None:
        super().__init__(
            f"{name} = {value!r} is not an OpenAI chat-completions field, and a server of kind "
            f"{server!r} takes no other"
        )
        self.name, self.value, self.server = name, value, server


def request_fields(
    server: ServerKind, settings: Mapping[str, Any], extra_body: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The fields of a request besides model and messages.

    Args:
        server: the server kind, which decides where settings outside the OpenAI API go.
        settings: OpenAI-defined fields (`OPENAI_FIELDS`) and generation settings the API
            lacks: top_k (0: off), min_p, repetition_penalty, do_sample, enable_thinking. None
            values are left out.
        extra_body: sent as written, strings as strings; a top-level key here replaces what
            the settings would send under it (a warning names those settings).

    Raises:
        UnsupportedSetting: a setting the server kind cannot take (an OpenAI server takes
            only the OpenAI fields), unless extra_body sends it.
    """
    fields: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    generate: dict[str, Any] = {}
    user = dict(extra_body or {})
    replaced = []
    for name, value in settings.items():
        if value is None:
            continue
        if name in OPENAI_FIELDS:
            fields[name] = value
            continue
        if name not in _OFF:
            raise KeyError(f"no server takes the request setting {name!r}")
        where = _place(server, name)
        if name in user or where in user:
            replaced.append(name if name in user else f"{name} ({where})")
        elif server == "openai":
            if value != _OFF[name] and name != "do_sample":
                raise UnsupportedSetting(name, value, server)
        elif where == "chat_template_kwargs":
            extra[where] = {name: value}
        elif where == "generation_config":
            generate[name] = value
        elif where is not None:
            # vLLM and SGLang turn top-k off with -1 (and default to the model's own top_k).
            extra[where] = -1 if name == "top_k" and value == 0 else value
    if generate:
        extra["generation_config"] = json.dumps(generate, sort_keys=True)
    if replaced:
        log.warning(
            "extra_body is sent as written; its keys replace what these settings would send "
            "to a %s server: %s",
            server,
            ", ".join(sorted(replaced)),
        )
    extra.update(user)
    if extra:
        fields["extra_body"] = extra
    return fields


def _place(server: ServerKind, name: str) -> str | None:
    """The extra_body key under which `server` takes setting `name` (None: implied)."""
    if name == "enable_thinking":
        return "chat_template_kwargs"
    if server == "transformers":
        return "generation_config"
    return None if name == "do_sample" else name


def server_kind(models: Sequence[Mapping[str, Any]]) -> ServerKind | None:
    """The kind of server a `/models` listing comes from; None when it does not say."""
    owners = {str(m.get("owned_by", "")).lower() for m in models}
    if "vllm" in owners:
        return "vllm"
    if "sglang" in owners:
        return "sglang"
    # `transformers serve` lists whether each model is loaded, a field of its own.
    if any(isinstance(m.get("status"), dict) and "value" in m["status"] for m in models):
        return "transformers"
    return None
