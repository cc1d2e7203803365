"""The HTTP service: predictions from the cache, unseen uploads extracted once, stored, answered.

`create_app` builds the FastAPI app; nothing happens at import time. Cached answers never
touch TensorFlow; it is loaded when the first unseen image arrives (and only if the app was
given weights). Every bad request gets a 4xx with ``{"error": ..., "detail": ...}``.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from featcache.data.source import ImageItem
from featcache.errors import (
    ConfigError,
    FeatcacheError,
    ImageError,
    ImageTooLargeError,
    NotFoundError,
)
from featcache.extractor.preprocess import DEFAULT_MAX_PIXELS
from featcache.predictor import ImageResult, Predictor
from featcache.service.batcher import Batcher
from featcache.service.guard import Guard
from featcache.service.metrics import BATCH_BUCKETS, Metrics
from featcache.store.featurestore import FeatureStore

__all__ = ["ServiceConfig", "create_app"]

KEY_PATTERN = r"^[0-9a-fA-F]{64}$"


@dataclass(frozen=True)
class ServiceConfig:
    """What the service serves and its limits."""

    store: Path
    head: str
    weights: Path | None = None
    token: str | None = None
    top_k: int = 5
    max_upload_bytes: int = 10 * 1024 * 1024
    max_files: int = 16
    max_keys: int = 1000
    max_pixels: int = DEFAULT_MAX_PIXELS
    head_refresh_seconds: float = 2.0
    batch_window_seconds: float = 0.01
    max_batch: int = 64

    def __post_init__(self) -> None:
        for name in (
            "top_k",
            "max_upload_bytes",
            "max_files",
            "max_keys",
            "max_pixels",
            "max_batch",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"The '{name}' must be >= 1. Got {getattr(self, name)}.")
        if self.token is not None and len(self.token) < 16:
            raise ConfigError("The 'token' must have at least 16 characters.")


class KeysRequest(BaseModel):
    keys: list[Annotated[str, Field(pattern=KEY_PATTERN)]] = Field(min_length=1)


class ApiError(Exception):
    """A request that gets a 4xx answer."""

    def __init__(self, status: int, error: str, detail: Any) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


def _error(status: int, error: str, detail: Any, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail, **extra}, status_code=status)


def _status_of(exc: FeatcacheError) -> tuple[int, str]:
    if isinstance(exc, ImageTooLargeError):
        return 413, "image_too_large"
    if isinstance(exc, ImageError):
        return 422, "bad_image"
    if isinstance(exc, NotFoundError):
        return 404, "not_found"
    return 400, "bad_request"


@dataclass
class _Upload:
    """One file of a request: its image, or the answer (and HTTP status) it already has."""

    item: ImageItem
    result: ImageResult | None = None
    status: int = 200

    def fail(self, status: int, error: str) -> None:
        self.result = ImageResult(self.item.path, None, error=error)
        self.status = status


def _check_decodes(uploads: list[_Upload], max_pixels: int) -> None:
    """Decode unseen uploads (no TensorFlow) so a broken file is told from a good one."""
    for upload in uploads:
        try:
            upload.item.rgb(max_pixels=max_pixels)
        except ImageTooLargeError as exc:
            upload.fail(413, str(exc))
        except ImageError as exc:
            upload.fail(422, str(exc))


def create_app(config: ServiceConfig) -> FastAPI:
    """Build the app: opens the store and loads the head now, TensorFlow only when needed."""
    store = FeatureStore(config.store, create=False)
    predictor = Predictor(
        store,
        config.head,
        weights=config.weights,
        top_k=config.top_k,
        max_pixels=config.max_pixels,
        refresh_seconds=config.head_refresh_seconds,
    )
    metrics = Metrics()
    metrics.describe("featcache_requests_total", "counter", "HTTP requests by route and status")
    metrics.describe("featcache_request_seconds", "histogram", "Request latency by route")
    metrics.describe("featcache_cache_hits_total", "counter", "Images answered from the store")
    metrics.describe("featcache_cache_misses_total", "counter", "Images that needed extraction")
    metrics.describe("featcache_extraction_batch_size", "histogram", "Images per network batch")
    batcher: Batcher[ImageItem, ImageResult] = Batcher(
        predictor.predict_items,
        max_batch=config.max_batch,
        window=config.batch_window_seconds,
        on_batch=lambda n: metrics.observe("featcache_extraction_batch_size", n, BATCH_BUCKETS),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await batcher.close()
        store.close()

    app = FastAPI(
        lifespan=lifespan,
        title="featcache",
        version="0.1.0",
        description="Predictions from cached AlexNet features. Unseen images are extracted "
        "once, stored, then answered.",
    )
    app.state.predictor = predictor
    app.state.metrics = metrics

    app.add_middleware(
        Guard,
        token=config.token,
        max_body=config.max_files * config.max_upload_bytes + 64 * 1024,
        metrics=metrics,
    )

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.error, exc.detail)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        detail = [
            {"field": ".".join(str(p) for p in e.get("loc", ())), "message": e.get("msg", "")}
            for e in exc.errors()
        ]
        return _error(422, "invalid_request", detail)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, "http_error", exc.detail)

    @app.exception_handler(FeatcacheError)
    async def featcache_error(_: Request, exc: FeatcacheError) -> JSONResponse:
        status, error = _status_of(exc)
        return _error(status, error, str(exc))

    @app.get("/v1/predictions/{key}", summary="Top-k classes of a stored image, by its key")
    async def prediction(
        key: Annotated[str, PathParam(pattern=KEY_PATTERN, description="SHA-256 hex of the file")],
    ) -> JSONResponse:
        result = (await run_in_threadpool(predictor.predict_keys, [key.lower()]))[0]
        if result.error is not None:
            raise ApiError(404, "not_found", result.error)
        metrics.inc("featcache_cache_hits_total")
        return JSONResponse(result.as_dict())

    @app.post("/v1/predict/keys", summary="Top-k classes of many stored images")
    async def predict_keys(body: KeysRequest) -> JSONResponse:
        if len(body.keys) > config.max_keys:
            raise ApiError(
                413, "too_many_keys", f"{len(body.keys)} keys; at most {config.max_keys}"
            )
        results = await run_in_threadpool(predictor.predict_keys, [k.lower() for k in body.keys])
        hits = sum(r.error is None for r in results)
        metrics.inc("featcache_cache_hits_total", hits)
        head = predictor.head
        return JSONResponse(
            {
                "head": {"name": head.name, "version": head.version},
                "results": [r.as_dict() for r in results],
            }
        )

    @app.post("/v1/predict", summary="Top-k classes of uploaded images (multipart field 'files')")
    async def predict(
        files: Annotated[list[UploadFile], File(description="image files")],
    ) -> JSONResponse:
        if len(files) > config.max_files:
            raise ApiError(413, "too_many_files", f"{len(files)} files; at most {config.max_files}")
        uploads = []
        for i, file in enumerate(files):
            name = file.filename or f"file {i}"
            data = await file.read(config.max_upload_bytes + 1)
            upload = _Upload(ImageItem(name, data=data))
            if len(data) > config.max_upload_bytes:
                upload.fail(413, f"{name}: larger than {config.max_upload_bytes} bytes")
            elif not data:
                upload.fail(422, f"{name}: empty file")
            uploads.append(upload)
        todo = [u for u in uploads if u.result is None]
        keys = await run_in_threadpool(lambda: [u.item.key() for u in todo])
        for upload, hit in zip(
            todo, await run_in_threadpool(predictor.predict_keys, keys), strict=True
        ):
            if hit.error is None:
                hit.path = upload.item.path
                upload.result = hit
        unseen = [u for u in todo if u.result is None]
        metrics.inc("featcache_cache_hits_total", len(todo) - len(unseen))
        metrics.inc("featcache_cache_misses_total", len(unseen))
        await run_in_threadpool(_check_decodes, unseen, config.max_pixels)
        unseen = [u for u in unseen if u.result is None]
        if unseen and not predictor.can_extract:
            raise ApiError(
                409,
                "not_cached",
                f"{len(unseen)} image(s) are not in the store (e.g. {unseen[0].item.path}) "
                "and this server was started without --weights, so it cannot extract them",
            )
        if unseen:
            extracted = await batcher.submit([u.item for u in unseen])
            for upload, result in zip(unseen, extracted, strict=True):
                upload.result = result
                upload.status = 422 if result.error else 200
        answers = [u.result.as_dict() for u in uploads if u.result is not None]
        if all(u.status != 200 for u in uploads):
            first = uploads[0]
            detail = first.result.error if first.result is not None else "bad image"
            return _error(first.status, "bad_image", detail, results=answers)
        return JSONResponse({"results": answers})

    @app.get("/v1/heads", summary="Heads in the store and the one being served")
    async def heads() -> JSONResponse:
        records = await run_in_threadpool(store.heads)
        head = predictor.head
        return JSONResponse(
            {
                "served": {
                    "name": head.name,
                    "version": head.version,
                    "layer": head.layer,
                    "fingerprint": head.fingerprint,
                    "weights_note": head.meta.get("weights_note"),
                },
                "heads": [
                    {
                        "name": r.name,
                        "version": r.version,
                        "head": r.meta.get("head"),
                        "dataset": r.meta.get("dataset"),
                        "val_accuracy": r.meta.get("metrics", {}).get("val_accuracy"),
                    }
                    for r in records
                ],
            }
        )

    @app.get("/healthz", summary="Liveness and what is served")
    async def healthz() -> JSONResponse:
        head = predictor.head
        return JSONResponse(
            {
                "status": "ok",
                "head": head.name,
                "version": head.version,
                "can_extract": predictor.can_extract,
                "tensorflow_loaded": "tensorflow" in sys.modules,
            }
        )

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    return app
