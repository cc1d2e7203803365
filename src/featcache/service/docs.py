"""The app's OpenAPI document and its offline ``/docs``.

Swagger UI's files come from the `fastapi-offline` package and are served by the app under
``/docs/static``, so the page works on a machine without internet and names no other host.
With a token, the document declares the bearer scheme on every route that needs it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

__all__ = ["STATIC_URL", "build_fastapi", "declare_bearer"]

STATIC_URL = "/docs/static"


def build_fastapi(**kwargs: Any) -> FastAPI:
    """A FastAPI app whose ``/docs`` loads Swagger UI from the app itself (no ReDoc)."""
    return FastAPIOffline(
        docs_url="/docs",
        redoc_url=None,
        static_url=STATIC_URL,
        # Swagger UI would otherwise send the document to an online validator
        swagger_ui_parameters={"validatorUrl": None},
        **kwargs,
    )


def declare_bearer(app: FastAPI, open_paths: frozenset[str]) -> None:
    """Declare ``Authorization: Bearer`` on every operation outside `open_paths`."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        components = schema.setdefault("components", {})
        components.setdefault("securitySchemes", {})["bearer"] = {
            "type": "http",
            "scheme": "bearer",
            "description": "The token given to featcache serve (--token-file or FEATCACHE_TOKEN)",
        }
        for path, operations in schema.get("paths", {}).items():
            if path in open_paths:
                continue
            for operation in operations.values():
                operation["security"] = [{"bearer": []}]
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
