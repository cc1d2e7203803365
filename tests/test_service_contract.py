"""The service's contract without TensorFlow: statuses and headers, Host names, metrics
series, store failures, offline docs, access log, answers with and without the LRU."""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import time
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from featcache.errors import StoreError, WeightsError
from featcache.service import ServiceConfig, create_app
from service_fakes import LOCAL, make_store, png, retrain

TOKEN = "s3cret-token-for-tests"


@pytest.fixture
def fake(tmp_path: Path) -> tuple[Path, list[bytes]]:
    return make_store(tmp_path)


def client(store: Path, base_url: str = LOCAL, **kw: object) -> TestClient:
    config = ServiceConfig(store=store, head=str(kw.pop("head", "signs")), **kw)  # type: ignore[arg-type]
    return TestClient(create_app(config), base_url=base_url)


def key_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_statuses_carry_their_headers(fake: tuple[Path, list[bytes]]) -> None:
    store, images = fake
    url = f"/v1/predictions/{key_of(images[0])}"
    with client(store, token=TOKEN) as c:
        refused = c.get(url)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert refused.json()["error"] == "unauthorized"
        auth = {"Authorization": f"Bearer {TOKEN}"}
        got = c.get(url, headers=auth)
        head = c.head(url, headers=auth)
        wrong = c.delete(url, headers=auth)
        assert c.get("/healthz").status_code == 200  # open without the token
        assert c.get("/docs").status_code == 200
    assert got.status_code == 200 and head.status_code == 200
    assert head.content == b"" and head.headers["content-length"] == str(len(got.content))
    assert wrong.status_code == 405 and wrong.json()["error"] == "http_error"
    assert set(wrong.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD"}


def test_without_a_token_only_loopback_host_names(fake: tuple[Path, list[bytes]]) -> None:
    store, _ = fake
    for base in ("http://127.0.0.1:8000", "http://localhost", "http://[::1]:8000"):
        with client(store, base_url=base) as c:
            assert c.get("/healthz").status_code == 200, base
    with client(store, base_url="http://rebind.example") as c:
        refused = c.get("/healthz")
    assert refused.status_code == 400 and refused.json()["error"] == "host_not_allowed"
    with client(store, base_url="http://rebind.example", allowed_hosts=("rebind.example",)) as c:
        assert c.get("/healthz").status_code == 200
    with client(store, base_url="http://rebind.example", token=TOKEN) as c:
        assert c.get("/healthz").status_code == 200  # a token protects instead


def test_random_paths_leave_metrics_bounded(fake: tuple[Path, list[bytes]]) -> None:
    store, _ = fake
    with client(store, token=TOKEN) as c:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        c.get("/nothing", headers=auth)
        c.get("/nothing")
        before = len(c.get("/metrics", headers=auth).content)
        for i in range(2000):
            headers = auth if i % 2 else {}
            c.request(("GET", "POST", "DELETE")[i % 3], f"/{uuid.uuid4().hex}/{i}", headers=headers)
        after = c.get("/metrics", headers=auth).text
    assert len(after.encode()) - before <= 5 * 1024
    assert 'route="unmatched",status="401"' in after
    assert 'route="unmatched",status="404"' in after


def test_every_status_is_counted_including_500(
    fake: tuple[Path, list[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, images = fake
    with client(store) as c:
        predictor = c.app.state.predictor  # type: ignore[attr-defined]

        def broken(*_: object, **__: object) -> None:
            raise RuntimeError("a bug")

        monkeypatch.setattr(predictor, "predict_keys", broken)
        response = c.get(f"/v1/predictions/{key_of(images[0])}")
        metrics = c.get("/metrics").text
    assert response.status_code == 500
    assert response.json() == {
        "error": "internal",
        "detail": "unexpected server error; see the server log",
    }
    assert 'featcache_requests_total{route="/v1/predictions/{key}",status="500"} 1.0' in metrics


def test_a_broken_store_answers_503_without_paths(fake: tuple[Path, list[bytes]]) -> None:
    store, images = fake
    with client(store, answer_cache_size=0) as c:
        assert c.get("/healthz").status_code == 200
        (store / "catalog.sqlite").write_bytes(b"\0garbage" * 4096)
        for wal in store.glob("catalog.sqlite-*"):
            wal.write_bytes(b"\0garbage" * 4096)
        answer = c.get(f"/v1/predictions/{key_of(images[0])}")
        upload = c.post("/v1/predict", files={"files": ("a.png", images[1])})
        health = c.get("/healthz")
    for response in (answer, upload, health):
        assert response.status_code == 503, response.text
        body = response.json()
        assert body["error"] == "store_unavailable"
        assert str(store) not in response.text and "/tmp" not in response.text
    assert health.json()["reason"] == "the store's catalog cannot be read"


def test_docs_load_offline(fake: tuple[Path, list[bytes]]) -> None:
    store, _ = fake
    with client(store) as c:
        page = c.get("/docs")
        assets = [
            c.get(f"/docs/static/{name}") for name in ("swagger-ui-bundle.js", "swagger-ui.css")
        ]
    assert page.status_code == 200 and "swagger-ui-bundle.js" in page.text
    assert "http://" not in page.text and "https://" not in page.text and "//" not in page.text
    assert all(a.status_code == 200 and len(a.content) > 10_000 for a in assets)


def test_the_schema_documents_every_status(fake: tuple[Path, list[bytes]]) -> None:
    store, _ = fake
    with client(store, token=TOKEN) as c:
        spec = c.get("/openapi.json").json()
    upload = spec["paths"]["/v1/predict"]["post"]
    statuses = set(upload["responses"])
    assert {"200", "400", "401", "405", "409", "413", "422", "500", "503"} <= statuses
    assert set(spec["paths"]["/v1/predictions/{key}"]["get"]["responses"]) >= {"404", "422"}
    assert upload["security"] == [{"bearer": []}]
    assert "security" not in spec["paths"]["/healthz"]["get"]
    form = spec["components"]["schemas"]["Body_predict_v1_predict_post"]["properties"]["files"]
    assert form["minItems"] == 1
    error = spec["components"]["schemas"]["ErrorBody"]
    assert set(error["required"]) == {"error", "detail"}


def test_one_access_log_line_per_request(
    fake: tuple[Path, list[bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    store, images = fake
    with caplog.at_level(logging.INFO, logger="featcache.access"), client(store) as c:
        c.get(f"/v1/predictions/{key_of(images[0])}")
        c.get("/nope")
    lines = [r.getMessage() for r in caplog.records if r.name == "featcache.access"]
    assert len(lines) == 2
    assert lines[0].startswith("GET /v1/predictions/{key} 200 ") and lines[0].endswith("ms")
    assert lines[1].startswith("GET unmatched 404 ")
    caplog.clear()
    with (
        caplog.at_level(logging.INFO, logger="featcache.access"),
        client(store, access_log=False) as c,
    ):
        c.get("/healthz")
    assert not [r for r in caplog.records if r.name == "featcache.access"]


def test_uploads_over_the_limits(fake: tuple[Path, list[bytes]]) -> None:
    store, images = fake
    with client(
        store, max_upload_bytes=2000, max_request_bytes=50_000, max_request_pixels=600
    ) as c:
        big_file = c.post("/v1/predict", files={"files": ("big.png", png(1, 64))})
        big_body = c.post(
            "/v1/predict", files=[("files", (f"{i}.png", png(i, 64))) for i in range(8)]
        )
        pixels = c.post(
            "/v1/predict", files=[("files", (f"{i}.png", png(100 + i))) for i in range(3)]
        )
        mixed = c.post(
            "/v1/predict", files=[("files", ("ok.png", images[0])), ("files", ("e.png", b""))]
        )
    assert big_file.status_code == 413 and "larger than 2000 bytes" in big_file.json()["detail"]
    assert big_body.status_code == 413 and big_body.json()["error"] == "request_too_large"
    assert pixels.status_code == 413 and pixels.json()["error"] == "too_many_pixels"
    assert mixed.status_code == 200
    results = mixed.json()["results"]
    assert "predictions" in results[0] and results[1]["error"] == "e.png: empty file"


def answers(store: Path, cache_size: int, keys: list[str]) -> list[object]:
    with client(store, answer_cache_size=cache_size) as c:
        got = [c.get(f"/v1/predictions/{k}").json() for k in keys * 2]
        got.append(c.post("/v1/predict/keys", json={"keys": keys}).json())
    return got


def test_answers_with_the_lru_equal_answers_without(fake: tuple[Path, list[bytes]]) -> None:
    store, images = fake
    keys = [key_of(d) for d in images[:5]]
    assert answers(store, 100_000, keys) == answers(store, 0, keys)
    assert answers(store, 2, keys) == answers(store, 0, keys)  # evictions too


def test_answers_with_the_lru_follow_a_head_swap(fake: tuple[Path, list[bytes]]) -> None:
    store, images = fake
    keys = [key_of(d) for d in images[:4]]
    with (
        client(store, head_refresh_seconds=0.05) as cached,
        client(store, head_refresh_seconds=0.05, answer_cache_size=0) as plain,
    ):
        first = [cached.get(f"/v1/predictions/{k}").json() for k in keys]
        assert first == [plain.get(f"/v1/predictions/{k}").json() for k in keys]
        version = retrain(store, l2=5.0)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            versions = {c.get("/healthz").json()["version"] for c in (cached, plain)}
            if versions == {version}:
                break
            time.sleep(0.02)
        second = [cached.get(f"/v1/predictions/{k}").json() for k in keys]
        assert second == [plain.get(f"/v1/predictions/{k}").json() for k in keys]
        swaps = cached.get("/metrics").text
    assert {a["head"]["version"] for a in second} == {version}
    assert [a["predictions"] for a in first] != [a["predictions"] for a in second]
    assert "featcache_head_swaps_total 1.0" in swaps
    assert "featcache_answer_cache_hits_total" in swaps


@pytest.mark.parametrize(
    ("failure", "error"),
    [
        (sqlite3.OperationalError("database or disk is full"), "store_unavailable"),
        (OSError(28, "No space left on device", "/srv/store/shards/x.npy"), "store_unavailable"),
        (StoreError("/srv/store/catalog.sqlite: query failed"), "store_unavailable"),
        (WeightsError("/srv/w.npy: SHA-256 differs"), "extractor_unavailable"),
    ],
)
def test_server_side_failures_are_503_without_paths(
    fake: tuple[Path, list[bytes]],
    monkeypatch: pytest.MonkeyPatch,
    failure: Exception,
    error: str,
) -> None:
    store, images = fake
    with client(store, answer_cache_size=0) as c:

        def broken(*_: object, **__: object) -> None:
            raise failure

        monkeypatch.setattr(c.app.state.predictor, "predict_keys", broken)  # type: ignore[attr-defined]
        response = c.post("/v1/predict", files={"files": ("a.png", images[0])})
    assert response.status_code == 503 and response.json()["error"] == error
    assert "/srv" not in response.text
