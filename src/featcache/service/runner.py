"""Run the service under uvicorn: one process, or ``workers`` processes sharing the store.

With several workers, each process builds its own app (its own head follower, answer cache
and batcher) from the config passed in an environment variable, and the Prometheus counts of
all of them are kept in a temporary ``PROMETHEUS_MULTIPROC_DIR`` that `/metrics` adds up.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from featcache.errors import ConfigError
from featcache.service.app import create_app
from featcache.service.config import ServiceConfig

__all__ = ["app_from_env", "config_from_json", "config_to_json", "run"]

CONFIG_ENV = "FEATCACHE_SERVICE_CONFIG"


def config_to_json(config: ServiceConfig) -> str:
    fields = dataclasses.asdict(config)
    return json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in fields.items()})


def config_from_json(text: str) -> ServiceConfig:
    fields: dict[str, Any] = json.loads(text)
    for name in ("store", "weights"):
        if fields.get(name) is not None:
            fields[name] = Path(fields[name])
    fields["allowed_hosts"] = tuple(fields.get("allowed_hosts", ()))
    return ServiceConfig(**fields)


def log_to_stderr(config: ServiceConfig) -> None:
    """One line per request on stderr (unless the access log is off), and the service's notes."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(message)s"))
    for name, level in (("featcache.access", logging.INFO), ("featcache.service", logging.INFO)):
        logger = logging.getLogger(name)
        if not logger.handlers:
            logger.addHandler(handler)
        logger.setLevel(
            level if config.access_log or name != "featcache.access" else logging.WARNING
        )
        logger.propagate = False


def app_from_env() -> FastAPI:
    """The app of one worker process (uvicorn's factory under ``--workers``)."""
    text = os.environ.get(CONFIG_ENV)
    if text is None:
        raise ConfigError(f"{CONFIG_ENV} is not set; start workers with 'featcache serve'")
    config = config_from_json(text)
    log_to_stderr(config)
    return create_app(config)


def run(config: ServiceConfig, *, host: str, port: int, workers: int = 1) -> None:
    """Serve until interrupted."""
    import uvicorn

    if workers < 1:
        raise ConfigError(f"The 'workers' must be >= 1. Got {workers}.")
    common: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": "warning",
        "access_log": False,  # ours names the route and is one line
    }
    if workers == 1:
        log_to_stderr(config)
        uvicorn.run(create_app(config), **common)
        return
    with tempfile.TemporaryDirectory(prefix="featcache-metrics-") as metrics_dir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        os.environ[CONFIG_ENV] = config_to_json(config)
        uvicorn.run(
            "featcache.service.runner:app_from_env", factory=True, workers=workers, **common
        )
