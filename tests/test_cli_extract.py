"""The command line for extraction, weights and store maintenance, with the real network."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import write_images
from featcache.cli import app
from featcache.store import FeatureStore

pytestmark = pytest.mark.slow
runner = CliRunner()


def cli(*args: str | Path) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def test_extract_info_verify_export(tmp_path: Path, weights_path: Path) -> None:
    paths = write_images(tmp_path / "signs", 6)
    paths[0].write_bytes(b"broken")
    code, output = cli(
        "extract",
        tmp_path / "signs",
        "--store",
        tmp_path / "st",
        "--weights",
        weights_path,
        "--batch-size",
        "2",
        "--profile-time",
    )
    assert code == 0, output
    assert "dataset 'signs': 6 images, 5 extracted, 0 already cached, 1 failed" in output
    assert "NOT ImageNet" in output and "network" in output
    assert output.count("NOT ImageNet") == 1 and output.count("extractor ") == 1  # each once
    assert f"skipped {paths[0]}" in output
    assert "dataset 'signs' rows: 5 added, 0 updated, 0 removed; now 5 rows (no split 5)" in output
    code, output = cli(
        "extract",
        tmp_path / "signs",
        "--store",
        tmp_path / "st",
        "--weights",
        weights_path,
        "--strict",
    )
    assert code == 3 and "0 extracted, 5 already cached, 1 failed" in output
    assert output.count("NOT ImageNet") == 1 and output.count("extractor ") == 1
    assert "rows: 0 added, 0 updated, 0 removed; now 5 rows" in output  # a re-run changes nothing
    code, output = cli("store", "info", "--store", tmp_path / "st")
    assert code == 0 and "dataset signs: 5 images" in output and "[RANDOM WEIGHTS]" in output
    code, output = cli("store", "verify", "--store", tmp_path / "st")
    assert code == 0 and "0 problem(s)" in output
    code, output = cli(
        "export", "--store", tmp_path / "st", "--dataset", "signs", "--out", tmp_path / "signs.npz"
    )
    assert code == 0 and "NOT ImageNet" in output  # the export says its vectors are random
    with np.load(tmp_path / "signs.npz") as npz:
        assert npz["features"].shape == (5, 4096) and npz["features"].dtype == np.float32
        assert sorted(npz["labels"].tolist()) == [0, 0, 1, 1, 1]


def test_errors_exit_1_with_the_file_named(tmp_path: Path) -> None:
    write_images(tmp_path / "d", 1)
    code, output = cli(
        "extract", tmp_path / "d", "--store", tmp_path / "st", "--weights", tmp_path / "missing.npy"
    )
    assert code == 1 and "missing.npy: no such weights file" in output
    assert not (tmp_path / "st").exists()  # no empty store is left behind
    code, output = cli(
        "extract",
        tmp_path / "d",
        "--store",
        tmp_path / "st",
        "--weights",
        tmp_path / "missing.npy",
        "--layers",
        "fc9",
    )
    assert code == 1 and "error: --layers must be a non-empty subset" in output
    code, output = cli("store", "verify", "--store", tmp_path / "nowhere")
    assert code == 1 and "no feature store here" in output


def _extract_cmd(data: Path, store: Path, weights: Path, batch: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "featcache",
        "extract",
        str(data),
        "--store",
        str(store),
        "--weights",
        str(weights),
        "--batch-size",
        str(batch),
    ]


def _shards(store: Path) -> int:
    try:
        with sqlite3.connect(store / "catalog.sqlite", timeout=1) as db:
            return int(db.execute("SELECT COUNT(*) FROM shards").fetchone()[0])
    except sqlite3.Error:
        return 0


def test_kill_9_then_rerun_gives_the_clean_result(tmp_path: Path, weights_path: Path) -> None:
    write_images(tmp_path / "data", 96, seed=5)
    store = tmp_path / "killed"
    proc = subprocess.Popen(
        _extract_cmd(tmp_path / "data", store, weights_path, 8),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while _shards(store) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = _shards(store)
    assert 3 <= done_before < 12, "the run was not interrupted half-way"
    rerun = subprocess.run(
        _extract_cmd(tmp_path / "data", store, weights_path, 8),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert "already cached" in rerun.stdout and "0 failed" in rerun.stdout
    clean = subprocess.run(
        _extract_cmd(tmp_path / "data", tmp_path / "clean", weights_path, 8),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert clean.returncode == 0, clean.stderr
    killed, fresh = FeatureStore(store), FeatureStore(tmp_path / "clean")
    killed.gc(grace_seconds=0)  # a shard renamed but not registered at the kill, if any
    report = killed.verify()
    assert report.ok, report.problems
    assert report.vectors == 96  # each key once
    a, b = killed.vectors("data"), fresh.vectors("data")
    assert a.keys == b.keys and a.paths == b.paths
    np.testing.assert_array_equal(a.y, b.y)
    err = np.linalg.norm(a.X - b.X, axis=1) / np.linalg.norm(b.X, axis=1)
    assert err.max() < 1e-5  # same numbers, up to oneDNN's batch-dependent rounding


def test_two_extract_processes_on_one_store(tmp_path: Path, weights_path: Path) -> None:
    write_images(tmp_path / "data", 40, seed=6)
    procs = [
        subprocess.Popen(
            _extract_cmd(tmp_path / "data", tmp_path / "st", weights_path, 4),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for proc in procs:
        _out, errors = proc.communicate(timeout=300)
        assert proc.returncode == 0, errors
    store = FeatureStore(tmp_path / "st")
    report = store.verify()
    assert report.ok, report.problems
    assert report.vectors == 40
    assert len(store.vectors("data").keys) == 40
