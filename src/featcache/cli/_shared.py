"""What every command shares: the consoles, error reporting, the progress bar, exit codes."""

from __future__ import annotations

import functools
import inspect
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from typer.models import OptionInfo

from featcache._text import printable
from featcache.errors import ConfigError, FeatcacheError
from featcache.progress import PROGRESS_SECONDS, Rate, progress_line

__all__ = [
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_STRICT",
    "EXIT_USAGE",
    "PROGRESS_SECONDS",
    "err",
    "flag_names",
    "name_flags",
    "note",
    "out",
    "progress_bar",
    "progress_line",
    "reports_errors",
    "show_tf_logs",
    "stage_printer",
    "store_option",
    "usage_error",
    "verbose_option",
    "which_store",
]


class _PlainConsole(Console):
    """A Console whose printed text cannot drive the terminal: names from a store (paths,
    class names, reasons) may hold escape sequences, shown as hex escapes instead."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        super().print(*(printable(o) if isinstance(o, str) else o for o in objects), **kwargs)


out = _PlainConsole(highlight=False, soft_wrap=True, markup=False)
err = _PlainConsole(stderr=True, highlight=False, soft_wrap=True, markup=False)

EXIT_ERROR, EXIT_USAGE, EXIT_STRICT, EXIT_INTERRUPTED = 1, 2, 3, 130
F = TypeVar("F", bound=Callable[..., Any])


def flag_names(func: Callable[..., Any]) -> dict[str, str]:
    """{python parameter: its command-line flag} for a command's options."""
    flags = {}
    for name, param in inspect.signature(func).parameters.items():
        if isinstance(param.default, OptionInfo):
            decls = [d for d in param.default.param_decls or () if d.startswith("--")]
            flag = decls[0] if decls else "--" + name.replace("_", "-")
            flags[name] = flag
            flags.setdefault(flag[2:].replace("-", "_"), flag)  # out_path="--out": 'out' too
    return flags


def name_flags(message: str, flags: dict[str, str]) -> str:
    """The library names its parameters ("The 'top_k' must be..."); the CLI user typed flags."""

    def swap(match: re.Match[str]) -> str:
        flag = flags.get(match.group(2))
        if flag is None:
            return match.group(0)
        lead = match.group(1)
        return flag if lead == "The " else f"{lead}{flag}"

    return re.sub(r"\b(The |the |pass )'(\w+)'", swap, message)


def reports_errors(func: F) -> F:
    """Turn a `FeatcacheError` into one red line on stderr and exit code 1 (parameters named
    by their flags), and Ctrl-C into a line and exit code 130."""
    flags = flag_names(func)

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except FeatcacheError as exc:
            text = name_flags(str(exc), flags) if isinstance(exc, ConfigError) else str(exc)
            err.print(f"[red]error:[/red] {escape(text)}", markup=True)
            raise typer.Exit(EXIT_ERROR) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(EXIT_INTERRUPTED) from None

    return wrapper  # type: ignore[return-value]


def usage_error(text: str) -> NoReturn:
    """Bad usage found after parsing: one line on stderr and exit code 2, as click does."""
    err.print(f"[red]usage error:[/red] {escape(text)}", markup=True)
    raise typer.Exit(EXIT_USAGE)


VERBOSE_HELP = "Show TensorFlow's own log lines (oneDNN, CUDA probing), hidden by default."


def stage_printer(command: str) -> Callable[[str], None]:
    """A line on stderr as each stage of a long command starts, with the time so far."""
    started = time.monotonic()

    def say(stage: str) -> None:
        err.print(f"{command}: {stage} ({time.monotonic() - started:.1f}s)")

    return say


def verbose_option() -> Any:
    """``--verbose``: TensorFlow's start-up and device lines are shown, not captured."""
    return typer.Option(False, "--verbose", help=VERBOSE_HELP)


def show_tf_logs(verbose: bool) -> None:
    """Before TensorFlow loads: let its log lines through (featcache._tf reads this)."""
    if verbose:
        os.environ["FEATCACHE_TF_LOGS"] = "1"


def store_option(help: str = "Feature store directory.") -> Any:
    """The ``--store`` option every command takes (one way to name a store)."""
    return typer.Option(None, "--store", help=help, show_default=False)


def which_store(store: Path | None, positional: Path | str | None, command: str) -> Path:
    """The store given by ``--store``, or by the positional form older releases took (still
    accepted, with a note saying the new form once)."""
    if store is not None and positional is not None:
        usage_error(
            f"the store is given twice ({positional} and --store {store}); give it once, "
            f"as --store {store}"
        )
    if store is not None:
        return store
    if positional is None:
        usage_error(f"Missing option '--store'. Run: featcache {command} --store STORE")
    err.print(
        f"note: 'featcache {command} {positional}' is deprecated; "
        f"use 'featcache {command} --store {positional}'"
    )
    return Path(positional)


def confirm_or_exit(question: str, verb: str, done: str) -> None:
    """Ask `question`; unless the answer is yes (no answer is no), say that nothing was
    `done` and how to `verb` without asking, and exit 1."""
    try:
        sure = typer.confirm(question)
    except (typer.Abort, click.Abort):  # no answer (end of input)
        sure = False
    if not sure:
        err.print(f"nothing {done} (pass --yes to {verb} without asking)")
        raise typer.Exit(EXIT_ERROR)


def note(text: str | None) -> None:
    """Print a highlighted note (random weights and the like), if there is one."""
    if text:
        out.print(f"[bold yellow]note:[/bold yellow] {escape(text)}", markup=True)


@contextmanager
def progress_bar(
    label: str,
    *,
    every: float = PROGRESS_SECONDS,
    clock: Callable[[], float] = time.monotonic,
    unit: str = "images",
) -> Iterator[Callable[[int, int], None]]:
    """Progress on stderr; yields the callback the library calls with (done, total).

    On a terminal, a bar (images/s, ETA); otherwise (a log file, a pipe) a plain line at most
    every `every` seconds, so long runs show they are alive without flooding the log.
    """
    rate = Rate(clock)
    if not err.is_terminal:
        last = [clock()]

        def log(done: int, total: int) -> None:
            measured = rate.update(done)
            now = clock()
            if now - last[0] >= every:
                last[0] = now
                err.print(progress_line(label, done, total, measured, unit))

        yield log
        return
    columns = (
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
    )
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task(label, total=None, rate="")
        per = "img" if unit == "images" else unit

        def update(done: int, total: int) -> None:
            measured = rate.update(done)
            if measured is None:
                text = "measuring the rate..."
            else:
                left = round((total - done) / measured) if total >= done else 0
                text = f"{measured:.1f} {per}/s, ETA {left // 60}:{left % 60:02d}"
            bar.update(task, completed=done, total=total or None, rate=text)

        yield update
