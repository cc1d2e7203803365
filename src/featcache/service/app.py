"""The HTTP service: predictions from the cache, unseen uploads extracted once, stored, answered.

`create_app` builds the FastAPI app; nothing happens at import time. Cached answers never
touch TensorFlow; it is loaded when the first unseen image arrives (and only if the app was
given weights). Every bad request gets a 4xx with ``{"error": ..., "detail": ...}``; a store
that cannot be read gets 503; nothing answers a plain-text 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import FastAPI, File, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from featcache.data.source import ImageItem
from featcache.errors import FeatcacheError, StoreError
from featcache.predictor import ImageResult, Predictor
from featcache.service.answers import Answer, AnswerCache, PathCache, lookup
from featcache.service.batcher import Batcher
from featcache.service.config import ServiceConfig
from featcache.service.docs import build_fastapi, declare_bearer
from featcache.service.errors import (
    STORE_UNAVAILABLE,
    ApiError,
    error_response,
    json_response,
    response_docs,
    status_of,
)
from featcache.service.guard import OPEN_PATHS, Guard
from featcache.service.heads import HeadFollower
from featcache.service.metrics import CONTENT_TYPE, Metrics
from featcache.service.models import (
    KEY_PATTERN,
    HeadsAnswer,
    Health,
    ImageAnswer,
    KeysAnswer,
    KeysRequest,
    UploadAnswer,
)
from featcache.service.uploads import Upload, answer_body, check_decodes, check_pixels, triage
from featcache.store.featurestore import FeatureStore

__all__ = ["create_app"]

log = logging.getLogger("featcache.service")


def _with_note(body: dict[str, Any], note: str | None) -> dict[str, Any]:
    """An answer computed from random (demo) weights says so (``weights_note``)."""
    return {**body, "weights_note": note} if note else body


def create_app(config: ServiceConfig) -> FastAPI:
    """Build the app: opens the store and loads the head now, TensorFlow only when needed."""
    store = FeatureStore(config.store, create=False)
    follower = HeadFollower(store, config.head_spec)
    predictor = Predictor(
        store,
        follower.spec.name,
        weights=config.weights,
        version=follower.live.head.version,
        top_k=config.top_k,
        max_pixels=config.max_pixels,
        runtime=config.runtime,
    )
    metrics = Metrics()
    cache = AnswerCache(config.answer_cache_size)
    paths = PathCache(config.answer_cache_size)
    problems: dict[str, str] = {}  # what the last head refresh found wrong with the store

    def extract(items: list[ImageItem]) -> list[ImageResult]:
        return predictor.predict_items(items, head=follower.live.head)

    batcher: Batcher[ImageItem, ImageResult] = Batcher(
        extract,
        max_batch=config.max_batch,
        window=config.batch_window_seconds,
        on_batch=metrics.batch_size.observe,
    )

    async def follow() -> None:
        while True:
            await asyncio.sleep(config.head_refresh_seconds)
            try:
                swapped = await run_in_threadpool(follower.refresh)
            except Exception as exc:  # the loop must outlive any failure, and say so
                log.error(
                    "cannot refresh head '%s': %s: %s", follower.spec, type(exc).__name__, exc
                )
                problems["refresh"] = "the store or the head file cannot be read"
                continue
            problems.pop("refresh", None)
            try:
                paths.renew(await run_in_threadpool(predictor.store.datasets_generation))
            except Exception as exc:  # a path lookup must not take the head refresh down
                log.error("cannot read the datasets' state: %s: %s", type(exc).__name__, exc)
                paths.renew(-1)  # no generation: forget every path
            if swapped:
                cache.clear()
                metrics.head_swaps.inc()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(follow())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await batcher.close()
            store.close()

    app = build_fastapi(
        lifespan=lifespan,
        title="featcache",
        version="0.1.0",
        description="Predictions from cached AlexNet features. Unseen images are extracted "
        "once, stored, then answered.",
    )
    app.state.follower = follower
    app.state.predictor = predictor
    app.state.metrics = metrics
    app.state.answers = cache
    app.state.paths = paths
    if config.token is not None:
        declare_bearer(app, OPEN_PATHS)
    refusals = (400, 401, 403) if config.token else (400, 403)
    common = (*refusals, 405, 413, 500, 503)

    app.add_middleware(
        Guard,
        routes=app.router.routes,
        token=config.token,
        allowed_hosts=config.allowed_hosts,
        allowed_origins=config.allowed_origins,
        max_body=config.max_request_bytes,
        metrics=metrics,
        access_log=config.access_log,
    )

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> Response:
        return error_response(exc.status, exc.error, exc.detail, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> Response:
        detail = [
            {"field": ".".join(str(p) for p in e.get("loc", ())), "message": e.get("msg", "")}
            for e in exc.errors()
        ]
        return error_response(422, "invalid_request", detail)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> Response:
        headers = dict(exc.headers or {})
        allow = headers.get("Allow")
        if allow is not None and "GET" in allow and "HEAD" not in allow:
            headers["Allow"] = f"{allow}, HEAD"  # HEAD works wherever GET does
        return error_response(exc.status_code, "http_error", exc.detail, headers)

    @app.exception_handler(FeatcacheError)
    async def featcache_error(_: Request, exc: FeatcacheError) -> Response:
        status, error, detail = status_of(exc)
        return error_response(status, error, detail)

    @app.exception_handler(sqlite3.DatabaseError)
    @app.exception_handler(OSError)
    async def storage_error(_: Request, exc: Exception) -> Response:
        # disk full or an unreadable file below the store's own checks
        log.error("store unavailable: %s: %s", type(exc).__name__, exc)
        return error_response(503, "store_unavailable", STORE_UNAVAILABLE)

    async def answers_for(keys: list[str]) -> tuple[dict[str, Answer], int]:
        """Answers for stored keys (LRU first, then the store); and how many came from the LRU."""
        live = follower.live
        found: dict[str, Answer] = {}
        missing = []
        for key in keys:
            answer = cache.get(key, live.identity)
            if answer is None:
                missing.append(key)
            else:
                found[key] = answer
        from_cache = len(found)
        if missing:
            fresh = await run_in_threadpool(lookup, predictor, list(dict.fromkeys(missing)), live)
            found.update(fresh)
            if follower.live is live:  # not a head that was swapped out meanwhile
                for answer in fresh.values():
                    cache.put(answer, live.identity)
        return found, from_cache

    async def paths_for(keys: list[str]) -> dict[str, str]:
        """The stored path of each key that a dataset holds: from the path LRU, which the
        head refresh empties when the datasets change, else from the store."""
        found, missing = paths.known(keys)
        if missing:
            if paths.generation is None:  # the first lookup: note the state it reads
                paths.renew(await run_in_threadpool(predictor.store.datasets_generation))
            generation = paths.generation
            read = await run_in_threadpool(predictor.store.paths_of, missing)
            fresh = {key: read.get(key) for key in missing}
            if paths.generation == generation:  # not read across a change the refresh saw
                paths.put(fresh)
            found.update(fresh)
        return {key: path for key, path in found.items() if path is not None}

    def count(hits: int, misses: int, from_cache: int) -> None:
        if hits:
            metrics.hits.inc(hits)
        if misses:
            metrics.misses.inc(misses)
        if from_cache:
            metrics.answer_hits.inc(from_cache)

    @app.get(
        "/v1/predictions/{key}",
        summary="Top-k classes of a stored image, by its key",
        response_model=ImageAnswer,
        responses=response_docs(404, 422, *common),
    )
    async def prediction(
        key: Annotated[str, PathParam(pattern=KEY_PATTERN, description="SHA-256 hex of the file")],
    ) -> Response:
        key = key.lower()
        found, from_cache = await answers_for([key])
        answer = found.get(key)
        if answer is None:
            head = follower.live.head
            raise ApiError(
                404,
                "not_found",
                f"no '{head.layer}' vector for key {key} (extractor {head.fingerprint[:12]}); "
                "send the image itself",
            )
        count(1, 0, from_cache)
        path = (await paths_for([key])).get(key)
        note = follower.live.head.meta.get("weights_note")
        if path is not None or note:
            return json_response(_with_note(answer.as_dict(path), note))
        return Response(answer.body, media_type="application/json")

    @app.post(
        "/v1/predict/keys",
        summary="Top-k classes of many stored images",
        response_model=KeysAnswer,
        responses=response_docs(422, *common),
    )
    async def predict_keys(body: KeysRequest) -> Response:
        if len(body.keys) > config.max_keys:
            raise ApiError(
                413, "too_many_keys", f"{len(body.keys)} keys; at most {config.max_keys}"
            )
        live = follower.live
        keys = [k.lower() for k in body.keys]
        found, from_cache = await answers_for(keys)
        paths = await paths_for(keys)
        results = []
        for key in keys:
            answer = found.get(key)
            if answer is None:
                results.append(
                    {
                        "path": paths.get(key),
                        "key": key,
                        "cached": False,
                        "error": f"no '{live.head.layer}' vector for key {key} (extractor "
                        f"{live.head.fingerprint[:12]}); send the image itself",
                    }
                )
            else:
                results.append(answer.as_dict(paths.get(key)))
        count(sum(k in found for k in keys), 0, from_cache)
        head = {"name": live.head.name, "version": live.head.version}
        note = live.head.meta.get("weights_note")
        return json_response(_with_note({"head": head, "results": results}, note))

    @app.post(
        "/v1/predict",
        summary="Top-k classes of uploaded images (multipart field 'files')",
        response_model=UploadAnswer,
        responses=response_docs(409, 422, *common),
    )
    async def predict(
        files: Annotated[list[UploadFile], File(description="image files", min_length=1)],
    ) -> Response:
        if len(files) > config.max_files:
            raise ApiError(413, "too_many_files", f"{len(files)} files; at most {config.max_files}")
        read = [
            (file.filename or f"file {i}", await file.read(config.max_upload_bytes + 1))
            for i, file in enumerate(files)
        ]
        uploads = triage(read, config.max_upload_bytes)
        keys = [u.key for u in uploads if u.key is not None]
        found, from_cache = await answers_for(keys)
        for upload in uploads:
            answer = found.get(upload.key) if upload.key is not None else None
            if answer is not None:
                upload.answered(answer)
        unseen = [u for u in uploads if u.pending]
        count(len(keys) - len(unseen), len(unseen), from_cache)
        if unseen:
            await extract_unseen(unseen)
        for upload in uploads:
            if upload.status >= 400:
                metrics.upload_failures.labels(str(upload.status)).inc()
        status, body = answer_body(uploads)
        if status == 200:
            body = _with_note(body, follower.live.head.meta.get("weights_note"))
        return json_response(body, status)

    async def extract_unseen(unseen: list[Upload]) -> None:
        await run_in_threadpool(check_pixels, unseen, config.max_pixels, config.max_request_pixels)
        if not predictor.can_extract:
            await run_in_threadpool(check_decodes, unseen, config.max_pixels)
            good = [u for u in unseen if u.pending]
            if good:
                raise ApiError(
                    409,
                    "not_cached",
                    f"{len(good)} image(s) are not in the store (e.g. {good[0].name}) and "
                    "this server was started without --weights, so it cannot extract them",
                )
            return
        todo = [u for u in unseen if u.pending]
        if todo:
            for upload, result in zip(
                todo, await batcher.submit([u.item() for u in todo]), strict=True
            ):
                upload.extracted(result)

    @app.get(
        "/v1/heads",
        summary="Heads in the store and the one being served",
        response_model=HeadsAnswer,
        responses=response_docs(*common),
    )
    async def heads() -> Response:
        name = follower.spec.name
        records, promoted = await run_in_threadpool(
            lambda: (store.heads(), store.promoted_head(name))
        )
        served = follower.live.describe()
        served["follows"] = follower.spec.follow
        return json_response(
            {
                "served": served,
                "heads": [
                    {
                        "name": r.name,
                        "version": r.version,
                        "digest": r.sha256,
                        "promoted": r.name == name and r.version == promoted,
                        "head": r.meta.get("head"),
                        "dataset": r.meta.get("dataset"),
                        "val_accuracy": r.meta.get("metrics", {}).get("val_accuracy"),
                    }
                    for r in records
                ],
            }
        )

    @app.get(
        "/healthz",
        summary="Liveness, what is served, and whether the store can be read (503 if not)",
        response_model=Health,
        responses=response_docs(*common),
    )
    async def healthz() -> Response:
        if follower.gone is not None:
            return error_response(
                503, "head_unavailable", follower.gone, status="unavailable", reason=follower.gone
            )
        reason = problems.get("refresh")
        if reason is None:
            try:
                await run_in_threadpool(store.heads, follower.spec.name)
            except StoreError as exc:
                log.error("health check: %s", exc)
                reason = "the store's catalog cannot be read"
        if reason is not None:
            return error_response(
                503, "store_unavailable", STORE_UNAVAILABLE, status="unavailable", reason=reason
            )
        head = follower.live.head
        return json_response(
            {
                "status": "ok",
                "head": head.name,
                "version": head.version,
                "digest": follower.live.digest,
                "can_extract": predictor.can_extract,
                "tensorflow_loaded": "tensorflow" in sys.modules,
                # the served head's vectors came from random weights: its answers mean nothing
                "weights_note": head.meta.get("weights_note"),
            }
        )

    @app.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses={
            200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
            **response_docs(*common),
        },
    )
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    return app
