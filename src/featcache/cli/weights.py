"""``featcache weights fetch|info|demo``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from featcache.cli._shared import err, note, out, progress_bar, reports_errors

weights_app = typer.Typer(
    rich_markup_mode=None, help="Get, inspect and make AlexNet weights files.", no_args_is_help=True
)


@weights_app.command("fetch")
@reports_errors
def weights_fetch(
    url: str | None = typer.Option(None, help="Download address [default: the lab's]."),
    dest: Path = typer.Option(Path("bvlc_alexnet.npy"), help="Where to put the file."),
) -> None:
    """Download bvlc_alexnet.npy (about 244 MB); a failed download leaves nothing at DEST."""
    from featcache.extractor.fetch import DEFAULT_WEIGHTS_URL, fetch_weights

    source = url or DEFAULT_WEIGHTS_URL
    columns = (
        TextColumn("downloading"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeRemainingColumn(),
    )
    if not err.is_terminal:  # a log: a plain line at most every 10 s
        with progress_bar("downloading", unit="MB") as update:
            weights = fetch_weights(
                dest,
                source,
                progress=lambda done, total: update(done // 10**6, (total or 0) // 10**6),
            )
    else:
        with Progress(*columns, console=err, transient=True) as bar:
            task = bar.add_task("download", total=None)
            weights = fetch_weights(
                dest,
                source,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    out.print(f"wrote {dest} ({weights.nbytes / 1e6:.1f} MB of weights, sha256 {weights.sha256})")


@weights_app.command("info")
@reports_errors
def weights_info(path: Path = typer.Argument(..., help="A weights file.")) -> None:
    """Layers, shapes, bytes and SHA-256 of a weights file (checked, never executed)."""
    from featcache.extractor.weights import read_weights

    weights = read_weights(path)
    out.print(f"{path}: {path.stat().st_size} bytes, sha256 {weights.sha256}")
    for name, (w, b) in weights.layers.items():
        out.print(f"  {name:<6} W {w.shape!s:<20} b {b.shape!s:<8} {w.nbytes + b.nbytes:>11} bytes")
    note(weights.demo_note)


@weights_app.command("demo")
@reports_errors
def weights_demo(
    path: Path = typer.Argument(..., help="Where to write the file."),
    seed: int = typer.Option(0, help="Random seed."),
    layout: str = typer.Option("lists", help="lists ([W, b]) or dicts ({'weights', 'biases'})."),
) -> None:
    """Write seeded RANDOM weights in the real file's layout (for tests and the demo)."""
    from featcache.extractor.weights import write_demo_weights

    write_demo_weights(path, seed, layout)
    out.print(f"wrote {path}: seeded random weights (seed={seed}), NOT ImageNet-trained")
