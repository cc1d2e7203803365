"""A pool of Ray actors that runs batches with a bounded number of retries.

Ray Data's actor pools restart a crashing actor and retry its task forever; a batch that
kills its worker every time (a segfault or out-of-memory on one image) would never end.
Here Ray retries nothing itself (``max_restarts=0``, ``max_task_retries=0``): when a worker
dies, the pool starts a fresh one and queues the batch again, at most `max_retries` times;
after that the batch is given up with the reason (worker died, out of memory, node lost) and
the run goes on. A worker gets a batch once it is set up, and holds one at a time, so a
death is charged to the batch that was running. The pool watches the cluster's nodes and
says which ones were lost.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from featcache.errors import ClusterError, FeatcacheError

__all__ = ["Batch", "Outcome", "PoolEvent", "PoolStats", "RayActorPool"]

#: How long the pool waits for a first worker to be ready (TensorFlow and the weights load
#: in each; a cluster without a free CPU never starts one).
START_LIMIT_SECONDS = 300.0
_NODE_POLL_SECONDS = 2.0


@dataclass
class Batch:
    """One batch of rows for a worker; `attempts` counts the workers that died on it."""

    index: int
    rows: list[Any]
    attempts: int = 0
    reasons: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Outcome:
    """A batch's end: the worker's `result`, or None and the `reason` it was given up."""

    batch: Batch
    result: Any
    node: str
    reason: str = ""


@dataclass(frozen=True)
class PoolEvent:
    """Something the user is told while the run goes: a retry, a node lost, a batch given up."""

    kind: str  # "worker", "retry", "gave_up", "node_lost"
    message: str


@dataclass
class PoolStats:
    """What the pool did: batches finished per node, retries, nodes lost, workers started."""

    batches_by_node: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    given_up: int = 0
    nodes_lost: list[str] = field(default_factory=list)
    workers_started: int = 0
    first_worker_seconds: float = 0.0  # from the pool's start to its first worker ready


@dataclass
class _Worker:
    handle: Any
    ready_ref: Any
    node: str = ""
    node_id: str = ""
    batch: Batch | None = None
    started: bool = False


class RayActorPool:
    """Run batches on up to `size` actors, each made by `start` (a new actor handle).

    The actors need ``ready()`` returning ``{"node_id", "ip"}`` and ``extract(rows)``.
    """

    def __init__(
        self,
        ray: Any,
        start: Callable[[], Any],
        size: int,
        max_retries: int,
        notify: Callable[[PoolEvent], None],
        log: Callable[[str], None],
    ) -> None:
        self.ray = ray
        self.log = log
        self.start = start
        self.size = size
        self.max_retries = max_retries
        self.notify = notify
        self.stats = PoolStats()
        self._workers: list[_Worker] = []
        self._start_deaths = 0
        self._began = time.monotonic()

    def run(self, batches: list[Batch]) -> Iterator[Outcome]:
        """Yield every batch's outcome as it comes; kill the pool's actors at the end.

        Raises `ClusterError` when workers cannot start (an error in their set-up, or no
        worker ready within `START_LIMIT_SECONDS`), and re-raises a featcache error raised
        inside a worker (a store it cannot write, say): those would fail every batch.
        """
        ray = self.ray
        queue = deque(batches)
        inflight: dict[Any, _Worker] = {}
        nodes = self._alive_nodes()
        polled = waiting_since = self._began = time.monotonic()
        try:
            for _ in range(min(self.size, len(queue))):
                self._start_worker()
            while queue or inflight:
                for worker in self._workers:
                    if worker.started and worker.batch is None and queue:
                        worker.batch = queue.popleft()
                        inflight[worker.handle.extract.remote(worker.batch.rows)] = worker
                starting = {w.ready_ref: w for w in self._workers if not w.started}
                ready, _ = ray.wait([*inflight, *starting], num_returns=1, timeout=1.0)
                if ready:
                    ready, _ = ray.wait([*inflight, *starting], num_returns=len(ready), timeout=0)
                for ref in ready:
                    if ref in starting:
                        if starting[ref] in self._workers:  # not replaced meanwhile
                            self._started(starting[ref])
                        continue
                    worker = inflight.pop(ref)
                    batch, worker.batch = worker.batch, None
                    if batch is None:  # cannot happen: a worker in flight holds its batch
                        continue
                    outcome = self._collect(ref, worker, batch, queue)
                    if outcome is not None:
                        yield outcome
                now = time.monotonic()
                if now - polled > _NODE_POLL_SECONDS:
                    nodes = self._watch_nodes(nodes)
                    polled = now
                if any(w.started for w in self._workers):
                    waiting_since = now
                elif now - waiting_since > START_LIMIT_SECONDS:
                    raise ClusterError(
                        f"no Ray worker became ready in {START_LIMIT_SECONDS:g} s: the cluster "
                        "may have no free CPU (see `ray status`); lower --workers or add nodes"
                    )
        finally:
            for worker in self._workers:
                ray.kill(worker.handle, no_restart=True)
            self._workers.clear()

    def _start_worker(self) -> None:
        handle = self.start()
        self._workers.append(_Worker(handle, handle.ready.remote()))

    def _started(self, worker: _Worker) -> None:
        try:
            where = self.ray.get(worker.ready_ref)
        except self.ray.exceptions.RayActorError as exc:
            if exc.actor_init_failed:  # an error in set-up would repeat on every worker
                raise ClusterError(
                    f"a Ray worker could not start: {_first_lines(str(exc))}"
                ) from None
            self._start_deaths += 1
            if self._start_deaths > self.max_retries:
                raise ClusterError(
                    f"Ray workers died while starting, {self._start_deaths} times "
                    f"({_death_reason(exc, self.ray.exceptions)}); see the run log"
                ) from None
            self._replace(worker)
            return
        worker.started = True
        worker.node_id = where["node_id"]
        worker.node = f"{where['ip']} ({where['node_id'][:8]})"
        self._start_deaths = 0
        if not self.stats.workers_started:
            self.stats.first_worker_seconds = time.monotonic() - self._began
        self.stats.workers_started += 1
        self.notify(PoolEvent("worker", f"worker started on node {worker.node}"))

    def _collect(
        self, ref: Any, worker: _Worker, batch: Batch, queue: deque[Batch]
    ) -> Outcome | None:
        ray = self.ray
        try:
            result = ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, FeatcacheError):
                raise cause from None
            raise ClusterError(
                f"batch {batch.index} failed on node {worker.node or '?'}: {_first_lines(str(exc))}"
            ) from None
        except (
            ray.exceptions.RayActorError,
            ray.exceptions.WorkerCrashedError,
            ray.exceptions.OutOfMemoryError,
            ray.exceptions.NodeDiedError,
            ray.exceptions.ObjectLostError,
        ) as exc:
            reason = _death_reason(exc, ray.exceptions)
            self.log(f"batch {batch.index} on node {worker.node}: {_first_lines(str(exc), 12)}")
            batch.attempts += 1
            batch.reasons.append(reason)
            self._replace(worker, keep=bool(queue) or batch.attempts <= self.max_retries)
            where = worker.node or "a starting worker"
            if batch.attempts > self.max_retries:
                self.stats.given_up += 1
                message = (
                    f"batch {batch.index} given up after {batch.attempts} worker deaths "
                    f"({reason}); its {len(batch.rows)} images are reported as failed"
                )
                self.notify(PoolEvent("gave_up", message))
                return Outcome(batch, None, worker.node, reason=_give_up_reason(batch))
            self.stats.retries += 1
            self.notify(
                PoolEvent(
                    "retry",
                    f"worker on node {where} died on batch {batch.index} ({reason}); "
                    f"retry {batch.attempts} of {self.max_retries}",
                )
            )
            queue.append(batch)
            return None
        self.stats.batches_by_node[worker.node] += 1
        return Outcome(batch, result, worker.node)

    def _replace(self, worker: _Worker, *, keep: bool = True) -> None:
        if worker not in self._workers:  # already replaced
            return
        self.ray.kill(worker.handle, no_restart=True)
        self._workers.remove(worker)
        if keep:
            self._start_worker()

    def _alive_nodes(self) -> dict[str, str]:
        return {
            n["NodeID"]: f"{n.get('NodeManagerAddress', '?')} ({n['NodeID'][:8]})"
            for n in self.ray.nodes()
            if n.get("Alive")
        }

    def _watch_nodes(self, known: dict[str, str]) -> dict[str, str]:
        alive = self._alive_nodes()
        for node_id, label in known.items():
            if node_id not in alive:
                busy = sum(1 for w in self._workers if w.node_id == node_id and w.batch)
                self.stats.nodes_lost.append(label)
                self.notify(
                    PoolEvent(
                        "node_lost",
                        f"node {label} lost with {busy} batch(es) in flight; they are retried "
                        "on the other nodes",
                    )
                )
        return alive


def _death_reason(exc: BaseException, exceptions: Any) -> str:
    """In a few words: out of memory (Ray's memory monitor), node lost, or worker died.

    A kill by the kernel's OOM killer looks like any other kill to Ray: "worker died".
    """
    text = str(exc).lower()
    if isinstance(exc, exceptions.OutOfMemoryError) or any(
        words in text for words in ("memory monitor", "low on memory", "outofmemory")
    ):
        return "out of memory"
    if isinstance(exc, exceptions.NodeDiedError) or any(
        words in text for words in ("node has died", "node died", "node was marked dead")
    ):
        return "its node was lost"
    return "worker died"


def _give_up_reason(batch: Batch) -> str:
    reasons = ", ".join(sorted(set(batch.reasons)))
    return (
        f"not extracted: the Ray worker died {batch.attempts} times on its batch ({reasons}); "
        "retries are bounded by --ray-max-retries"
    )


def _first_lines(text: str, count: int = 3) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[:count])
