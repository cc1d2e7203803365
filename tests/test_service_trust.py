"""The service refuses what a web page of another site could make it do (DNS-rebinding Host
names, a foreign Origin), swaps a byte-identical retrain with new class names, and says so
when the head it serves has no version left."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from featcache.classifier.train import train_head
from featcache.errors import ConfigError
from featcache.service import ServiceConfig, create_app
from featcache.store import FeatureStore
from service_fakes import LOCAL, make_store, png


def client(store: Path, base_url: str = LOCAL, **kw: object) -> TestClient:
    config = ServiceConfig(store=store, head="signs", **kw)  # type: ignore[arg-type]
    return TestClient(create_app(config), base_url=base_url)


@pytest.fixture
def fake(tmp_path: Path) -> tuple[Path, list[bytes]]:
    return make_store(tmp_path)


def test_only_exact_loopback_host_names(fake: tuple[Path, list[bytes]]) -> None:
    store, _ = fake
    with client(store) as c:
        for host in ("127.0.0.1", "127.3.4.5:8000", "localhost:1", "[::1]", "[::1]:80"):
            assert c.get("/healthz", headers={"Host": host}).status_code == 200, host
        for host in (
            "127.0.0.1.evil.example",  # DNS rebinding: a name that starts like a loopback
            "127.evil.example",
            "localhost.evil.example",
            "127.0.0.1:80.evil.example",
            "[::1].evil.example",
            "[::2]",
            "128.0.0.1",
        ):
            refused = c.get("/healthz", headers={"Host": host})
            assert refused.status_code == 400, host
            assert refused.json()["error"] == "host_not_allowed"


def test_a_foreign_origin_is_refused_before_any_upload_is_read(
    fake: tuple[Path, list[bytes]],
) -> None:
    store, _ = fake
    upload = png(999)  # unseen: storing it would grow the store
    files = {"files": ("x.png", upload, "image/png")}
    with client(store) as c:
        for origin in ("https://evil.example", "http://127.0.0.1.evil.example", "null"):
            refused = c.post("/v1/predict", files=files, headers={"Origin": origin})
            assert refused.status_code == 403, origin
            assert refused.json()["error"] == "origin_not_allowed"
            assert "--allowed-origin" in refused.json()["detail"]
        assert c.get("/healthz", headers={"Origin": "http://localhost:3000"}).status_code == 200
    with FeatureStore(store) as fs:  # nothing was extracted or stored for the refused posts
        assert not fs.has([hashlib.sha256(upload).hexdigest()], "f" * 64)
    with client(store, allowed_origins=("https://app.example",)) as c:
        ok = c.get("/healthz", headers={"Origin": "https://app.example"})
        assert ok.status_code == 200
        assert c.get("/healthz", headers={"Origin": "https://other.example"}).status_code == 403
    with pytest.raises(ConfigError, match="allowed_origins"):
        ServiceConfig(store=store, head="signs", allowed_origins=("app.example",))


def wait_for(check: object, seconds: float = 10.0) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_a_byte_identical_retrain_is_served_with_its_class_names(
    fake: tuple[Path, list[bytes]],
) -> None:
    store, images = fake
    key = hashlib.sha256(images[0]).hexdigest()
    with client(store, head_refresh_seconds=0.1) as c:
        first = c.get(f"/v1/predictions/{key}").json()
        assert first["head"]["version"] == 1
        assert first["predictions"][0]["label"] in ("stop", "yield", "priority")
        with FeatureStore(store) as fs:  # class folders renamed, same images, same seed
            rows = fs.dataset_rows("signs")
            fs.add_dataset("signs", rows, ["halt", "give-way", "main-road"])
            record = train_head(fs, "signs", name="signs", params={"random_state": 0}).record
            assert record.sha256 == fs.head("signs", 1).sha256  # the very same bytes
        renamed = {"stop": "halt", "yield": "give-way", "priority": "main-road"}

        def swapped() -> bool:
            answer = c.get(f"/v1/predictions/{key}").json()
            return bool(answer["head"]["version"] == 2)

        assert wait_for(swapped)
        answer = c.get(f"/v1/predictions/{key}").json()
        assert answer["predictions"][0]["label"] == renamed[first["predictions"][0]["label"]]
        assert c.get("/v1/heads").json()["served"]["version"] == 2


def test_a_head_with_no_version_left_answers_503_and_healthz_says_why(
    fake: tuple[Path, list[bytes]],
) -> None:
    store, images = fake
    key = hashlib.sha256(images[0]).hexdigest()
    with client(store, head_refresh_seconds=0.1) as c:
        assert c.get(f"/v1/predictions/{key}").status_code == 200
        with FeatureStore(store) as fs:
            fs.delete_head("signs")
        assert wait_for(lambda: c.get("/healthz").status_code == 503)
        health = c.get("/healthz").json()
        assert health["error"] == "head_unavailable" and "no version left" in health["reason"]
        gone = c.get(f"/v1/predictions/{key}")
        assert gone.status_code == 503 and gone.json()["error"] == "head_unavailable"
        with FeatureStore(store) as fs:
            version = train_head(fs, "signs", name="signs", params={"random_state": 0})
            assert version.record.version == 2
        assert wait_for(lambda: c.get("/healthz").status_code == 200)
        assert c.get(f"/v1/predictions/{key}").json()["head"]["version"] == 2
