"""The service's errors in one place: `ApiError`, the JSON body ``{"error", "detail"}``,
the HTTP status of each featcache error, and the documented error responses.

Server-side failures (store unreadable, disk full, corrupt catalog, a damaged head file)
answer 503 ``store_unavailable`` with a detail that names no server path; the full message
goes to the server's log.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from pydantic import BaseModel
from starlette.responses import Response

from featcache.errors import (
    DependencyError,
    FeatcacheError,
    HeadError,
    ImageError,
    ImageTooLargeError,
    NotFoundError,
    StoreError,
    WeightsError,
)

__all__ = [
    "EXTRACTOR_UNAVAILABLE",
    "INTERNAL",
    "STORE_UNAVAILABLE",
    "ApiError",
    "ErrorBody",
    "FieldError",
    "error_response",
    "json_response",
    "response_docs",
    "status_of",
]

log = logging.getLogger("featcache.service")

STORE_UNAVAILABLE = "the feature store cannot be read or written right now; see the server log"
EXTRACTOR_UNAVAILABLE = "unseen images cannot be extracted right now; see the server log"
INTERNAL = "unexpected server error; see the server log"


class ApiError(Exception):
    """A request that gets a 4xx (or 503) answer with ``{"error", "detail"}``."""

    def __init__(
        self, status: int, error: str, detail: Any, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail, self.headers = status, error, detail, headers


class FieldError(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
    """Every non-2xx answer. Uploads add ``results`` (one per file, in order)."""

    error: str
    detail: str | list[FieldError]
    results: list[dict[str, Any]] | None = None


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response encoded with orjson (several times faster than the stdlib here)."""
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def error_response(
    http_status: int, error: str, detail: Any, headers: dict[str, str] | None = None, **extra: Any
) -> Response:
    """``{"error", "detail", **extra}`` with status `http_status`."""
    return json_response({"error": error, "detail": detail, **extra}, http_status, headers)


def status_of(exc: FeatcacheError) -> tuple[int, str, str]:
    """(HTTP status, error code, detail safe to send) for a featcache error."""
    if isinstance(exc, ImageTooLargeError):
        return 413, "image_too_large", str(exc)
    if isinstance(exc, ImageError):
        return 422, "bad_image", str(exc)
    if isinstance(exc, NotFoundError):
        return 404, "not_found", str(exc)
    if isinstance(exc, StoreError | HeadError):
        log.error("store unavailable: %s", exc)
        return 503, "store_unavailable", STORE_UNAVAILABLE
    if isinstance(exc, WeightsError | DependencyError):
        log.error("extractor unavailable: %s", exc)
        return 503, "extractor_unavailable", EXTRACTOR_UNAVAILABLE
    # Requests are validated before any featcache call: what is left is the server's fault.
    log.error("internal error: %s", exc)
    return 500, "internal", INTERNAL


_DESCRIPTIONS = {
    400: "Bad request (e.g. a Host name not allowed without a token)",
    401: "Missing or wrong bearer token",
    403: "A request from a web page of another origin (Origin header not allowed)",
    404: "Not found",
    405: "Method not allowed (see the Allow header)",
    409: "Unseen images and no weights to extract them",
    413: "Too large: body, file, pixels, files or keys beyond the limits",
    422: "Invalid request or undecodable image",
    500: "Unexpected server error (JSON, counted in the metrics)",
    503: "The feature store (store_unavailable) or the extractor (extractor_unavailable) "
    "cannot be used right now",
}


def response_docs(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses, each with the `ErrorBody` model."""
    docs: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        docs[status] = {"model": ErrorBody, "description": _DESCRIPTIONS[status]}
        if status in _HEADERS:
            name, text = _HEADERS[status]
            docs[status]["headers"] = {name: {"description": text, "schema": {"type": "string"}}}
    return docs


_HEADERS = {
    401: ("WWW-Authenticate", "Bearer"),
    405: ("Allow", "The methods the route accepts"),
}
