"""SIGTERM ends a command as Ctrl-C does: its temporary file is removed, exit 130."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow  # writes 244 MB of random weights


def test_sigterm_while_writing_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "w.npy"
    run = subprocess.Popen(
        [sys.executable, "-m", "featcache", "weights", "demo", str(target)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and run.poll() is None:
            if any(p.name.startswith(".tmp-") for p in tmp_path.iterdir()):
                break  # the atomic write is under way
            time.sleep(0.01)
        assert run.poll() is None, "the command finished before it could be stopped"
        run.send_signal(signal.SIGTERM)
        _, stderr = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert list(tmp_path.iterdir()) == []  # neither the temporary nor a half file
