"""A store the user may read but not write answers info, verify, export and cached predict.

The store's folders and files are made read-only (``chmod -R a-w``) and the commands run in
a child process. The tests usually run as root, and root ignores file permissions through
its capabilities CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH and CAP_FOWNER; so a root child drops
those from its capability bounding set before it starts (``prctl(PR_CAPBSET_DROP)``, what
``setpriv --bounding-set -dac_override,...`` does), and is then refused writes like any user.
"""

from __future__ import annotations

import ctypes
import json
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


#: Runs in the child: a write probe, then each command through typer's runner (one Python
#: start-up for all of them); prints [[exit code, output], ...] as JSON.
CHILD = """
import json, os, sys
from typer.testing import CliRunner
from featcache.cli import app
try:
    open(os.path.join(sys.argv[1], "probe"), "w")
    probe = "written"
except PermissionError:
    probe = "refused"
runner = CliRunner()
results = [[0, probe]]
for args in json.loads(sys.argv[2]):
    result = runner.invoke(app, args)
    results.append([result.exit_code, result.output])
print(json.dumps(results))
"""


def as_reader(store: Path, commands: list[list[str]], cwd: Path) -> list[tuple[int, str]]:
    """Run featcache `commands` as a user who cannot write `store`; (exit code, output) each,
    after the result of trying to create a file in the store ("refused" or "written")."""
    child = run_child(["-c", CHILD, str(store), json.dumps(commands)], cwd)
    assert child.returncode == 0, child.stderr
    return [(code, output) for code, output in json.loads(child.stdout)]


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
    st = str(store)
    commands = {
        "info": ["store", "info", "--store", st],
        "verify": ["store", "verify", "--store", st],
        "predict": ["predict", "--store", st, "--head", "signs", str(images)],
        "repair": ["store", "verify", "--store", st, "--repair"],
    }
    if closed:  # the same read path again; run once, as they import matplotlib and pyarrow
        commands["export"] = ["export", "--store", st, "--dataset", "signs", "--out", "s.npz"]
        commands["evaluate"] = [
            *["evaluate", "--store", st, "--head", "signs", "--dataset", "signs"],
            *["--split", "all"],
        ]
    results = as_reader(store, list(commands.values()), cwd=outbox)
    assert results[0] == (0, "refused")  # the set-up holds: this user cannot write the store
    got = dict(zip(commands, results[1:], strict=True))
    assert got["info"][0] == 0 and "dataset signs: 6 images" in got["info"][1], got
    assert got["verify"][0] == 0 and "0 problem(s)" in got["verify"][1], got
    assert got["predict"][0] == 0 and got["predict"][1].count("(cached)") == 6, got
    # writing is refused with a message that says why
    assert got["repair"][0] == 1 and "read-only" in got["repair"][1], got
    if closed:
        assert got["export"][0] == 0 and (outbox / "s.npz").stat().st_size > 0, got
        assert got["evaluate"][0] == 0, got
        assert list((outbox / "featcache-reports").glob("signs-v1-signs-all/*.json"))
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
