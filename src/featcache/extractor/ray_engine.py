"""The Ray engine: extraction spread over a Ray cluster, landing in the same store.

The driver has already hashed the inputs and dropped the keys the store holds. Here it
cuts the rest into batches and hands them to a pool of actors (`RayActorPool`: bounded
retries, a fresh worker after a death); each actor builds one network and, for every batch,
decodes, computes and writes one shard per layer into the store, returning the keys of the
shard's rows and the images that failed. The driver registers the shards in the catalog as
results come back. A store on object storage needs no shared folder: workers write their
shards straight to the bucket (each node with its own credentials), and only the driver
talks to the catalog (PostgreSQL). A folder store must be at the same path on every node.

Shard files carry the run's identity (``ray-RUN-…``). A worker that dies between writing a
shard and reporting it leaves a file no one registers; the batch is run again elsewhere,
and when the run ends the driver removes every unregistered file of its own run. So a run
that exits normally leaves a store that verifies; a run that cannot remove them says so.

Ray is optional: ``pip install "featcache[ray]"``.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from pathlib import Path

from featcache.errors import ClusterError, ImageError, StoreError
from featcache.extractor.clock import Clock
from featcache.extractor.config import ExtractConfig
from featcache.extractor.fingerprint import ExtractorSpec
from featcache.extractor.network import TENSORFLOW, Runtime
from featcache.extractor.ray_connect import RaySession
from featcache.extractor.ray_pool import Batch, PoolEvent, RayActorPool
from featcache.extractor.stages import BatchResult, EngineResult, Failed, Keyed, Progress, batches
from featcache.store import FeatureStore, ShardFiles, ShardInfo
from featcache.store.bucket import is_url, shard_files_at
from featcache.store.commands import store_command

__all__ = ["compute_on_ray", "shard_prefix"]


def shard_prefix(run_id: str) -> str:
    """The start of the file name of every shard a run's workers write."""
    return f"ray-{run_id}-"


def _portable(entry: Keyed) -> Keyed:
    """The image as a worker on another machine can read it (absolute path)."""
    item, key = entry
    if item.array is None and item.file is None:  # in-memory uploads never reach Ray
        raise ImageError(f"{item.path}: the Ray engine reads files or arrays, not uploads")
    if item.file is not None:
        item = dataclasses.replace(item, file=item.file.resolve())
    return item, key


class _ExtractWorker:
    """One network per actor, built once; each call runs the shared stages on one batch."""

    def __init__(
        self,
        weights: str,
        spec: ExtractorSpec,
        store: str,  # the folder's absolute path, or the store's URL
        config: ExtractConfig,
        threads: int,
        runtime: Runtime,
        prefix: str,
    ) -> None:
        from featcache.extractor.registry import read_backbone_weights
        from featcache.extractor.stages import ShardWriter

        if runtime.name == TENSORFLOW.name:  # a pickled copy here, never the same object
            from featcache.extractor._tf import import_tensorflow

            import_tensorflow(threads)  # one actor per CPU share: TensorFlow's pools to that share
        self.config = config
        # Read when the network needs them: TensorFlow's at once, OpenVINO's only to convert
        # (the driver has converted already, so its workers never read the 244 MB).
        self.network = runtime.build(
            functools.partial(read_backbone_weights, weights, spec.network), spec
        )
        shards = shard_files_at(store)
        self.writer = ShardWriter(shards, spec.fingerprint, config.dtype, prefix=prefix)

    def ready(self) -> dict[str, str]:
        import ray

        ip: str = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
        return {"node_id": ray.get_runtime_context().get_node_id(), "ip": ip}

    def extract(self, batch: list[Keyed]) -> BatchResult[dict[str, ShardInfo]]:
        """prepare → forward → write `batch`: the keys of the shards' rows, the shards (name,
        SHA-256) by layer, and the images that failed."""
        from featcache.extractor.stages import run_batch

        return run_batch(batch, self.network, self.writer, self.config)


def compute_on_ray(
    todo: list[Keyed],
    weights_path: Path,
    spec: ExtractorSpec,
    store: FeatureStore,
    config: ExtractConfig,
    clock: Clock,
    progress: Progress | None,
    *,
    session: RaySession,
    runtime: Runtime = TENSORFLOW,
    on_event: Callable[[PoolEvent], None] | None = None,
) -> EngineResult:
    """Extract `todo` on Ray with ``config.workers`` actors; register their shards in `store`.

    A batch whose worker dies is retried on a fresh worker at most ``config.ray_max_retries``
    times, then its images are reported as failed with the reason. When the run ends
    (normally or not) the shards its dead workers left are removed; `ClusterError` if that
    is not possible. What happened on the cluster is in ``session.summary``.
    """
    ray = session.ray
    t = time.perf_counter()
    summary = session.summary
    prefix = shard_prefix(session.run_id)
    work = [
        Batch(i, [_portable(e) for e in chunk])
        for i, chunk in enumerate(batches(todo, config.batch_size))
    ]
    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    actors = min(config.workers, len(work))
    # On a Ray started here, the machine's CPUs are shared out; on a cluster, one per actor.
    per_actor = max(1.0, cpus // actors) if config.ray_address is None else 1.0
    worker_class = ray.remote(
        num_cpus=per_actor, max_restarts=0, max_task_retries=0, scheduling_strategy="SPREAD"
    )(_ExtractWorker)
    arguments = (
        str(weights_path.resolve()),
        spec,
        store.location if is_url(store.location) else str(Path(store.path).resolve()),
        config,
        int(per_actor),
        runtime,
        prefix,
    )

    def tell(event: PoolEvent) -> None:
        session.note(event.message)
        if on_event is not None:
            on_event(event)

    pool = RayActorPool(
        ray,
        lambda: worker_class.remote(*arguments),
        actors,
        config.ray_max_retries,
        tell,
        session.note,
    )
    result = EngineResult()
    done = 0
    try:
        for outcome in pool.run(work):
            rows: list[Keyed] = outcome.batch.rows
            if outcome.result is None:
                result.failed.extend(Failed(item.path, outcome.reason, key) for item, key in rows)
            else:
                batch: BatchResult[dict[str, ShardInfo]] = outcome.result
                result.failed.extend(batch.failed)
                for layer, shard in (batch.written or {}).items():
                    try:
                        store.register_shard(
                            shard.name, spec.fingerprint, layer, batch.keys, sha256=shard.sha256
                        )
                    except StoreError as exc:
                        if (
                            is_url(store.location)
                            or ShardFiles.in_store(store.path).path(shard.name).exists()
                        ):
                            raise
                        raise ClusterError(
                            f"{exc}; written by a worker on node {outcome.node}: the store must "
                            "be at the same path on every node (a shared filesystem)"
                        ) from None
                result.extracted += len(batch.keys)
            done += len(rows)
            if progress is not None:
                progress(done, len(todo))
    finally:
        summary.leftovers_removed = _discard_leftovers(store, prefix)
        stats = pool.stats
        summary.batches_by_node = dict(stats.batches_by_node)
        summary.workers_started = stats.workers_started
        summary.retries = stats.retries
        summary.batches_given_up = stats.given_up
        summary.nodes_lost = list(stats.nodes_lost)
        clock.add("ray_first_worker", stats.first_worker_seconds)  # part of "network"
        clock.add("network", time.perf_counter() - t)
    if summary.leftovers_removed:
        session.note(f"removed {summary.leftovers_removed} shard file(s) left by dead workers")
    return result


def _discard_leftovers(store: FeatureStore, prefix: str) -> int:
    try:
        return len(store.discard_unregistered(prefix))
    except StoreError as exc:
        raise ClusterError(
            f"{exc}: this run's workers left shard files it cannot remove, so the store would "
            f"not verify; remove them by hand or run '{store_command('store gc', store.location)}'"
        ) from exc
