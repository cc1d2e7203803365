"""Bounded open files: a store of many more shards than the process may open files is read,
trained on and served, in a child process with a low RLIMIT_NOFILE."""

from __future__ import annotations

import hashlib
import os
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from featcache.errors import StoreError
from featcache.store import DatasetRow, FeatureStore

FP = "c" * 64
SHARDS = 300
LIMIT = 128  # open files the child may hold: far fewer than the shards

CHILD = textwrap.dedent(
    """
    import os, sys, threading, time
    import httpx, uvicorn
    from featcache.classifier.train import train_head
    from featcache.service import ServiceConfig, create_app
    from featcache.store import FeatureStore

    store_path = sys.argv[1]
    with FeatureStore(store_path) as store:
        data = store.vectors("d")
        streamed = sum(len(b) for b in store.batches("d", batch_size=64))
        result = train_head(store, "d", name="h", params={"random_state": 0, "epochs": 3})
        print("read", len(data), streamed, "val", result.metrics["val_accuracy"])
        keys = data.keys

    app = create_app(ServiceConfig(store=store_path, head="h", head_refresh_seconds=60))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    codes = {}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        for key in keys[::2]:  # one key of every shard
            status = client.get(f"/v1/predictions/{key}").status_code
            codes[status] = codes.get(status, 0) + 1
        health = client.get("/healthz").status_code
    server.should_exit = True
    thread.join(30)
    print("served", sorted(codes.items()), "healthz", health)
    print("fds", len(os.listdir("/proc/self/fd")))
    """
)


def many_shard_store(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SHARDS shards of 2 rows (fsync skipped while building: durability is not the point)."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)).astype(np.float32) * 3
    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(2 * SHARDS)]
    labels = [i % 3 for i in range(2 * SHARDS)]
    with FeatureStore(path) as store:
        store.register_extractor(FP, {"weights_note": "RANDOM test vectors"})
        for s in range(SHARDS):
            part = slice(2 * s, 2 * s + 2)
            X = centres[labels[part]] + rng.normal(size=(2, 8)).astype(np.float32)
            store.put_batch(keys[part], {"fc7": X}, FP)
        store.add_dataset(
            "d", [DatasetRow(k, f"{i}.png", labels[i]) for i, k in enumerate(keys)], ["a", "b", "c"]
        )
    monkeypatch.undo()


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="counts /proc/self/fd")
def test_read_train_and_serve_under_a_low_open_file_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    many_shard_store(tmp_path / "store", monkeypatch)
    script = tmp_path / "child.py"
    script.write_text(CHILD)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, LIMIT))

    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "store")],
        capture_output=True,
        text=True,
        preexec_fn=limit,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = {line.split()[0]: line.split()[1:] for line in done.stdout.splitlines()}
    assert lines["read"][:2] == [str(2 * SHARDS), str(2 * SHARDS)]
    assert float(lines["read"][3]) > 0.8
    assert " ".join(lines["served"]) == f"[(200, {SHARDS})] healthz 200"
    assert int(lines["fds"][0]) < LIMIT


def test_too_many_open_files_is_not_called_a_damaged_shard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    store = FeatureStore(tmp_path / "s")
    keys = [f"k{i}" for i in range(40)]
    store.put_batch(keys, {"fc7": np.ones((40, 4), np.float32)}, FP)

    def exhausted(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(np, "load", exhausted)  # the memory map (many rows of a shard)
    monkeypatch.setattr(os, "open", exhausted)  # positioned reads (a few rows)
    for asked in (keys[:1], keys):
        with pytest.raises(StoreError, match=r"too many open files.*ulimit -n.*max_open_shards"):
            store.get(asked, FP)
