"""Input files are read within bounds: a device, FIFO or 4 GB sparse file is that file's
failure (RSS stays small), failures.csv keeps one row per path, uploads' failures are
counted not stored, and the images extracted to answer requests are kept by gc."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CountingNetwork, write_images
from featcache.classifier.train import train_head
from featcache.data.source import ImageItem, read_bounded
from featcache.errors import ImageError, ImageTooLargeError
from featcache.extractor.network import Runtime
from featcache.extractor.pipeline import extract
from featcache.extractor.weights import Weights
from featcache.predictor import UPLOADS_DATASET, Predictor
from featcache.store import FeatureStore


def test_read_bounded_refuses_devices_fifos_and_large_files(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="/dev/zero: not a regular file"):
        read_bounded(Path("/dev/zero"), "/dev/zero", 1000)
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)  # nobody writes: a blocking open would hang here
    with pytest.raises(ImageError, match="pipe.png: not a regular file"):
        ImageItem(str(fifo), file=fifo).key()
    big = tmp_path / "big.png"
    big.write_bytes(b"x" * 2001)
    with pytest.raises(ImageTooLargeError, match="2001 bytes, over the 2000-byte limit"):
        ImageItem(str(big), file=big, max_bytes=2000).rgb()
    assert ImageItem(str(big), file=big).key() == hashlib.sha256(b"x" * 2001).hexdigest()


@pytest.fixture
def trained(tmp_path: Path, stub_weights: Weights) -> tuple[Path, list[Path]]:
    images = write_images(tmp_path / "data", 16, classes=("a", "b"))
    with FeatureStore(tmp_path / "store") as store:
        extract(
            tmp_path / "data", stub_weights, store, dataset="d", network_factory=CountingNetwork
        )
        train_head(store, "d", name="h", params={"random_state": 0, "epochs": 2})
    return tmp_path / "store", images


# VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss across exec, so a child of a
# large pytest process would report the parent's size at fork.
RSS_SCRIPT = """
import sys
from featcache.cli import main
sys.argv = ["featcache", *sys.argv[1:]]
try:
    main()
finally:
    hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
    sys.stderr.write(f"\\nMAXRSS_KB {hwm}\\n")
"""


def test_dev_zero_and_a_4gb_sparse_file_are_one_files_failure_each(
    trained: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    store, images = trained
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = folder / "good.png"
    good.write_bytes(images[0].read_bytes())
    sparse = folder / "huge.png"
    with open(sparse, "wb") as f:
        f.truncate(4 * 1024**3)  # 4 GB, no blocks on disk
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            RSS_SCRIPT,
            "predict",
            "--store",
            str(store),
            "--head",
            "h",
            "/dev/zero",
            str(folder),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )
    output = done.stdout + done.stderr
    rss_mb = int(output.rsplit("MAXRSS_KB", 1)[1].split()[0]) / 1024
    assert "/dev/zero: not a regular file" in output
    assert f"{sparse}: 4294967296 bytes, over the 268435456-byte limit" in output
    assert "good.png (cached)" in output  # the good file beside them is answered
    print(f"predict /dev/zero + 4 GB sparse file: peak RSS {rss_mb:.0f} MB")
    assert rss_mb < 1024, f"peak RSS {rss_mb:.0f} MB"


def test_failures_csv_keeps_one_row_per_path(tmp_path: Path, stub_weights: Weights) -> None:
    write_images(tmp_path / "data", 4)
    (tmp_path / "data" / "a" / "broken.png").write_bytes(b"not an image")
    with FeatureStore(tmp_path / "store") as store:
        for _ in range(3):
            report = extract(
                tmp_path / "data",
                stub_weights,
                store,
                dataset="d",
                network_factory=CountingNetwork,
            )
            assert report.failed == 1
        assert len(store.failures()) == 1
    lines = (tmp_path / "store" / "failures.csv").read_text().splitlines()
    assert len(lines) == 2 and "broken.png: not an image in a known format" in lines[1]


def test_served_images_are_recorded_and_kept_by_gc(
    trained: tuple[Path, list[Path]], tmp_path: Path, stub_weights: Weights
) -> None:
    store_path, _ = trained
    new = write_images(tmp_path / "new", 2, seed=7)
    bad = tmp_path / "new" / "bad.png"
    bad.write_bytes(b"junk")
    with FeatureStore(store_path) as store:
        predictor = Predictor(store, "h", weights=stub_weights.path)
        predictor._weights = stub_weights  # the stub stands for the weights of a fake network
        predictor._runtime = lambda name, layer: Runtime("custom", CountingNetwork)  # type: ignore[method-assign]
        results = predictor.predict([*new, bad])
        assert [r.error is None for r in results] == [True, True, False]
        assert store.failures() == []  # a refused image is an answer, not a stored row
        rows = store.dataset_rows(UPLOADS_DATASET)
        assert sorted(r.key for r in rows) == sorted(r.key for r in results[:2])
        assert all(" h@1 " in r.path and r.label is None for r in rows)
        store.gc(grace_seconds=0)
        assert store.has([r.key for r in results[:2]], predictor.head.fingerprint) == {
            r.key for r in results[:2]
        }
        again = predictor.predict(new)
        assert all(r.cached for r in again) and len(store.dataset_rows(UPLOADS_DATASET)) == 2
