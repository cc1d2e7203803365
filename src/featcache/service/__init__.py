"""The HTTP service (FastAPI under uvicorn): `create_app` builds it, `ServiceConfig` sets it up."""

from featcache.service.app import ServiceConfig, create_app
from featcache.service.batcher import Batcher
from featcache.service.guard import Guard
from featcache.service.metrics import Metrics

__all__ = ["Batcher", "Guard", "Metrics", "ServiceConfig", "create_app"]
