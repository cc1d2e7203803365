"""The local engine: prepare on a thread pool, the network here, writes behind.

Up to `PREFETCH` batches are prepared ahead, so the first ones are ready while the runtime
loads and the network is built, and decoding keeps out of the network's way; each batch is
written while the next one computes. Batches are prepared into a few reused input buffers:
a fresh 40 MB array per batch cost a page fault per 4 kB written, about a sixth of
preparing a 32x32 picture.
"""

from __future__ import annotations

import itertools
import queue
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from featcache.extractor.clock import Clock
from featcache.extractor.config import ExtractConfig
from featcache.extractor.network import Network
from featcache.extractor.stages import (
    EngineResult,
    Keyed,
    PreparedBatch,
    Progress,
    Writer,
    batches,
    forward,
    input_buffer,
    prepare_batch,
)

__all__ = ["PREFETCH", "run_local"]

PREFETCH = 4  # batches prepared ahead of the network (about 40 MB each per 64 images)


def run_local(
    todo: Sequence[Keyed],
    make_network: Callable[[], Network],
    writer: Writer[object],
    config: ExtractConfig,
    pool: ThreadPoolExecutor,
    clock: Clock,
    progress: Progress | None = None,
) -> EngineResult:
    """Extract `todo` (unique keys) in batches; images decode on `pool`."""
    result = EngineResult()
    done = 0
    free: queue.SimpleQueue[np.ndarray] = queue.SimpleQueue()  # input buffers to reuse

    def prepare(batch: list[Keyed]) -> tuple[np.ndarray, PreparedBatch]:
        try:
            buffer = free.get_nowait()
        except queue.Empty:  # at most PREFETCH + 1 are ever made
            buffer = input_buffer(config.batch_size, config.input_size)
        return buffer, prepare_batch(batch, config, pool.map, out=buffer)

    # One thread assembles the next batch (its images decode on `pool`), one writes the last.
    with (
        ThreadPoolExecutor(1, thread_name_prefix="featcache-prefetch") as prefetch,
        ThreadPoolExecutor(1, thread_name_prefix="featcache-write") as write_behind,
    ):
        pending_write: Future[object] | None = None
        upcoming = batches(todo, config.batch_size)
        preparing: deque[Future[tuple[np.ndarray, PreparedBatch]]] = deque(
            prefetch.submit(prepare, batch) for batch in itertools.islice(upcoming, PREFETCH)
        )
        network = make_network()
        while preparing:
            with clock("decode_wait"):
                buffer, prepared = preparing.popleft().result()
            following = next(upcoming, None)
            if following is not None:
                preparing.append(prefetch.submit(prepare, following))
            result.failed.extend(prepared.failed)
            if prepared.keys:
                with clock("network"):
                    outputs = forward(network, prepared, config.layers)
                with clock("write_wait"):
                    if pending_write is not None:
                        pending_write.result()
                pending_write = write_behind.submit(
                    writer.write, prepared.keys, outputs, prepared.hashes
                )
                result.extracted += len(prepared.keys)
            free.put(buffer)  # the network is done with its inputs
            done += len(prepared.keys) + len(prepared.failed)
            if progress is not None:
                progress(done, len(todo))
        if pending_write is not None:
            with clock("write_wait"):
                pending_write.result()
        close = getattr(network, "close", None)  # OpenVINO: a converted model being saved
        if close is not None:
            with clock("close_wait"):
                close()
    return result
