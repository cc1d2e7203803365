"""`Clock`: seconds per stage, summed, from any thread: ``with clock("decode"): ...``."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["Clock"]


class Clock:
    """Sums the wall time spent in each named stage; `timings` maps stage → seconds."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._lock = threading.Lock()

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - start)

    def add(self, stage: str, seconds: float) -> None:
        """Count `seconds` more for `stage` (for spans that a ``with`` cannot wrap)."""
        with self._lock:  # threads may time their own stages
            self.timings[stage] = self.timings.get(stage, 0.0) + seconds
