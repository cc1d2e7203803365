"""Connecting the Ray engine to a cluster: address forms, a time limit, one-line errors, quiet logs.

Addresses: none or ``local`` (start a Ray instance on this machine), ``auto`` (the cluster this
machine is part of: ``RAY_ADDRESS``, else the last ``ray start`` here) or ``HOST:PORT`` (the
head node's GCS, port 6379 by default). ``ray://`` (Ray Client) is refused before any work:
the workers write shards into the store's folder and this process registers them, so the
command must run on a machine of the cluster (the head node, or through ``ray job submit``).

Ray prints its own messages (connection retries, worker deaths, node state) on the process's
standard error, much of it from C++. Unless `verbose`, the session points file descriptor 2
at a log file while Ray runs and gives Python's ``sys.stderr`` a copy of the terminal, so
featcache's own progress still shows. The log starts in a temporary file, because the store
is created only once the connection works, and moves to ``STORE/logs/ray-RUN.log``.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from featcache.errors import ClusterError, ConfigError, DependencyError

__all__ = ["RayRunSummary", "RaySession", "check_address", "require_ray"]

RAY_CLIENT_REFUSAL = (
    "--ray-address {address}: Ray Client (ray://) cannot run extraction, because the workers "
    "write shards into the store's folder and the command registers them, so it must run on a "
    "machine of the cluster. Run it on the head node with --ray-address auto, or submit it: "
    "ray job submit --address http://HEAD:8265 -- featcache extract ... --engine ray "
    "--ray-address auto"
)
_AUTH_MARKERS = ("Unauthenticated", "InvalidAuthToken", "AuthenticationError")


def require_ray() -> Any:
    """Import Ray, or raise `DependencyError` saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise DependencyError(
            f"engine 'ray' needs Ray: pip install \"featcache[ray]\" (import failed: {exc})"
        ) from exc
    return ray


def check_address(address: str | None) -> str | None:
    """The address in canonical form: None (start Ray here), ``auto`` or ``HOST:PORT``.

    Raises `ConfigError` for ``ray://`` (saying how to run on that cluster instead) and for
    anything that is not one of the forms above.
    """
    if address is None or address.strip() in ("", "local"):
        return None
    text = address.strip()
    if text.startswith("ray://"):
        raise ConfigError(RAY_CLIENT_REFUSAL.format(address=text))
    if "://" in text:
        raise ConfigError(
            f"--ray-address {text}: give the head node's HOST:PORT (the GCS port, 6379 by "
            "default; `ray status` on the head node shows it) or auto, not a URL"
        )
    if text == "auto":
        return text
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(
            f"--ray-address {text}: expected HOST:PORT (for example 10.0.0.5:6379), auto, or "
            "nothing to start Ray on this machine"
        )
    return text


@dataclass
class RayRunSummary:
    """What a Ray run did beyond the images: where, retries, nodes lost, files cleaned up."""

    run_id: str
    log_path: str | None = None
    batches_by_node: dict[str, int] = field(default_factory=dict)
    workers_started: int = 0
    retries: int = 0
    batches_given_up: int = 0
    nodes_lost: list[str] = field(default_factory=list)
    leftovers_removed: int = 0


class _RoutedStream(io.TextIOBase):
    """A text stream that sends what Ray's own threads write to one place, the rest to another.

    Ray's driver prints worker deaths, raylet deaths and autoscaler events from its own
    Python threads (named ``ray_…``) and from callbacks on its C++ threads (``Dummy-…``).
    """

    def __init__(self, own: TextIO, ray: TextIO) -> None:
        self._own = own
        self._ray = ray

    def _target(self) -> TextIO:
        name = threading.current_thread().name
        return self._ray if name.startswith(("ray_", "Dummy-")) else self._own

    def write(self, text: str) -> int:
        return self._target().write(text)

    def flush(self) -> None:
        self._own.flush()
        self._ray.flush()

    def isatty(self) -> bool:
        return self._own.isatty()

    def fileno(self) -> int:
        return self._own.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._own.encoding


class _StderrToFile:
    """File descriptor 2 (and Ray's Python threads) into a log file; featcache's own output
    (``sys.stdout``, ``sys.stderr``) still on the terminal."""

    def __init__(self, path: Path) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        self.path = path
        self._saved = os.dup(2)
        self._stdout, self._stderr = sys.stdout, sys.stderr
        self._point_at(path)
        # The original sys.stderr object now writes into the log through descriptor 2.
        self._terminal = open(  # noqa: SIM115 (closed in restore)
            os.dup(self._saved), "w", buffering=1, encoding="utf-8", errors="backslashreplace"
        )
        sys.stderr = _RoutedStream(own=self._terminal, ray=self._stderr)
        sys.stdout = _RoutedStream(own=self._stdout, ray=self._stderr)

    def _point_at(self, path: Path) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.dup2(fd, 2)
        finally:
            os.close(fd)

    def move_to(self, path: Path) -> None:
        """Carry on in `path`, after what was written so far."""
        self._stderr.flush()
        with open(path, "ab") as target, open(self.path, "rb") as source:
            shutil.copyfileobj(source, target)
        self._point_at(path)
        self.path.unlink(missing_ok=True)
        self.path = path

    def write(self, line: str) -> None:
        self._stderr.flush()
        os.write(2, (line.rstrip("\n") + "\n").encode("utf-8", "backslashreplace"))

    def restore(self) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = self._stdout, self._stderr
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._terminal.close()


class RaySession:
    """A connection to Ray for one run; `close` disconnects (and stops a Ray it started)."""

    def __init__(self, ray: Any, run_id: str, owns_ray: bool, log: _StderrToFile | None) -> None:
        self.ray = ray
        self.run_id = run_id
        self._owns_ray = owns_ray
        self._log = log
        self.connect_seconds = 0.0
        self.summary = RayRunSummary(run_id)  # the engine fills it in

    @property
    def log_path(self) -> Path | None:
        """Where Ray's messages go (None with `verbose`)."""
        return None if self._log is None else self._log.path

    @classmethod
    def connect(cls, address: str | None, *, timeout: float, verbose: bool) -> RaySession:
        """Connect to `address` (see `check_address`; None starts Ray here) within `timeout`
        seconds; with `verbose`, Ray's messages stay on the terminal.

        Raises `ClusterError` in one line naming the address and what to check when the
        cluster is unreachable, refuses this process's credentials, or fails otherwise.
        Creates nothing but a temporary log file (removed on failure).
        """
        started = time.perf_counter()
        ray = require_ray()
        run_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
        if ray.is_initialized():  # a notebook or test connected already: use that
            return cls(ray, run_id, owns_ray=False, log=None)
        log = None
        if not verbose:
            fd, name = tempfile.mkstemp(prefix=f"featcache-ray-{run_id}-", suffix=".log")
            os.close(fd)
            log = _StderrToFile(Path(name))
        try:
            _check_reachable(address, timeout)
            _init(ray, address, timeout, verbose)
        except BaseException as exc:
            captured = ""
            if log is not None:
                log.restore()
                captured = log.path.read_text(errors="replace")
                log.path.unlink(missing_ok=True)
            if ray.is_initialized():
                ray.shutdown()
            if isinstance(exc, ClusterError):
                raise
            if not isinstance(exc, Exception):
                raise
            raise ClusterError(_connect_failure(address, timeout, exc, captured)) from None
        session = cls(ray, run_id, owns_ray=True, log=log)
        session.connect_seconds = time.perf_counter() - started
        return session

    def attach_log(self, folder: Path) -> None:
        """Move the run's log into `folder` (``STORE/logs``) as ``ray-RUN.log``."""
        if self._log is None:
            return
        folder.mkdir(parents=True, exist_ok=True)
        self._log.move_to(folder / f"ray-{self.run_id}.log")
        self.summary.log_path = str(self._log.path)

    def note(self, line: str) -> None:
        """Write one of featcache's own lines into the run log, beside Ray's."""
        if self._log is not None:
            self._log.write(f"featcache: {line}")

    def close(self) -> None:
        try:
            if self._owns_ray and self.ray.is_initialized():
                self.ray.shutdown()
        finally:
            if self._log is not None:
                self._log.restore()
                self._log = None


def _check_reachable(address: str | None, timeout: float) -> None:
    """Fail fast on an address nothing answers at (Ray itself retries for many minutes)."""
    if address == "auto":
        address = check_address(os.environ.get("RAY_ADDRESS")) or None
        if address in (None, "auto"):
            return
    if address is None:
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise ClusterError(
            f"cannot reach Ray at {address} within {timeout:g} s ({reason}): check the "
            "address (`ray status` on the head node shows it; the GCS port is 6379 by default) "
            "and that this machine can reach that port"
        ) from None


def _init(ray: Any, address: str | None, timeout: float, verbose: bool) -> None:
    # Ray retries the GCS about once a second, NUM_REDIS_GET_RETRIES (20) times by default;
    # this variable sets that count, which bounds a refused handshake (a wrong token).
    budget = "RAY_gcs_server_port_wait_time_s"
    before = os.environ.get(budget)
    os.environ[budget] = before or str(max(1, round(timeout)))
    try:
        ray.init(
            address=address,
            include_dashboard=False,
            log_to_driver=verbose,
            logging_level=logging.INFO if verbose else logging.WARNING,
        )
    finally:
        if before is None:
            del os.environ[budget]


def _connect_failure(address: str | None, timeout: float, exc: Exception, captured: str) -> str:
    where = address or "a new local Ray instance"
    text = f"{type(exc).__name__} {exc} {captured}"
    if any(marker in text for marker in _AUTH_MARKERS):
        mode = os.environ.get("RAY_AUTH_MODE", "unset")
        return (
            f"cannot connect to Ray at {where}: the cluster refused this process's credentials "
            f"(RAY_AUTH_MODE is {mode} here). Set RAY_AUTH_MODE=token and give the cluster's "
            "token in RAY_AUTH_TOKEN or ~/.ray/auth_token (`ray get-auth-token` on the head "
            "node prints it)"
        )
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return (
        f"cannot connect to Ray at {where} within {timeout:g} s ({first}): check that "
        "the cluster is up (`ray status` on the head node) and runs the same Ray version "
        "as this machine, or raise --ray-timeout"
    )
