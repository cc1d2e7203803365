"""`fetch_weights` against an HTTP server on 127.0.0.1 serving generated weights.

The download, checks and renames do not depend on the layers' sizes, so the served file is
seeded random weights in small layer shapes (`SMALL_SHAPES`, which the loader expects while
`small_shapes` is active), not the 244 MB test file.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import SMALL_SHAPES, Shapes
from featcache.cli import app
from featcache.errors import WeightsError
from featcache.extractor import weights as weights_module
from featcache.extractor.fetch import fetch_weights
from featcache.extractor.weights import file_sha256, write_demo_weights


@pytest.fixture(scope="module")
def small_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(weights_module, "LAYER_SHAPES", SMALL_SHAPES)
        return write_demo_weights(tmp_path_factory.mktemp("fetch") / "small.npy", seed=0)


@pytest.fixture(scope="module")
def server(small_weights: Path) -> Iterator[str]:
    payload = small_weights.read_bytes()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            if self.path == "/good.npy":
                body, length = payload, len(payload)
            elif self.path == "/cut.npy":  # promises everything, sends a third, hangs up
                body, length = payload[: len(payload) // 3], len(payload)
            elif self.path == "/html":
                body, length = b"<html>Access denied</html>", 26
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(length))
            self.end_headers()
            with contextlib.suppress(BrokenPipeError):
                self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_fetch_streams_checks_and_renames(
    server: str, tmp_path: Path, small_weights: Path, small_shapes: Shapes
) -> None:
    seen: list[tuple[int, int | None]] = []
    dest = tmp_path / "sub" / "bvlc_alexnet.npy"
    weights = fetch_weights(dest, f"{server}/good.npy", progress=lambda d, t: seen.append((d, t)))
    assert file_sha256(dest) == file_sha256(small_weights) == weights.sha256
    assert seen[-1] == (small_weights.stat().st_size, small_weights.stat().st_size)
    assert weights.layers["fc6"][0].shape == small_shapes["fc6"]
    assert [p.name for p in dest.parent.iterdir()] == ["bvlc_alexnet.npy"]


@pytest.mark.parametrize(
    ("route", "message"),
    [
        ("/cut.npy", "cut short|download failed"),
        ("/html", "not a usable weights file"),
        ("/missing", "HTTP Error 404"),
    ],
)
def test_bad_download_leaves_nothing(server: str, tmp_path: Path, route: str, message: str) -> None:
    dest = tmp_path / "bvlc_alexnet.npy"
    with pytest.raises(WeightsError, match=message):
        fetch_weights(dest, server + route, timeout=10)
    assert list(tmp_path.iterdir()) == []


def test_bad_download_keeps_an_existing_file(server: str, tmp_path: Path) -> None:
    dest = tmp_path / "bvlc_alexnet.npy"
    dest.write_bytes(b"previous")
    with pytest.raises(WeightsError):
        fetch_weights(dest, f"{server}/html", timeout=10)
    assert dest.read_bytes() == b"previous"


def test_cli_fetch_and_info(server: str, tmp_path: Path, small_shapes: Shapes) -> None:
    dest = tmp_path / "w.npy"
    runner = CliRunner()
    result = runner.invoke(
        app, ["weights", "fetch", "--url", f"{server}/good.npy", "--dest", str(dest)]
    )
    assert result.exit_code == 0, result.output
    assert "sha256" in result.output
    info = runner.invoke(app, ["weights", "info", str(dest)])
    assert info.exit_code == 0
    assert "fc6    W (24, 10)" in info.output and "NOT ImageNet" in info.output
    bad = runner.invoke(app, ["weights", "fetch", "--url", f"{server}/html", "--dest", str(dest)])
    assert bad.exit_code == 1
    assert "not a usable weights file" in bad.output
