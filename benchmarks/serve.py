"""HTTP service throughput and latency against a bare FastAPI app, measured with wrk.

    python benchmarks/serve.py [--seconds 3] [--rounds 3] [--before OLD/src] [--workers 2]
                               [--no-h11]

Builds a store of 200 generated 32x32 PNGs with RANDOM 4,096-wide fc7 vectors (no network is
run: the numbers are not AlexNet features) and a 43-class softmax head, then starts these
servers on 127.0.0.1, all under the same uvicorn and venv:

- ``bare``: a FastAPI app with the same routes (GET /v1/predictions/{key} with the same key
  pattern, POST /v1/predict with files) answering a JSON of the same shape, computed once;
- ``featcache``: this checkout's app (access log off, as the bare app has none), and
  ``featcache-no-lru`` the same without the answer cache;
- ``bare-asyncio-h11``, ``featcache-asyncio-h11``: both without uvicorn[standard]'s uvloop
  and httptools (compared with each other; --no-h11 skips them);
- ``before`` (with --before SRC): the featcache found in SRC, e.g. an older checkout's src/;
- ``featcache-workersN`` (with --workers N): ``featcache serve --workers N``.

wrk (a compiled load generator: ``apt-get install wrk``; Python client threads on the same
cores would measure the client) drives each with 1 and 8 connections for cached key lookups
(GET, 200 keys in turn) and cached uploads (POST, one of 20 stored images). The servers take
turns, figure by figure, for a few rounds; the script prints the median requests/s and
median latency of each, and their ratio to the bare app. The machine may be shared: compare
ratios from one run, not absolute figures.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import numpy as np
from fastapi import FastAPI, File, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from PIL import Image

HERE = Path(__file__).resolve()
CLASSES = 43
DIM = 4096


def png(seed: int) -> bytes:
    buf = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), np.uint8)
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_store(root: Path) -> tuple[list[str], list[bytes]]:
    from featcache.classifier.train import train_head
    from featcache.store import DatasetRow, FeatureStore

    images = [png(i) for i in range(200)]
    keys = [hashlib.sha256(d).hexdigest() for d in images]
    rng = np.random.default_rng(0)
    labels = np.arange(len(keys)) % CLASSES
    vectors = np.abs(rng.standard_normal((len(keys), DIM))).astype(np.float32)
    vectors[np.arange(len(keys)), labels] += 5
    fingerprint = "b" * 64
    with FeatureStore(root) as store:
        store.register_extractor(
            fingerprint, {"weights_note": "RANDOM vectors for a benchmark, not AlexNet features"}
        )
        store.put_batch(keys, {"fc7": vectors}, fingerprint)
        names = [f"class{i}" for i in range(CLASSES)]
        rows = [DatasetRow(k, f"{i}.png", int(labels[i])) for i, k in enumerate(keys)]
        store.add_dataset("bench", rows, names)
        train_head(store, "bench", name="bench", params={"epochs": 5})
    return keys, images


# -- servers --------------------------------------------------------------------------------


def bare_app(sample: bytes) -> object:
    """A FastAPI app with featcache's route shapes answering a fixed JSON of the same size."""
    app = FastAPI()
    predictions = [{"class_id": i, "label": f"class{i}", "probability": 0.123456} for i in range(5)]
    answer = {
        "path": None,
        "key": "0" * 64,
        "cached": True,
        "head": {"name": "bench", "version": 1},
    }
    answer["predictions"] = predictions

    @app.get("/v1/predictions/{key}")
    async def prediction(
        key: Annotated[str, PathParam(pattern=r"^[0-9a-fA-F]{64}$")],
    ) -> JSONResponse:
        return JSONResponse({**answer, "key": key})

    @app.post("/v1/predict")
    async def predict(files: Annotated[list[UploadFile], File()]) -> JSONResponse:
        results = []
        for file in files:
            data = await file.read()
            key = hashlib.sha256(data).hexdigest()
            results.append({**answer, "path": file.filename, "key": key})
        return JSONResponse({"results": results})

    return app


def serve_role(args: argparse.Namespace) -> None:
    """Run one server in this process (the script calls itself with --role)."""
    import uvicorn

    if args.role == "bare":
        app = bare_app(b"")
    else:
        from featcache.service import ServiceConfig, create_app

        fields = {"store": Path(args.store), "head": "bench"}
        if "access_log" in ServiceConfig.__dataclass_fields__:
            fields["access_log"] = False
        if args.no_lru:
            fields["answer_cache_size"] = 0
        app = create_app(ServiceConfig(**fields))  # type: ignore[arg-type]
    uvicorn.run(
        app,  # type: ignore[arg-type]
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        loop=args.loop,
        http=args.http,
    )


class Server:
    """One server process on 127.0.0.1:`port`, started and waited for."""

    def __init__(self, name: str, command: list[str], port: int, env: dict[str, str]) -> None:
        self.name, self.port = name, port
        self.process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return
            except OSError:
                if self.process.poll() is not None:
                    sys.exit(f"{name}: server exited with {self.process.returncode}")
                time.sleep(0.2)
        sys.exit(f"{name}: server did not start")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(30)


# -- load -----------------------------------------------------------------------------------


def lua_string(data: bytes) -> str:
    return '"' + "".join(f"\\{b}" for b in data) + '"'


def write_scripts(folder: Path, keys: list[str], images: list[bytes]) -> tuple[Path, Path]:
    get = folder / "get.lua"
    get.write_text(
        "local keys = {" + ",".join(f'"{k}"' for k in keys) + "}\n"
        "local i = 0\n"
        "request = function()\n  i = i % #keys + 1\n"
        '  return wrk.format("GET", "/v1/predictions/" .. keys[i])\nend\n'
    )
    bodies = []
    for data in images[:20]:
        body = (
            b'--xyz\r\nContent-Disposition: form-data; name="files"; filename="c.png"\r\n'
            b"Content-Type: image/png\r\n\r\n" + data + b"\r\n--xyz--\r\n"
        )
        bodies.append(lua_string(body))
    post = folder / "post.lua"
    post.write_text(
        "local bodies = {" + ",".join(bodies) + "}\nlocal i = 0\n"
        'wrk.headers["Content-Type"] = "multipart/form-data; boundary=xyz"\n'
        "request = function()\n  i = i % #bodies + 1\n"
        '  return wrk.format("POST", "/v1/predict", nil, bodies[i])\nend\n'
    )
    return get, post


def wrk(port: int, script: Path, connections: int, seconds: float) -> tuple[float, float, int]:
    """(requests/s, median latency in ms, non-2xx count) from one wrk run."""
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds:g}s",
            "--latency",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    value, unit = re.search(r"50%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    median = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rate, median, int(bad[1]) if bad else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--before", type=Path, help="src/ of the featcache to compare with")
    parser.add_argument("--workers", type=int, default=0, help="also run serve --workers N")
    parser.add_argument("--rounds", type=int, default=3, help="turns per figure (median)")
    parser.add_argument("--no-lru", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--no-h11", action="store_true", help="skip the servers without uvloop and httptools"
    )
    parser.add_argument("--role", choices=["bare", "featcache", "build"], help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--loop", default="auto", help=argparse.SUPPRESS)
    parser.add_argument("--http", default="auto", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "build":  # a store in the format of the featcache on PYTHONPATH
        build_store(Path(args.store))
        return
    if args.role is not None:
        serve_role(args)
        return
    if shutil.which("wrk") is None:
        sys.exit(
            "wrk is not installed: apt-get install wrk (Python client threads would "
            "measure the client on these cores, not the server)"
        )

    src = str(HERE.parents[1] / "src")
    with tempfile.TemporaryDirectory(prefix="featcache-serve-") as tmp:
        work = Path(tmp)
        keys, images = build_store(work / "store")
        get, post = write_scripts(work, keys, images)
        print("store: 200 images, RANDOM 4096-wide fc7 vectors (not AlexNet features), 43 classes")
        print(
            f"wrk, 1 thread, {args.seconds:g} s per figure, median of {args.rounds} rounds with "
            "the servers taking turns; the machine may be shared: compare ratios\n"
        )
        store = str(work / "store")

        def role(name: str, path: str, *extra: str) -> tuple[list[str], dict[str, str]]:
            command = [sys.executable, str(HERE), "--role", name, "--store", store, *extra]
            return command, {**os.environ, "PYTHONPATH": path}

        plans = {
            "bare": role("bare", src),
            "featcache": role("featcache", src),
            "featcache-no-lru": role("featcache", src, "--no-lru"),
        }
        if not args.no_h11:
            plans["bare-asyncio-h11"] = role("bare", src, "--loop", "asyncio", "--http", "h11")
            plans["featcache-asyncio-h11"] = role(
                "featcache", src, "--loop", "asyncio", "--http", "h11"
            )
        if args.before is not None:  # its own store: the catalog format may have changed
            old = str(args.before.resolve())
            old_store = str(work / "store-before")
            build = [sys.executable, str(HERE), "--role", "build", "--store", old_store]
            subprocess.run(build, env={**os.environ, "PYTHONPATH": old}, check=True, timeout=600)
            command, env = role("featcache", old)
            plans["before"] = ([*command[:-1], old_store], env)
        if args.workers > 1:
            cli = [sys.executable, "-m", "featcache", "serve", "--store", store, "--head"]
            cli += ["bench", "--quiet", "--workers", str(args.workers)]
            plans[f"featcache-workers{args.workers}"] = (cli, {**os.environ, "PYTHONPATH": src})

        servers: dict[str, Server] = {}
        try:
            for name, (command, env) in plans.items():
                port = free_port()
                servers[name] = Server(name, [*command, "--port", str(port)], port, env)
            for server in servers.values():  # warm-up: caches, first imports
                wrk(server.port, get, 8, 1)
                wrk(server.port, post, 8, 1)
            runs: dict[tuple[str, str, int], list[tuple[float, float, int]]] = {}
            for _ in range(args.rounds):
                for what, script in (("cached key GET", get), ("cached upload", post)):
                    for connections in (1, 8):
                        for name, server in servers.items():
                            figure = wrk(server.port, script, connections, args.seconds)
                            runs.setdefault((name, what, connections), []).append(figure)
        finally:
            for server in servers.values():
                server.stop()

        def median(name: str, what: str, connections: int) -> tuple[float, float, int]:
            figures = runs[(name, what, connections)]
            rate = float(np.median([f[0] for f in figures]))
            latency = float(np.median([f[1] for f in figures]))
            return rate, latency, sum(f[2] for f in figures)

        print(
            f"{'server':<24} {'request':<15} {'conn':>4} {'req/s':>8} {'× bare':>7} "
            f"{'p50 ms':>7} {'× bare':>7} {'non-2xx':>7}"
        )
        for what in ("cached key GET", "cached upload"):
            for connections in (1, 8):
                for name in servers:
                    rate, latency, bad = median(name, what, connections)
                    base = "bare-asyncio-h11" if name.endswith("asyncio-h11") else "bare"
                    base_rate, base_latency, _ = median(base, what, connections)
                    print(
                        f"{name:<24} {what:<15} {connections:>4} {rate:8.0f} "
                        f"{rate / base_rate:7.2f} {latency:7.3f} {latency / base_latency:7.2f} "
                        f"{bad:>7}"
                    )
                print()


if __name__ == "__main__":
    main()
