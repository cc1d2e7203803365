"""predict and serve with the store on object storage (moto's S3 server) and the catalog on
PostgreSQL: an unseen image is extracted, written to the bucket and answered, and another
process (another host's cache) answers it from the bucket; two servers on one bucket and
catalog both pick up a head trained elsewhere.

The network is VGG16 narrowed 16 times with seeded RANDOM weights (`narrow_backbones`):
real TensorFlow extraction in milliseconds, not ImageNet features.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import fsspec
import httpx2 as httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from conftest import write_images
from featcache.classifier.train import train_head
from featcache.cli import app
from featcache.extractor.pipeline import ExtractConfig, extract
from featcache.extractor.registry import backbone_named
from featcache.service import ServiceConfig, create_app
from featcache.store import FeatureStore
from featcache.store.bucket import cache_folder
from servers import free_port

pytestmark = pytest.mark.slow  # TensorFlow extracts; servers start in other processes


def png(seed: int) -> bytes:
    buf = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, (40, 30, 3), np.uint8)
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def objects(bucket: str) -> list[str]:
    fs = fsspec.filesystem("s3")
    fs.invalidate_cache()
    return [o for o in fs.find(bucket.removeprefix("s3://")) if o.endswith(".npy")]


@pytest.fixture
def remote(
    bucket: str, pg_catalog: str, tmp_path: Path, narrow_backbones: int
) -> tuple[str, str, Path]:
    """A bucket store (catalog on PostgreSQL) with 8 images' fc2 vectors and head 'signs';
    returns (store URL, catalog URL, weights file)."""
    write_images(tmp_path / "data", 8, classes=("stop", "yield"))
    weights = backbone_named("vgg16").write_demo_weights(tmp_path / "vgg16.h5", 0)
    with FeatureStore(bucket, catalog=pg_catalog) as store:
        extract(
            tmp_path / "data",
            weights,
            store,
            dataset="signs",
            config=ExtractConfig(backbone="vgg16"),
        )
        train_head(store, "signs", layer="fc2", name="signs", params={"random_state": 0})
    return bucket, pg_catalog, weights


def other_host(tmp_path: Path, name: str) -> dict[str, str]:
    """The environment of a process on another host: its own local cache folder."""
    return {**os.environ, "FEATCACHE_CACHE": str(tmp_path / f"cache-{name}")}


def test_predict_extracts_to_the_bucket_and_another_process_answers(
    remote: tuple[str, str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket, catalog, weights = remote
    monkeypatch.chdir(tmp_path)
    # --catalog sets the variable for the processes a command starts: undone after the test
    monkeypatch.setenv("FEATCACHE_CATALOG", catalog)
    command = ["--catalog", catalog, "evaluate", "--store", bucket, "--head", "signs"]
    evaluated = CliRunner().invoke(app, [*command, "--dataset", "signs", "--split", "all"])
    assert evaluated.exit_code == 0, evaluated.output
    # the report goes to this host's folder for the store, not to a folder named 's3:'
    assert str(cache_folder(bucket) / "reports" / "signs-v1-signs-all") in evaluated.output
    assert not (tmp_path / "s3:").exists()
    new = tmp_path / "new.png"
    new.write_bytes(png(7))
    key = hashlib.sha256(new.read_bytes()).hexdigest()
    before = len(objects(bucket))
    command = ["--catalog", catalog, "predict", "--store", bucket, "--head", "signs"]
    first = CliRunner().invoke(app, [*command, "--weights", str(weights), str(new), "--json"])
    assert first.exit_code == 0, first.output
    answer = json.loads(first.output.splitlines()[0])
    assert answer["cached"] is False and answer["key"] == key
    assert len(objects(bucket)) == before + 1  # the new vector's shard went to the bucket
    with FeatureStore(bucket, catalog=catalog, create=False) as store:
        assert [r.path.endswith("new.png") for r in store.dataset_rows("uploads")] == [True]

    # another process with its own (empty) local cache, without weights: answered from the
    # bucket, the same numbers
    done = subprocess.run(
        [sys.executable, "-m", "featcache", *command, str(new), "--json"],
        capture_output=True,
        text=True,
        env=other_host(tmp_path, "b"),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    again = json.loads(done.stdout.splitlines()[0])
    assert again["cached"] is True and again["predictions"] == answer["predictions"]
    assert list((tmp_path / "cache-b").iterdir())  # its blocks came through its own cache


def test_the_service_stores_uploads_in_the_bucket(
    remote: tuple[str, str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket, catalog, weights = remote
    monkeypatch.setenv("FEATCACHE_CATALOG", catalog)
    upload = png(11)
    key = hashlib.sha256(upload).hexdigest()
    before = len(objects(bucket))
    config = ServiceConfig(store=Path(bucket), head="signs", weights=weights)
    with TestClient(create_app(config), base_url="http://127.0.0.1") as client:
        r = client.post("/v1/predict", files={"files": ("u.png", upload)})
        assert r.status_code == 200, r.text
        first = r.json()["results"][0]
        assert first["cached"] is False and first["key"] == key
        health = client.get("/healthz").json()
        assert health["status"] == "ok"
    assert len(objects(bucket)) == before + 1

    # a second server with another host's cache and no weights answers it by key
    monkeypatch.setenv("FEATCACHE_CACHE", str(tmp_path / "cache-b"))
    reader = ServiceConfig(store=Path(bucket), head="signs")
    with TestClient(create_app(reader), base_url="http://127.0.0.1") as client:
        r = client.get(f"/v1/predictions/{key}")
        assert r.status_code == 200, r.text
        assert r.json()["cached"] is True
        assert r.json()["predictions"] == first["predictions"]
        assert r.json()["path"].endswith("u.png")


@contextmanager
def serving(bucket: str, catalog: str, env: dict[str, str], log: Path) -> Iterator[str]:
    """`featcache serve` on the bucket store in another process; yields its base URL."""
    port = free_port()
    command = [sys.executable, "-m", "featcache", "--catalog", catalog, "serve"]
    command += ["--store", bucket, "--head", "signs", "--port", str(port), "--quiet"]
    with log.open("wb") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 90
            while True:
                try:
                    if httpx.get(f"{base}/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"the server did not start: {log.read_text()}")
                time.sleep(0.2)
            yield base
        finally:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(30)


def test_two_servers_on_one_bucket_follow_a_head_trained_elsewhere(
    remote: tuple[str, str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket, catalog, _ = remote
    with FeatureStore(bucket, catalog=catalog, create=False) as store:
        key = store.dataset_rows("signs")[0].key
    # host a: `featcache serve` in another process; host b: the app in this one, with its
    # own cache folder; a third host (this test's store) trains
    monkeypatch.setenv("FEATCACHE_CATALOG", catalog)
    monkeypatch.setenv("FEATCACHE_CACHE", str(tmp_path / "cache-b"))
    config = ServiceConfig(store=Path(bucket), head="signs", head_refresh_seconds=0.5)
    with (
        serving(bucket, catalog, other_host(tmp_path, "a"), tmp_path / "a.log") as a,
        TestClient(create_app(config), base_url="http://127.0.0.1") as b,
    ):

        def versions() -> tuple[int, int]:
            return (
                httpx.get(f"{a}/v1/predictions/{key}").json()["head"]["version"],
                b.get(f"/v1/predictions/{key}").json()["head"]["version"],
            )

        assert versions() == (1, 1)
        monkeypatch.setenv("FEATCACHE_CACHE", str(tmp_path / "cache-c"))
        with FeatureStore(bucket, catalog=catalog, create=False) as store:
            params = {"random_state": 0, "l2": 5.0}
            record = train_head(store, "signs", layer="fc2", name="signs", params=params).record
        assert record.version == 2
        deadline = time.monotonic() + 30
        while versions() != (2, 2) and time.monotonic() < deadline:
            time.sleep(0.3)
        assert versions() == (2, 2)
        assert httpx.get(f"{a}/v1/heads").json()["served"]["version"] == 2
        assert b.get("/v1/heads").json()["served"]["version"] == 2


def test_runtime_models_stay_in_each_hosts_cache(
    remote: tuple[str, str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rule: a converted runtime model (OpenVINO) of a bucket store is kept in the local
    cache of the host that converted it, under the store's folder there and the extractor
    fingerprint (CACHE/<store>/runtimes/FP/NAME), never on the bucket; another host converts
    its own, verify and gc see this host's."""
    pytest.importorskip("openvino")
    from featcache.predictor import Predictor

    bucket, catalog, weights = remote
    images = {}
    for host, seed in (("a", 21), ("b", 22)):
        images[host] = tmp_path / f"new-{host}.png"
        images[host].write_bytes(png(seed))
        monkeypatch.setenv("FEATCACHE_CACHE", str(tmp_path / f"cache-{host}"))
        with FeatureStore(bucket, catalog=catalog, create=False) as store:
            predictor = Predictor(store, "signs", weights=weights, runtime="openvino")
            [result] = predictor.predict([images[host]])  # unseen: converted, then extracted
            assert result.error is None and not result.cached
            fingerprint = store.head("signs").meta["fingerprint"]
            here = tmp_path / f"cache-{host}" / cache_folder(bucket).name
            assert [(f.parent, f.name) for _, f, _ in store.runtime_models.folders()] == [
                (here / "runtimes" / fingerprint[:16], "openvino-fc2-float32")
            ]
            assert store.verify().runtime_models == 1
            if host == "b":  # a's image: a's vector from the bucket, not a's model
                [seen] = Predictor(store, "signs").predict([images["a"]])
                assert seen.cached and seen.error is None
            # gc keeps the model while its extractor has vectors
            assert store.gc(grace_seconds=0).runtime_models_removed == 0
    fs = fsspec.filesystem("s3")
    fs.invalidate_cache()
    assert not [o for o in fs.find(bucket.removeprefix("s3://")) if "/runtimes/" in o]
