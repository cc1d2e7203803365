"""Ctrl-C during a real extract: it says what was stored, exits 130, and the same command
resumes; a fully cached rerun still says the weights are random."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, write_images

pytestmark = pytest.mark.slow


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_sigint_then_resume(tmp_path: Path, weights_path: Path) -> None:
    write_images(tmp_path / "imgs", 600, classes=("a", "b", "c"))
    store = tmp_path / "st"
    command = [
        sys.executable,
        "-m",
        "featcache",
        "extract",
        str(tmp_path / "imgs"),
        "--store",
        str(store),
        "--weights",
        str(weights_path),
        "--batch-size",
        "16",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    # As under a backgrounded shell (`pytest &`), which ignores SIGINT: a child inherits
    # that, and Python then installs no KeyboardInterrupt handler. The child restores the
    # default before exec, as a terminal's foreground job has it.
    ignored = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        run = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            preexec_fn=_default_sigint,
        )
    finally:
        signal.signal(signal.SIGINT, ignored)
    try:
        deadline = time.monotonic() + 180
        shards = store / "shards"
        while time.monotonic() < deadline and run.poll() is None:
            if shards.exists() and any(shards.rglob("*.npy")):  # vectors are being stored
                break
            time.sleep(0.05)
        assert run.poll() is None, "extract finished before it could be interrupted"
        run.send_signal(signal.SIGINT)
        stdout, stderr = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 130, stdout + stderr
    assert "Traceback" not in stderr
    said = re.search(
        rf"interrupted: {store} holds (\d+) 'fc7' vector\(s\) of this extractor", stderr
    )
    assert said is not None, stderr
    assert "Run the same command again to resume" in stderr

    resumed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    counts = re.search(r"(\d+) extracted, (\d+) already cached, 0 failed", resumed.stdout)
    assert counts is not None, resumed.stdout
    extracted, cached = map(int, counts.groups())
    assert cached == int(said.group(1)) > 0 and extracted + cached == 600

    cached_run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert cached_run.returncode == 0
    assert "0 extracted, 600 already cached" in cached_run.stdout
    assert "NOT ImageNet" in cached_run.stdout  # the store remembers the weights were random
