"""The HTTP service's answers, without TensorFlow: equal to the CLI's, in order, every bad
request a 4xx with a reason, token, heads/health/metrics/docs, hot swap under load."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
from pathlib import Path

import httpx2 as httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from featcache.cli import app as cli_app
from featcache.service import ServiceConfig, create_app
from service_fakes import LOCAL, live_server, make_store, retrain


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """root/store (head 'signs' on RANDOM test vectors) and its images under root/data."""
    root = tmp_path_factory.mktemp("service")
    _, images = make_store(root, 12)
    for i, data in enumerate(images):
        (root / "data").mkdir(exist_ok=True)
        (root / "data" / f"{i:04d}.png").write_bytes(data)
    return root


def png(seed: int, size: int = 32) -> bytes:
    buf = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), np.uint8)
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def client(root: Path, **kw: object) -> TestClient:
    config = ServiceConfig(store=root / "store", head="signs", **kw)  # type: ignore[arg-type]
    return TestClient(create_app(config), base_url=LOCAL)


def cached_files(root: Path) -> list[Path]:
    return sorted((root / "data").rglob("*.png"))


def test_get_by_key_equals_cli_predict_json(served: Path) -> None:
    image = cached_files(served)[0]
    key = hashlib.sha256(image.read_bytes()).hexdigest()
    cli = CliRunner().invoke(
        cli_app,
        ["predict", "--store", str(served / "store"), "--head", "signs", str(image), "--json"],
    )
    expected = json.loads(cli.output.splitlines()[0])
    with client(served) as c:
        got = c.get(f"/v1/predictions/{key}")
        upload = c.post("/v1/predict", files={"files": (image.name, image.read_bytes())})
    assert got.status_code == 200
    body = got.json()
    assert body["key"] == key and body["cached"] is True
    assert body["head"] == {"name": "signs", "version": 1}
    assert body["predictions"] == expected["predictions"]
    assert upload.json()["results"][0]["predictions"] == expected["predictions"]


def test_many_keys_and_uploads_in_order(served: Path) -> None:
    files = cached_files(served)[:3]
    keys = [hashlib.sha256(p.read_bytes()).hexdigest() for p in files]
    with client(served) as c:
        many = c.post("/v1/predict/keys", json={"keys": [keys[2], "0" * 64, keys[0]]}).json()
        up = c.post(
            "/v1/predict",
            files=[("files", (p.name, p.read_bytes())) for p in files]
            + [("files", ("junk.png", b"junk"))],
        ).json()
    assert [r["key"] for r in many["results"]] == [keys[2], "0" * 64, keys[0]]
    assert "error" in many["results"][1] and "predictions" in many["results"][2]
    assert [r["path"] for r in up["results"]] == [p.name for p in files] + ["junk.png"]
    assert [r["key"] for r in up["results"][:3]] == keys
    assert "known format" in up["results"][3]["error"]


def bomb() -> bytes:
    buf = io.BytesIO()
    Image.new("1", (12000, 10000)).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("request_kw", "status", "error"),
    [
        ({"method": "GET", "url": "/v1/predictions/" + "0" * 64}, 404, "not_found"),
        ({"method": "GET", "url": "/v1/predictions/xyz"}, 422, "invalid_request"),
        ({"method": "GET", "url": "/v1/predictions/" + "g" * 64}, 422, "invalid_request"),
        (
            {
                "method": "POST",
                "url": "/v1/predict",
                "files": {"files": ("a.png", b"not an image")},
            },
            422,
            "bad_image",
        ),
        (
            {"method": "POST", "url": "/v1/predict", "files": {"files": ("e.png", b"")}},
            422,
            "bad_image",
        ),
        (
            {
                "method": "POST",
                "url": "/v1/predict",
                "files": {"files": ("t.png", png(1, 64)[:200])},
            },
            422,
            "bad_image",
        ),
        (
            {"method": "POST", "url": "/v1/predict", "files": {"files": ("b.png", bomb())}},
            413,
            "bad_image",
        ),
        (
            {"method": "POST", "url": "/v1/predict", "files": {"file": ("a.png", png(1))}},
            422,
            "invalid_request",
        ),
        ({"method": "POST", "url": "/v1/predict"}, 422, "invalid_request"),
        (
            {
                "method": "POST",
                "url": "/v1/predict",
                "files": [("files", (f"{i}.png", png(i))) for i in range(20)],
            },
            413,
            "too_many_files",
        ),
        (
            {"method": "POST", "url": "/v1/predict", "files": {"files": ("n.png", png(99))}},
            409,
            "not_cached",
        ),
        (
            {
                "method": "POST",
                "url": "/v1/predict/keys",
                "content": b"{not json",
                "headers": {"content-type": "application/json"},
            },
            422,
            "invalid_request",
        ),
        (
            {"method": "POST", "url": "/v1/predict/keys", "json": {"keys": ["abc"]}},
            422,
            "invalid_request",
        ),
        (
            {"method": "POST", "url": "/v1/predict/keys", "json": {"kees": []}},
            422,
            "invalid_request",
        ),
        ({"method": "GET", "url": "/v2/nothing"}, 404, "http_error"),
    ],
)
def test_bad_requests_get_a_4xx_with_a_reason(
    served: Path, request_kw: dict[str, object], status: int, error: str
) -> None:
    with client(served, max_pixels=50_000_000) as c:
        response = c.request(**request_kw)  # type: ignore[arg-type]
        assert response.status_code == status, response.text
        body = response.json()
        assert body["error"] == error and body["detail"]
        assert c.get("/healthz").status_code == 200  # still up


def test_upload_size_limit(served: Path) -> None:
    with client(served, max_upload_bytes=1000) as c:
        response = c.post("/v1/predict", files={"files": ("big.png", png(3, 128))})
    assert response.status_code == 413 and "larger than 1000 bytes" in response.json()["detail"]


def test_token_is_required_when_configured(served: Path) -> None:
    token = "s3cret-token-for-tests"
    key = hashlib.sha256(cached_files(served)[0].read_bytes()).hexdigest()
    with client(served, token=token) as c:
        assert c.get(f"/v1/predictions/{key}").status_code == 401
        wrong = c.get(f"/v1/predictions/{key}", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"] == "unauthorized"
        ok = c.get(f"/v1/predictions/{key}", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200
        assert c.get("/healthz").status_code == 200


def test_heads_health_metrics_and_docs(served: Path) -> None:
    with client(served) as c:
        c.get("/v1/predictions/" + "0" * 64)
        heads = c.get("/v1/heads").json()
        health = c.get("/healthz").json()
        metrics = c.get("/metrics").text
        docs = c.get("/docs")
        spec = c.get("/openapi.json").json()
    assert heads["served"]["name"] == "signs" and heads["served"]["weights_note"]
    assert heads["heads"][0]["name"] == "signs"
    assert health["status"] == "ok" and health["can_extract"] is False
    assert health["weights_note"] == heads["served"]["weights_note"]
    assert 'featcache_requests_total{route="/v1/predictions/{key}",status="404"} 1.0' in metrics
    assert "featcache_request_seconds_bucket" in metrics
    assert docs.status_code == 200 and "/v1/predict" in spec["paths"]


def test_hot_swap_under_load_loses_no_request(served: Path) -> None:
    key = hashlib.sha256(cached_files(served)[0].read_bytes()).hexdigest()
    stop = threading.Event()
    seen: list[int] = []
    failures: list[str] = []
    config = ServiceConfig(store=served / "store", head="signs", head_refresh_seconds=0.2)

    def hammer(live: str) -> None:
        with httpx.Client() as http:
            while not stop.is_set():
                r = http.get(f"{live}/v1/predictions/{key}")
                if r.status_code != 200:
                    failures.append(r.text)
                else:
                    seen.append(r.json()["head"]["version"])

    with live_server(create_app(config)) as live:
        threads = [threading.Thread(target=hammer, args=(live,)) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        version = retrain(served / "store", l2=0.1)
        deadline = time.time() + 10
        while (not seen or seen[-1] != version) and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join()
    assert not failures
    assert seen[0] == version - 1 and seen[-1] == version
    assert len(seen) > 50
