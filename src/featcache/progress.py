"""Progress a notebook or a script sees without asking: a tqdm bar (a widget in Jupyter, a
bar on a terminal), or a plain line at most every 10 s when stderr is a log file or a pipe.

The rate, and so the ETA, is measured from the first report on: the time before it
(TensorFlow loading, the network being built) is start-up, not throughput. Until a second
report there is no rate, and no ETA is claimed.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

__all__ = ["PROGRESS_SECONDS", "Rate", "auto_progress", "progress_line"]

PROGRESS_SECONDS = 10.0  # at most one line this often off a terminal


class Rate:
    """Items per second since the first report (None until a second one moves on)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._first: tuple[float, int] | None = None

    def update(self, done: int) -> float | None:
        now = self._clock()
        if self._first is None:
            self._first = (now, done)
            return None
        since, done_then = self._first
        if done <= done_then or now <= since:
            return None
        return (done - done_then) / (now - since)


def progress_line(
    label: str, done: int, total: int, rate: float | None, unit: str = "images"
) -> str:
    """One line: done/total, the rate and the time left (from a measured rate only)."""
    share = f" ({100 * done / total:.0f}%)" if total else ""
    if rate is not None and rate > 0 and total >= done > 0:
        left = round((total - done) / rate)
        eta = f"ETA {left // 3600}:{left // 60 % 60:02d}:{left % 60:02d}"
    elif not total:
        eta = "ETA unknown"
    else:
        eta = "ETA after the next batch"
    per = "img" if unit == "images" else unit
    count = f"{done}/{total}" if total else str(done)
    speed = f"{rate:.1f} {per}/s" if rate is not None else f"- {per}/s"
    return f"{label}: {count} {unit}{share}, {speed}, {eta}"


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    ipython = getattr(shell, "get_ipython", lambda: None)()
    return ipython is not None and type(ipython).__name__ == "ZMQInteractiveShell"


@contextmanager
def auto_progress(
    label: str,
    *,
    stream: TextIO | None = None,
    every: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    unit: str = "images",
) -> Iterator[Callable[[int, int], None]]:
    """Yield the ``(done, total)`` callback `featcache.extract` reports to.

    Jupyter: tqdm's widget; a terminal: tqdm's bar; otherwise a line on `stream` (stderr)
    at most every `every` seconds [default: `PROGRESS_SECONDS`]. The bar is opened at the
    first report, so its rate and ETA count from there.
    """
    out = stream or sys.stderr
    bar: list[Any] = []
    notebook = _in_notebook()
    if notebook or out.isatty():
        from tqdm.auto import tqdm as tqdm_auto  # type: ignore[import-untyped]
        from tqdm.std import tqdm as tqdm_text  # type: ignore[import-untyped]

        def show(done: int, total: int) -> None:
            if not bar:
                kind = tqdm_auto if notebook else tqdm_text
                bar.append(
                    kind(total=total or None, initial=done, desc=label, unit=unit[:3], file=out)
                )
                return
            bar[0].total = total or None
            bar[0].update(done - bar[0].n)

        try:
            yield show
        finally:
            if bar:
                bar[0].close()
        return
    rate = Rate(clock)
    last = [clock()]
    every = PROGRESS_SECONDS if every is None else every

    def log(done: int, total: int) -> None:
        measured = rate.update(done)
        now = clock()
        if now - last[0] >= every:
            last[0] = now
            print(progress_line(label, done, total, measured, unit), file=out, flush=True)

    yield log
