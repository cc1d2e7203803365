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


def test_a_forked_worker_ends_quietly_on_sigterm(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pool worker forked from a command (cleanlab's, in doctor) inherits its SIGTERM
    handler; when the pool ends it with SIGTERM, it dies by the signal, not with a
    `Terminated` traceback (it exited 1 and printed one in doctor's output)."""
    import multiprocessing

    from featcache import cli

    monkeypatch.setattr(cli, "_MAIN_PID", os.getpid())
    previous = signal.signal(signal.SIGTERM, cli._terminate)
    try:
        worker = multiprocessing.get_context("fork").Process(target=time.sleep, args=(30,))
        worker.start()
        time.sleep(0.2)
        worker.terminate()  # SIGTERM, as Pool.terminate sends it
        worker.join(10)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert worker.exitcode == -signal.SIGTERM
