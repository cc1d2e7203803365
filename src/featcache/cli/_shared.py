"""What every command shares: the consoles, error reporting, the progress bar, exit codes."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from featcache.errors import FeatcacheError

__all__ = ["EXIT_ERROR", "EXIT_STRICT", "err", "note", "out", "progress_bar", "reports_errors"]

out = Console(highlight=False, soft_wrap=True, markup=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)

EXIT_ERROR, EXIT_STRICT = 1, 3
F = TypeVar("F", bound=Callable[..., Any])


def reports_errors(func: F) -> F:
    """Turn a `FeatcacheError` into one red line on stderr and exit code 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except FeatcacheError as exc:
            err.print(f"[red]error:[/red] {escape(str(exc))}", markup=True)
            raise typer.Exit(EXIT_ERROR) from None

    return wrapper  # type: ignore[return-value]


def note(text: str | None) -> None:
    """Print a highlighted note (random weights and the like), if there is one."""
    if text:
        out.print(f"[bold yellow]note:[/bold yellow] {escape(text)}", markup=True)


@contextmanager
def progress_bar(label: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr (images/s, ETA); yields the callback the library calls."""
    columns = (
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task(label, total=None, rate="")
        started: list[float] = []

        def update(done: int, total: int) -> None:

            now = time.perf_counter()
            if not started:
                started.append(now)
            elapsed = now - started[0]
            rate = f"{done / elapsed:.1f} img/s" if elapsed > 0 else ""
            bar.update(task, completed=done, total=total, rate=rate)

        yield update
