"""The Ray engine on a real two-node cluster: a head and a second raylet started with
``ray start`` on this machine (one CPU each, their own temporary folders, token
authentication), driven through the command line.

Every Ray server stays on 127.0.0.1: Ray rewrites a loopback address to the machine's own
on multi-node clusters unless RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, and then refuses to start
a second raylet, so the second one is started through a small wrapper that lifts only that
check. The cluster's processes are ended by their ids (never ``ray stop``, which stops every
Ray on the machine).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from conftest import PYTHON, REPO, write_images

pytestmark = [
    pytest.mark.slow,
    pytest.mark.ray,
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]
if not Path("/proc/self/stat").exists():
    pytest.skip("the cluster test finds its processes in /proc (Linux)", allow_module_level=True)

_SECOND_RAYLET = """
import sys
from ray._private import ray_constants, services
ray_constants.ENABLE_RAY_CLUSTER = True  # lift `ray start`'s multi-node check only
services.get_node_ip_address = lambda address=None: "127.0.0.1"
services.resolve_ip_for_localhost = lambda host: host
from ray.scripts.scripts import main
main()
"""
_START_LIMIT = 180.0


@dataclass(frozen=True)
class Cluster:
    address: str
    env: dict[str, str]  # what a driver needs: loopback, the token, this checkout's code
    starters: tuple[subprocess.Popen[bytes], ...]

    def workers(self, doing: str = "") -> list[int]:
        """The pids of the extraction actors (those running `doing`), among this cluster's
        processes only."""
        return [
            pid
            for starter in self.starters
            for pid in _descendants(starter.pid)
            if f"_ExtractWorker{doing}" in _cmdline(pid)
        ]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _start_node(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`ray start --block`, once more if it fails (a raylet has 30 s to register, which a
    busy machine can miss)."""
    for _ in range(2):
        starter = _start(command, env, log)
        deadline = time.monotonic() + _START_LIMIT
        while time.monotonic() < deadline and starter.poll() is None:
            if "Ray runtime started" in log.read_text(errors="replace"):
                return starter
            time.sleep(0.5)
        _stop((starter,))
    raise RuntimeError(f"ray start did not come up: {log.read_text(errors='replace')[-2000:]}")


def _stop(starters: tuple[subprocess.Popen[bytes], ...]) -> None:
    """SIGTERM this cluster's processes (by pid), SIGKILL what is left after 20 s."""
    pids = [pid for starter in starters for pid in (starter.pid, *_descendants(starter.pid))]
    try:
        for sig, grace in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 10.0)):
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                for starter in starters:
                    starter.poll()  # reap our own children
                pids = [pid for pid in pids if Path(f"/proc/{pid}").exists() and _alive(pid)]
                if not pids:
                    return
                time.sleep(0.5)
    finally:
        # A starter that died between its poll() and the /proc check is a zombie nobody
        # reaped: wait for it, or its Popen warns "still running" when collected later
        # (an error under -W error, raised in whichever test happens to run then).
        for starter in starters:
            with contextlib.suppress(subprocess.TimeoutExpired):
                starter.wait(timeout=5)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.fixture(scope="module")
def cluster(s3_endpoint: str) -> Iterator[Cluster]:
    pytest.importorskip("ray")
    root = Path(tempfile.mkdtemp(prefix="fc-ray-", dir="/tmp"))  # Ray's socket paths are short
    ports = _free_ports(16)
    env = {
        **os.environ,
        # every node reaches the S3 server, as a real cluster's nodes have the credentials
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO / "tests")]),
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(16),
    }
    ray = [PYTHON, "-m", "ray.scripts.scripts", "start", "--block", "--num-cpus", "1"]

    def node_ports(first: int) -> list[str]:
        names = (
            *("dashboard-agent-listen", "dashboard-agent-grpc", "runtime-env-agent"),
            *("metrics-export", "node-manager", "object-manager"),
        )
        return [arg for i, n in enumerate(names) for arg in (f"--{n}-port", str(ports[first + i]))]

    head = [*ray, "--head", "--port", str(ports[0]), "--temp-dir", str(root / "h")]
    head += ["--include-dashboard", "false", "--dashboard-port", str(ports[1])]
    head += ["--ray-client-server-port", str(ports[2]), *node_ports(3)]
    second = [PYTHON, "-c", _SECOND_RAYLET, "start", "--block", "--num-cpus", "1"]
    second += ["--address", f"127.0.0.1:{ports[0]}", "--node-ip-address", "127.0.0.1"]
    second += ["--temp-dir", str(root / "w"), *node_ports(9)]
    starters: tuple[subprocess.Popen[bytes], ...] = ()
    try:
        starters = (_start_node(head, env, root / "head.out"),)
        starters += (_start_node(second, env, root / "second.out"),)
        yield Cluster(f"127.0.0.1:{ports[0]}", env, starters)
    finally:
        _stop(starters)
        shutil.rmtree(root, ignore_errors=True)


def _featcache(
    *args: str, env: dict[str, str], timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "featcache", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _start_extract(
    cluster: Cluster,
    data: Path,
    store: Path | str,
    weights: Path,
    *extra: str,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[str]:
    """`featcache extract DATA` on the cluster in the background (dataset "d", batches of 8)."""
    command = [PYTHON, "-m", "featcache", "extract", str(data), "--store", str(store)]
    command += ["--weights", str(weights), "--dataset", "d", *extra]
    command += ["--engine", "ray", "--ray-address", cluster.address, "--batch-size", "8"]
    return subprocess.Popen(
        command, env=env or cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_a_worker_killed_mid_run_still_gives_a_verified_store(
    cluster: Cluster, weights_path: Path, tmp_path: Path
) -> None:
    from featcache.extractor.pipeline import ExtractConfig, extract
    from featcache.store import FeatureStore

    write_images(tmp_path / "data", 48, seed=5)
    store = tmp_path / "store"
    run = _start_extract(cluster, tmp_path / "data", store, weights_path)
    killed = None
    deadline = time.monotonic() + 300
    while killed is None and time.monotonic() < deadline and run.poll() is None:
        if any((store / "shards").rglob("ray-*.npy")):  # mid-run: a batch is stored already
            busy = cluster.workers(".extract")
            if busy:
                killed = busy[0]
                os.kill(killed, signal.SIGKILL)
        time.sleep(0.2)
    out, err = run.communicate(timeout=600)
    assert killed is not None, (out, err)
    assert run.returncode == 0, (out, err)
    assert "48 extracted" in out and "1 retried" in out, out
    assert "Worker ID" not in err, err  # Ray's account is in the run log, not the terminal
    assert "died on batch" in err
    logs = list((store / "logs").glob("ray-*.log"))
    assert len(logs) == 1 and "died on batch" in logs[0].read_text()

    verify = _featcache("store", "verify", "--store", str(store), env=cluster.env)
    assert verify.returncode == 0, verify.stdout + verify.stderr

    local = FeatureStore(tmp_path / "local")
    extract(tmp_path / "data", weights_path, local, dataset="d", config=ExtractConfig())
    a, b = FeatureStore(store).vectors("d"), local.vectors("d")
    assert a.keys == b.keys
    np.testing.assert_allclose(a.X, b.X, rtol=1e-5, atol=1e-5)


def test_a_token_mismatch_fails_in_one_line_and_creates_no_store(
    cluster: Cluster, weights_path: Path, tmp_path: Path
) -> None:
    write_images(tmp_path / "data", 2)
    store = tmp_path / "store"
    env = {**cluster.env, "RAY_AUTH_MODE": "disabled"}
    done = _featcache(
        *("extract", str(tmp_path / "data"), "--store", str(store)),
        *("--weights", str(weights_path), "--engine", "ray", "--ray-address", cluster.address),
        *("--ray-timeout", "3"),
        env=env,
        timeout=180,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert cluster.address in lines[0] and "RAY_AUTH_MODE=token" in lines[0]
    assert not store.exists()


@pytest.mark.parametrize(
    ("address", "says"),
    [
        ("127.0.0.1:1", "cannot reach Ray at 127.0.0.1:1"),
        ("ray://127.0.0.1:10001", "ray job submit"),
    ],
)
def test_an_address_that_cannot_work_fails_in_one_line_and_creates_no_store(
    address: str, says: str, weights_path: Path, tmp_path: Path
) -> None:
    write_images(tmp_path / "data", 2)
    store = tmp_path / "store"
    done = _featcache(
        *("extract", str(tmp_path / "data"), "--store", str(store)),
        *("--weights", str(weights_path), "--engine", "ray", "--ray-address", address),
        *("--ray-timeout", "3"),
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        timeout=120,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], done.stderr
    assert not store.exists()


def test_help_offers_only_addresses_that_work() -> None:
    done = _featcache("extract", "--help", env={**os.environ, "COLUMNS": "200"}, timeout=60)
    text = " ".join(done.stdout.split())
    assert done.returncode == 0
    assert "HEAD:6379" in text and "Not ray:// (use ray job submit)" in text
    assert "ray://HOST" not in text


def _libraries_and_reads(pid: int) -> tuple[str, int]:
    """The files mapped into a process (its loaded libraries) and the bytes it has read so
    far; ("", 0) once it is gone."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
        io = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    except (OSError, ValueError):
        return "", 0
    return maps, int(io["rchar"])


def test_openvino_workers_use_the_model_the_driver_converted(
    cluster: Cluster, weights_path: Path, tmp_path: Path
) -> None:
    from featcache.extractor.pipeline import ExtractConfig, extract
    from featcache.store import FeatureStore

    pytest.importorskip("openvino")
    write_images(tmp_path / "data", 48, seed=9)
    store = tmp_path / "store"
    run = _start_extract(cluster, tmp_path / "data", store, weights_path, "--runtime", "openvino")
    # What each worker has mapped and read once its network is built (past __init__).
    seen: dict[int, tuple[str, int]] = {}
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and run.poll() is None:
        for pid in cluster.workers():
            if "__init__" not in _cmdline(pid):
                now = _libraries_and_reads(pid)
                if now[0]:
                    seen[pid] = now
        time.sleep(0.1)
    out, err = run.communicate(timeout=600)
    assert run.returncode == 0, (out, err)
    assert "48 extracted" in out, out
    assert seen, "no worker was seen with its network built"
    # TensorFlow is not loaded (OpenVINO's front end for it is not it). Whether a worker
    # still maps the cached model depends on when it is sampled (OpenVINO may release the
    # mapping once compiled), so reading is what tells: each worker reads the model once
    # (its digests are checked), but not the weights too, which converting would need.
    (model,) = (store / "runtimes").rglob("model.bin")
    assert not any("/site-packages/tensorflow/" in maps for maps, _ in seen.values())
    limit = model.stat().st_size + weights_path.stat().st_size // 2
    reads = [read for _, read in seen.values()]
    assert all(read < limit for read in reads), (limit, reads)

    verify = _featcache("store", "verify", "--store", str(store), env=cluster.env)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    models = FeatureStore(store).runtime_models
    assert [folder.name for _, folder, _ in models.folders()] == ["openvino-fc7-float32"]

    # The local engine with that converted model (copied, so not converted again here).
    shutil.copytree(store / "runtimes", tmp_path / "local" / "runtimes")
    local = FeatureStore(tmp_path / "local")
    config = ExtractConfig(runtime="openvino")
    report = extract(tmp_path / "data", weights_path, local, dataset="d", config=config)
    assert report.extracted == 48
    assert [f.name for _, f, _ in local.runtime_models.folders()] == ["openvino-fc7-float32"]
    a, b = FeatureStore(store).vectors("d"), local.vectors("d")
    assert a.keys == b.keys
    error = np.linalg.norm(a.X - b.X, axis=1) / np.linalg.norm(b.X, axis=1)
    assert error.max() < 1e-5, error.max()


def test_workers_write_to_a_bucket_and_the_driver_registers_the_shards(
    cluster: Cluster, weights_path: Path, tmp_path: Path, bucket: str, pg_catalog: str
) -> None:
    """No shared folder: the store is on the bucket, its catalog on PostgreSQL; the workers
    write their shards to the bucket, the driver registers them."""
    import fsspec

    from featcache.extractor.pipeline import extract
    from featcache.store import FeatureStore

    write_images(tmp_path / "data", 16, seed=8)
    env = {**cluster.env, "FEATCACHE_CATALOG": pg_catalog}
    env["FEATCACHE_CACHE"] = str(tmp_path / "driver-cache")  # the driver host's local cache
    run = _start_extract(cluster, tmp_path / "data", bucket, weights_path, env=env)
    out, err = run.communicate(timeout=600)
    assert run.returncode == 0, (out, err)
    assert "16 extracted" in out, out
    s3 = fsspec.filesystem("s3")
    s3.invalidate_cache()
    shards = [o for o in s3.find(bucket.removeprefix("s3://")) if o.endswith(".npy")]
    assert len(shards) == 2 and all(o.rsplit("/", 1)[1].startswith("ray-") for o in shards)
    assert not list((tmp_path / "driver-cache").rglob("shards"))  # nothing written locally
    verify = _featcache("store", "verify", "--store", bucket, env=env)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "2 shards, 16 vectors" in verify.stdout, verify.stdout

    local = FeatureStore(tmp_path / "local", catalog="")
    extract(tmp_path / "data", weights_path, local, dataset="d")
    with FeatureStore(bucket, catalog=pg_catalog, create=False) as remote:
        a, b = remote.vectors("d"), local.vectors("d")
    assert a.keys == b.keys
    np.testing.assert_allclose(a.X, b.X, rtol=1e-5, atol=1e-5)


def test_a_node_lost_mid_run_still_gives_a_verified_store(
    cluster: Cluster, weights_path: Path, tmp_path: Path
) -> None:
    """The module's last test: it kills the second raylet."""
    write_images(tmp_path / "data", 48, seed=6)
    store = tmp_path / "store"
    run = _start_extract(cluster, tmp_path / "data", store, weights_path)
    second = cluster.starters[1].pid
    killed = None
    deadline = time.monotonic() + 300
    while killed is None and time.monotonic() < deadline and run.poll() is None:
        on_second = [p for p in _descendants(second) if "_ExtractWorker" in _cmdline(p)]
        if on_second and any((store / "shards").rglob("ray-*.npy")):
            raylets = [p for p in _descendants(second) if "raylet/raylet " in _cmdline(p)]
            killed = raylets[0]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.2)
    out, err = run.communicate(timeout=600)
    assert killed is not None, (out, err)
    assert run.returncode == 0, (out, err)
    assert "48 extracted" in out, out
    assert "Raylet is terminated" not in err, err  # Ray's dump is in the run log
    verify = _featcache("store", "verify", "--store", str(store), env=cluster.env)
    assert verify.returncode == 0, verify.stdout + verify.stderr
