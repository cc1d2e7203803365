"""The HTTP service (FastAPI under uvicorn): `create_app` builds it, `ServiceConfig` sets it up."""

from featcache.service.app import ServiceConfig, create_app

__all__ = ["ServiceConfig", "create_app"]
