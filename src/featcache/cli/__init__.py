"""The ``featcache`` command: parse, call the library, print. Nothing else happens here.

Exit codes: 0 success; 1 an error (the message names the file, row or field); 2 bad usage;
3 finished, but ``--strict`` saw failed images, ``predict`` could not answer an image, or
``store verify`` found problems.

One module per group of commands; this one assembles them into the ``featcache`` app.
"""

from __future__ import annotations

import os
import signal
import sys

import typer

from featcache.cli.analysis import advise, doctor
from featcache.cli.demo import demo
from featcache.cli.export_model import export_model
from featcache.cli.extraction import export, extract
from featcache.cli.heads import evaluate, heads_app, predict, train
from featcache.cli.serve import serve
from featcache.cli.store import store_app
from featcache.cli.weights import weights_app

__all__ = ["app", "main"]

app = typer.Typer(
    help="Extract frozen AlexNet features once, cache them by image content, train heads fast.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Help texts are plain text: rich markup would eat "[default: ...]" and "[ray]".
    rich_markup_mode=None,
)


def _print_version(value: bool) -> None:
    if value:
        from featcache import __version__

        typer.echo(f"featcache {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False,
        "--version",
        callback=_print_version,
        is_eager=True,
        help="Print the version and exit.",
    ),
    catalog: str | None = typer.Option(
        None,
        "--catalog",
        envvar="FEATCACHE_CATALOG",
        help="The stores' catalog on PostgreSQL (postgresql://USER@HOST:PORT/DB) instead of "
        "catalog.sqlite in the store's folder; also FEATCACHE_CATALOG.",
        show_default=False,
    ),
) -> None:
    """Extract frozen AlexNet features once, cache them by image content, train heads fast."""
    if catalog:
        from featcache.cli._shared import usage_error
        from featcache.errors import ConfigError
        from featcache.store.location import CATALOG_ENV, server_catalog

        # Every store this command opens, and every process it starts (serve's workers,
        # Ray's), reads the catalog from the environment.
        try:
            os.environ[CATALOG_ENV] = server_catalog(catalog) or ""
        except ConfigError as exc:
            usage_error(str(exc).replace("the 'catalog'", "--catalog"))


for command in (extract, export, train, evaluate, predict, serve, demo, doctor, advise):
    app.command()(command)
app.command("export-model")(export_model)
app.add_typer(weights_app, name="weights")
app.add_typer(store_app, name="store")
app.add_typer(heads_app, name="heads")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C's KeyboardInterrupt would be, so the same cleanup runs."""


_MAIN_PID = os.getpid()


def _terminate(signum: int, frame: object) -> None:
    if os.getpid() != _MAIN_PID:
        # a forked worker (a multiprocessing pool of cleanlab's or scikit-learn's, which its
        # parent ends with SIGTERM) inherited the handler: it dies quietly, as by default
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    raise Terminated(f"signal {signum}")


def main() -> None:
    """Entry point of the ``featcache`` script."""
    # TensorFlow imports all of Keras 3 at start-up (about 2 s here) unless it is told to use
    # legacy Keras; with tf_keras absent it then loads no Keras at all. featcache never uses
    # tf.keras, and this process is ours, so the command line starts that way. The library
    # (notebooks, embedding apps) leaves the environment alone.
    import importlib.util

    if importlib.util.find_spec("tf_keras") is None:
        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    # SIGTERM (kill, a container stopping, a job scheduler) ends a command the way Ctrl-C
    # does: temporary files are removed, what is stored is said. `serve` replaces this with
    # uvicorn's graceful shutdown.
    global _MAIN_PID
    _MAIN_PID = os.getpid()
    signal.signal(signal.SIGTERM, _terminate)
    try:
        app()
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        # TensorFlow's interpreter teardown takes most of a second and does nothing we need:
        # every store write is committed and closed by now. Ray, when loaded, needs its own
        # shutdown hooks (they stop a local cluster), so it gets the normal exit.
        if "tensorflow" in sys.modules and "ray" not in sys.modules:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        raise
