"""The HTTP service (FastAPI under uvicorn): `create_app` builds it, `ServiceConfig` sets it
up, `HeadSpec` says which head version it follows."""

from featcache.service.app import create_app
from featcache.service.config import HeadSpec, ServiceConfig

__all__ = ["HeadSpec", "ServiceConfig", "create_app"]
