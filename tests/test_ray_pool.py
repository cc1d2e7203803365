"""`RayActorPool` against a fake Ray: bounded retries, fresh workers, set-up errors, in
milliseconds (the real thing is in test_ray_engine.py and test_ray_cluster.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

import pytest

from featcache.errors import ClusterError, StoreError
from featcache.extractor.ray_pool import Batch, PoolEvent, RayActorPool


class RayActorError(Exception):
    def __init__(self, message: str = "The actor died unexpectedly", init_failed: bool = False):
        super().__init__(message)
        self.actor_init_failed = init_failed


class RayTaskError(Exception):
    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


EXCEPTIONS = SimpleNamespace(
    RayActorError=RayActorError,
    RayTaskError=RayTaskError,
    WorkerCrashedError=type("WorkerCrashedError", (Exception,), {}),
    OutOfMemoryError=type("OutOfMemoryError", (Exception,), {}),
    NodeDiedError=type("NodeDiedError", (Exception,), {}),
    ObjectLostError=type("ObjectLostError", (Exception,), {}),
)


class Ref:
    """An object reference that is ready at once: a value, or an error raised by get."""

    def __init__(self, compute: Callable[[], Any]) -> None:
        try:
            self.value, self.error = compute(), None
        except Exception as exc:
            self.value, self.error = None, exc


class Method:
    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def remote(self, *args: Any) -> Ref:
        return Ref(lambda: self.fn(*args))


class Actor:
    """A worker that dies on any batch holding "poison", or fails to set up if told to."""

    def __init__(self, ray: FakeRay, number: int) -> None:
        self.dead = False
        self.ready = Method(lambda: self._ready(ray, number))
        self.extract = Method(self._extract)
        self.raise_in_batch: BaseException | None = ray.raise_in_batch

    def _ready(self, ray: FakeRay, number: int) -> dict[str, str]:
        if ray.setup_error:
            raise RayActorError(ray.setup_error, init_failed=True)
        return {"node_id": f"node{number % 2}" + "0" * 8, "ip": "127.0.0.1"}

    def _extract(self, rows: Sequence[str]) -> list[str]:
        if self.dead:
            raise RayActorError("the actor is dead")
        if "poison" in rows:
            self.dead = True
            raise RayActorError("The actor died unexpectedly before finishing this task.")
        if self.raise_in_batch is not None:
            raise RayTaskError(self.raise_in_batch)
        return [row.upper() for row in rows]


class FakeRay:
    def __init__(self) -> None:
        self.exceptions = EXCEPTIONS
        self.actors: list[Actor] = []
        self.killed: list[Actor] = []
        self.setup_error = ""
        self.raise_in_batch: BaseException | None = None

    def start(self) -> Actor:
        actor = Actor(self, len(self.actors))
        self.actors.append(actor)
        return actor

    def wait(
        self, refs: list[Ref], num_returns: int, timeout: float
    ) -> tuple[list[Ref], list[Ref]]:
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref: Ref) -> Any:
        if ref.error is not None:
            raise ref.error
        return ref.value

    def kill(self, actor: Actor, no_restart: bool) -> None:
        self.killed.append(actor)

    def nodes(self) -> list[dict[str, Any]]:
        return [{"NodeID": "node0" + "0" * 8, "NodeManagerAddress": "127.0.0.1", "Alive": True}]


def run(ray: FakeRay, rows: list[list[str]], retries: int) -> tuple[RayActorPool, list[Any]]:
    events: list[PoolEvent] = []
    pool = RayActorPool(ray, ray.start, 2, retries, events.append, lambda line: None)
    outcomes = list(pool.run([Batch(i, r) for i, r in enumerate(rows)]))
    return pool, [*outcomes, *events]


def test_a_batch_that_kills_its_workers_is_given_up_after_the_retries() -> None:
    ray = FakeRay()
    pool, results = run(ray, [["a", "b"], ["poison", "c"], ["d"]], retries=2)
    outcomes = [r for r in results if not isinstance(r, PoolEvent)]
    done = {o.batch.index: o for o in outcomes}
    assert done[0].result == ["A", "B"] and done[2].result == ["D"]
    given_up = done[1]
    assert given_up.result is None and given_up.batch.attempts == 3
    assert "died 3 times" in given_up.reason and "--ray-max-retries" in given_up.reason
    assert (pool.stats.retries, pool.stats.given_up) == (2, 1)
    kinds = [r.kind for r in results if isinstance(r, PoolEvent)]
    assert kinds.count("retry") == 2 and kinds.count("gave_up") == 1
    # Each death brought a fresh worker (no more once nothing is left to run); all are killed.
    assert len(ray.actors) == 2 + 2
    assert set(map(id, ray.killed)) == set(map(id, ray.actors))


def test_no_retries_gives_up_at_the_first_death() -> None:
    ray = FakeRay()
    pool, _ = run(ray, [["poison"]], retries=0)
    assert (pool.stats.retries, pool.stats.given_up) == (0, 1)


def test_an_error_in_the_workers_set_up_stops_the_run_with_it() -> None:
    ray = FakeRay()
    ray.setup_error = "WeightsError: /shared/w.npy: no such file"
    with pytest.raises(ClusterError, match="could not start: WeightsError"):
        run(ray, [["a"]], retries=3)
    assert ray.killed  # the pool's actors are killed on the way out


def test_a_featcache_error_inside_a_worker_is_raised_as_is() -> None:
    ray = FakeRay()
    ray.raise_in_batch = StoreError("/store/shards: read-only file system")
    with pytest.raises(StoreError, match="read-only"):
        run(ray, [["a"]], retries=3)
