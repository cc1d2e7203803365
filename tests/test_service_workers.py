"""``featcache serve --workers 2``: both processes serve, both swap to a retrained head, and
`/metrics` adds up the counts of both."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx2 as httpx
import pytest

from service_fakes import make_store, retrain

pytestmark = pytest.mark.slow  # starts three processes: about a minute on a busy machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def counted(metrics: str, route: str, status: int) -> float:
    pattern = rf'^featcache_requests_total{{route="{re.escape(route)}",status="{status}"}} (\S+)$'
    found = re.search(pattern, metrics, re.M)
    return float(found[1]) if found else 0.0


def test_two_workers_serve_swap_and_count(tmp_path: Path) -> None:
    store, images = make_store(tmp_path)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "featcache", "serve", "--store", str(store)]
    command += ["--head", "signs", "--port", str(port), "--workers", "2", "--quiet"]
    log = (tmp_path / "server.log").open("wb")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise AssertionError(
                f"the server did not start: {(tmp_path / 'server.log').read_text()}"
            )
        keys = [hashlib.sha256(d).hexdigest() for d in images]
        for i in range(60):  # a new connection each: the kernel spreads them over both
            assert httpx.get(f"{base}/v1/predictions/{keys[i % len(keys)]}").status_code == 200
        first = httpx.get(f"{base}/metrics").text
        version = retrain(store, l2=4.0)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            swapped = re.search(
                r"^featcache_head_swaps_total (\S+)$", httpx.get(f"{base}/metrics").text, re.M
            )
            if swapped and float(swapped[1]) == 2:
                break
            time.sleep(0.2)
        versions = {httpx.get(f"{base}/healthz").json()["version"] for _ in range(30)}
        answers = {
            httpx.get(f"{base}/v1/predictions/{keys[0]}").json()["head"]["version"]
            for _ in range(30)
        }
        last = httpx.get(f"{base}/metrics").text
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(30)
        log.close()
    assert counted(first, "/v1/predictions/{key}", 200) == 60  # both workers' counts
    assert re.search(r"^featcache_head_swaps_total 2\.0$", last, re.M)  # each worker swapped
    assert versions == {version} and answers == {version}
    assert counted(last, "/healthz", 200) >= 31
