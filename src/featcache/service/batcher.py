"""Gather unseen uploads that arrive together into one pass through the network.

Requests add their images and await the result; a single worker takes whatever has queued
(up to `max_batch`, waiting at most `window` seconds after the first image), runs one
extraction in a thread, and answers every waiting request.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["Batcher"]

Item = TypeVar("Item")
Result = TypeVar("Result")


class Batcher(Generic[Item, Result]):
    """Collects items from concurrent requests; `run` maps a list of items to results."""

    def __init__(
        self,
        run: Callable[[list[Item]], Sequence[Result]],
        *,
        max_batch: int = 64,
        window: float = 0.01,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._run = run
        self._max_batch = max_batch
        self._window = window
        self._on_batch = on_batch
        self._queue: asyncio.Queue[tuple[Item, asyncio.Future[Result]]] | None = None
        self._worker: asyncio.Task[None] | None = None

    async def submit(self, items: Sequence[Item]) -> list[Result]:
        """Queue `items`; return their results in order once their batch has run."""
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._work(self._queue))
        loop = asyncio.get_running_loop()
        futures = []
        for item in items:
            future: asyncio.Future[Result] = loop.create_future()
            await self._queue.put((item, future))
            futures.append(future)
        return list(await asyncio.gather(*futures))

    async def _work(self, queue: asyncio.Queue[tuple[Item, asyncio.Future[Result]]]) -> None:
        while True:
            batch = [await queue.get()]
            deadline = asyncio.get_running_loop().time() + self._window
            while len(batch) < self._max_batch:
                timeout = deadline - asyncio.get_running_loop().time()
                if timeout <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(queue.get(), timeout))
                except TimeoutError:
                    break
            if self._on_batch is not None:
                self._on_batch(len(batch))
            items = [item for item, _ in batch]
            try:
                results = await asyncio.to_thread(self._run, items)
            except Exception as exc:  # every waiting request gets the same failure
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
