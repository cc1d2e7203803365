"""What the service serves and its limits: `ServiceConfig`, and `HeadSpec` (``NAME``,
``NAME@promoted``, ``NAME@3``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from featcache.data.decode import DEFAULT_MAX_PIXELS
from featcache.errors import ConfigError
from featcache.extractor.fingerprint import check_runtime
from featcache.store.names import HeadSpec

__all__ = ["LOOPBACK_HOSTS", "HeadSpec", "ServiceConfig"]

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


@dataclass(frozen=True)
class ServiceConfig:
    """What the service serves and its limits.

    `head` is a head name or a `HeadSpec` string (``NAME@promoted``, ``NAME@3``). Without a
    `token`, only loopback Host names and `allowed_hosts` are accepted (DNS rebinding). A
    request with an ``Origin`` header (from a web page) is accepted only if that origin's
    host is one of those, or the origin is in `allowed_origins` (``https://app.example``).
    """

    store: Path
    head: str
    weights: Path | None = None
    token: str | None = None
    top_k: int = 5
    max_request_bytes: int = 32 * 1024 * 1024
    max_upload_bytes: int = 10 * 1024 * 1024
    max_files: int = 16
    max_keys: int = 1000
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_request_pixels: int = DEFAULT_MAX_PIXELS
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    access_log: bool = True
    answer_cache_size: int = 50_000
    head_refresh_seconds: float = 2.0
    batch_window_seconds: float = 0.01
    max_batch: int = 64
    runtime: str | None = None  # extraction runtime; None: the head's, else TensorFlow

    def __post_init__(self) -> None:
        for name in (
            "top_k",
            "max_request_bytes",
            "max_upload_bytes",
            "max_files",
            "max_keys",
            "max_pixels",
            "max_request_pixels",
            "max_batch",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"The '{name}' must be >= 1. Got {getattr(self, name)}.")
        if self.answer_cache_size < 0:
            raise ConfigError(
                f"The 'answer_cache_size' must be >= 0 (0 turns the cache off). "
                f"Got {self.answer_cache_size}."
            )
        if self.head_refresh_seconds <= 0 or self.batch_window_seconds < 0:
            raise ConfigError(
                "The 'head_refresh_seconds' must be > 0 and 'batch_window_seconds' >= 0. Got "
                f"{self.head_refresh_seconds} and {self.batch_window_seconds}."
            )
        if self.token is not None and len(self.token) < 16:
            raise ConfigError("The 'token' must have at least 16 characters.")
        for host in self.allowed_hosts:
            if not host or "/" in host or host != host.strip():
                raise ConfigError(f"The 'allowed_hosts' must be host names. Got {host!r}.")
        for origin in self.allowed_origins:
            scheme, sep, rest = origin.partition("://")
            if scheme not in ("http", "https") or not sep or not rest or "/" in rest:
                raise ConfigError(
                    f"The 'allowed_origins' must be origins like https://app.example[:port]. "
                    f"Got {origin!r}."
                )
        if self.runtime is not None:
            check_runtime(self.runtime)
        HeadSpec.parse(self.head)

    @property
    def head_spec(self) -> HeadSpec:
        return HeadSpec.parse(self.head)
