"""OpenAI-compatible endpoints as the judge and endpoint systems name them: a URL safe to store,
and one cache key for every spelling of the same server."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


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
