"""The body limit holds while the body streams: a chunked 200 MB upload against a 10 MB limit
is answered 413 after about 10 MB read, on a real uvicorn server."""

from __future__ import annotations

import re
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx2 as httpx

from featcache.service import ServiceConfig, create_app
from service_fakes import live_server, make_store

MB = 1024 * 1024


def chunks(total: int, size: int = MB) -> Iterator[bytes]:
    """A multipart body of `total` bytes as HTTP chunks, made as they are sent."""
    head = (
        b'--b\r\nContent-Disposition: form-data; name="files"; filename="big.png"\r\n'
        b"Content-Type: image/png\r\n\r\n"
    )
    yield b"%x\r\n%s\r\n" % (len(head), head)
    block = b"\x89PNG" * (size // 4)
    for _ in range(total // size):
        yield b"%x\r\n%s\r\n" % (len(block), block)


def send_chunked(base: str, total: int, seconds: float = 60) -> tuple[bytes, int]:
    """POST `total` bytes chunked; stop sending once the server answers. Return the answer's
    head and how many bytes were handed to the socket."""
    url = urlsplit(base)
    sock = socket.create_connection((url.hostname, url.port), timeout=seconds)
    sock.sendall(
        b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\n\r\n"
    )
    sent = 0
    deadline = time.monotonic() + seconds
    answer = b""
    sock.setblocking(False)
    try:
        pending = b""
        body = chunks(total)
        while time.monotonic() < deadline:
            readable, writable, _ = select.select([sock], [sock], [], 0.5)
            if readable:
                part = sock.recv(65536)
                answer += part
                if not part or b"\r\n\r\n" in answer:
                    break
                continue
            if writable:
                if not pending:
                    pending = next(body, b"")
                    if not pending:
                        break
                try:
                    n = sock.send(pending)
                except (BrokenPipeError, ConnectionResetError):
                    break
                sent += n
                pending = pending[n:]
        sock.setblocking(True)
        sock.settimeout(5)
        while b"\r\n\r\n" not in answer:
            part = sock.recv(65536)
            if not part:
                break
            answer += part
    finally:
        sock.close()
    return answer, sent


def test_a_chunked_upload_over_the_limit_is_cut_off(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path)
    config = ServiceConfig(store=store, head="signs", max_request_bytes=10 * MB, access_log=False)
    with live_server(create_app(config)) as base:
        answer, sent = send_chunked(base, 200 * MB)
        metrics = httpx.get(f"{base}/metrics").text
        assert httpx.get(f"{base}/healthz").status_code == 200  # still serving
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    read = float(re.search(r"^featcache_request_body_bytes_total (\S+)$", metrics, re.M)[1])  # type: ignore[index]
    assert 10 * MB < read <= 10 * MB + MB  # the limit plus at most one buffer
    assert sent < 100 * MB  # the client was stopped, not drained
    assert 'featcache_requests_total{route="/v1/predict",status="413"} 1.0' in metrics


def test_a_declared_length_over_the_limit_is_refused_unread(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path)
    config = ServiceConfig(store=store, head="signs", max_request_bytes=MB, access_log=False)
    with live_server(create_app(config)) as base:
        refused = httpx.post(f"{base}/v1/predict/keys", content=b"{" * (2 * MB))
        metrics = httpx.get(f"{base}/metrics").text
    assert refused.status_code == 413 and refused.json()["error"] == "request_too_large"
    assert "featcache_request_body_bytes_total 0.0" in metrics
