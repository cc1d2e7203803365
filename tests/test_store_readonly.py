"""A store the user may read but not write answers info, verify, export and cached predict.

The store's folders and files are made read-only (``chmod -R a-w``) and the commands run in
a child process. The tests usually run as root, and root ignores file permissions through
its capabilities CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH and CAP_FOWNER; so a root child drops
those from its capability bounding set before it starts (``prctl(PR_CAPBSET_DROP)``, what
``setpriv --bounding-set -dac_override,...`` does), and is then refused writes like any user.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from conftest import CountingNetwork, write_images
from featcache.classifier.train import train_head
from featcache.errors import StoreError
from featcache.extractor.pipeline import extract
from featcache.extractor.weights import Weights
from featcache.store import FeatureStore

STUB = Weights(Path("stub-alexnet.npy"), {}, "12" * 32, "RANDOM stub weights for tests")
PR_CAPBSET_DROP = 24
CAPS_THAT_IGNORE_PERMISSIONS = (1, 2, 3)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER
SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture
def folder() -> Iterator[Path]:
    """A folder for the read-only tree, made writable again afterwards so it can be removed."""
    folder = Path(tempfile.mkdtemp(prefix="featcache-ro-"))
    yield folder
    for path in [folder, *folder.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)
    shutil.rmtree(folder)


def read_only_tree(root: Path) -> None:
    """chmod -R a-w."""
    for path in [*root.rglob("*"), root]:
        path.chmod(stat.S_IMODE(path.stat().st_mode) & ~0o222)


def as_reader(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m featcache ARGS`` as a user who cannot write the store."""
    return run_child(["-m", "featcache", *args], cwd)


def as_reader_python(code: str) -> subprocess.CompletedProcess[str]:
    return run_child(["-c", code])


def run_child(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    def drop() -> None:
        if os.geteuid() == 0:
            libc = ctypes.CDLL(None, use_errno=True)
            for cap in CAPS_THAT_IGNORE_PERMISSIONS:
                if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                    raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")

    env = {**os.environ, "PYTHONPATH": str(SRC), "HOME": "/tmp"}
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        preexec_fn=drop,
        cwd=cwd,
        check=False,
    )


@pytest.mark.parametrize("closed", [True, False], ids=["closed", "wal-left-open"])
def test_read_only_store_answers_info_verify_export_and_cached_predict(
    folder: Path, closed: bool
) -> None:
    """`closed`: the writer closed the store (no -wal/-shm: SQLite's immutable mode is the
    way in); otherwise a writer still holds it open, its -wal and -shm files beside it."""
    images = folder / "imgs"
    write_images(images, 6, size=8, classes=("stop", "yield", "go"))
    store = folder / "store"
    writer = FeatureStore(store)
    extract(images, STUB, writer, dataset="signs", network_factory=CountingNetwork)
    train_head(writer, "signs", name="signs", params={"random_state": 0})
    if closed:
        writer.close()
    assert (store / "catalog.sqlite-wal").exists() != closed
    read_only_tree(store)
    read_only_tree(images)
    before = sorted(p.name for p in store.iterdir())
    outbox = folder / "out"
    outbox.mkdir()
    probe = as_reader_python(f"open({str(store / 'probe')!r}, 'w')")
    assert probe.returncode != 0 and "Permission denied" in probe.stderr  # the setup holds

    info = as_reader("store", "info", str(store))
    assert info.returncode == 0, info.stderr
    assert "dataset signs: 6 images" in info.stdout
    verify = as_reader("store", "verify", str(store))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "0 problem(s)" in verify.stdout
    export = as_reader(
        "export", "--store", str(store), "--dataset", "signs", "--out", str(outbox / "s.npz")
    )
    assert export.returncode == 0, export.stderr
    assert (outbox / "s.npz").stat().st_size > 0
    evaluate = as_reader(
        "evaluate",
        "--store",
        str(store),
        "--head",
        "signs",
        "--dataset",
        "signs",
        "--split",
        "all",
        cwd=outbox,
    )
    assert evaluate.returncode == 0, evaluate.stdout + evaluate.stderr
    assert list((outbox / "featcache-reports").glob("signs-v1-signs-all/*.json"))
    predict = as_reader("predict", "--store", str(store), "--head", "signs", str(images))
    assert predict.returncode == 0, predict.stdout + predict.stderr
    assert predict.stdout.count("(cached)") == 6
    # writing is refused with a message that says why
    repair = as_reader("store", "verify", str(store), "--repair")
    assert repair.returncode == 1 and "read-only" in repair.stderr + repair.stdout
    assert sorted(p.name for p in store.iterdir()) == before
    if not closed:
        writer.close()


def test_read_only_flag_never_writes(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    store.add_head("h", b"payload", {})
    store.close()
    with FeatureStore(tmp_path, read_only=True) as fs:
        assert fs.read_only and fs.head("h").version == 1
        with pytest.raises(StoreError, match="store is read-only here"):
            fs.add_head("h", b"other", {})
        with pytest.raises(StoreError, match="read-only here, so vectors cannot be stored"):
            fs.put_batch(["k"], {"fc7": np.ones((1, 4), np.float32)}, "f" * 64)
    assert not (tmp_path / "shards").exists()
    with pytest.raises(StoreError, match="no feature store here"):
        FeatureStore(tmp_path / "new", read_only=True)
