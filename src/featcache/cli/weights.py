"""``featcache weights fetch|info|demo``, for every backbone of the registry."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from featcache.cli._shared import err, note, out, progress_bar, reports_errors

weights_app = typer.Typer(
    rich_markup_mode=None,
    help="Get, inspect and make weights files (AlexNet, VGG16, ResNet50).",
    no_args_is_help=True,
)

_BACKBONE_HELP = "alexnet (bvlc_alexnet.npy), vgg16 or resnet50 (keras.applications' .h5)."


@weights_app.command("fetch")
@reports_errors
def weights_fetch(
    url: str | None = typer.Option(None, help="Download address [default: the publisher's]."),
    dest: Path | None = typer.Option(
        None,
        help="Where to put the file [default: the backbone's file name, e.g. bvlc_alexnet.npy].",
    ),
    backbone: str = typer.Option("alexnet", help=_BACKBONE_HELP),
) -> None:
    """Download a backbone's weights (AlexNet 244 MB, VGG16 528 MB, ResNet50 98 MB), checked
    layer by layer; a failed download leaves nothing at DEST."""
    from featcache.extractor.fetch import fetch_weights
    from featcache.extractor.registry import backbone_named

    network = backbone_named(backbone)
    target = dest or Path(network.weights_file)
    source = url or network.weights_url
    columns = (
        TextColumn("downloading"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeRemainingColumn(),
    )
    if not err.is_terminal:  # a log: a plain line at most every 10 s
        with progress_bar("downloading", unit="MB") as update:
            weights = fetch_weights(
                target,
                source,
                backbone=backbone,
                progress=lambda done, total: update(done // 10**6, (total or 0) // 10**6),
            )
    else:
        with Progress(*columns, console=err, transient=True) as bar:
            task = bar.add_task("download", total=None)
            weights = fetch_weights(
                target,
                source,
                backbone=backbone,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    out.print(
        f"wrote {target} ({backbone}, {weights.nbytes / 1e6:.1f} MB of weights, "
        f"sha256 {weights.sha256})"
    )


@weights_app.command("info")
@reports_errors
def weights_info(
    path: Path = typer.Argument(..., help="A weights file."),
    backbone: str | None = typer.Option(
        None, help=f"{_BACKBONE_HELP} [default: recognised from the file]."
    ),
) -> None:
    """Backbone, layers, shapes, bytes and SHA-256 of a weights file (checked, never run)."""
    from featcache.extractor.registry import read_backbone_weights, recognise_weights

    weights = recognise_weights(path) if backbone is None else read_backbone_weights(path, backbone)
    out.print(f"{path}: {weights.network}, {path.stat().st_size} bytes, sha256 {weights.sha256}")
    width = max(6, *(len(name) for name in weights.layers))
    for name, (w, b) in weights.layers.items():
        out.print(
            f"  {name:<{width}} W {w.shape!s:<20} b {b.shape!s:<8} {w.nbytes + b.nbytes:>11} bytes"
        )
    note(weights.demo_note)


@weights_app.command("demo")
@reports_errors
def weights_demo(
    path: Path = typer.Argument(..., help="Where to write the file."),
    seed: int = typer.Option(0, help="Random seed."),
    layout: str = typer.Option(
        "lists", help="AlexNet: lists ([W, b]) or dicts ({'weights', 'biases'})."
    ),
    backbone: str = typer.Option("alexnet", help=_BACKBONE_HELP),
) -> None:
    """Write seeded RANDOM weights in the real file's layout (for tests and the demo)."""
    from featcache.errors import ConfigError
    from featcache.extractor.registry import backbone_named
    from featcache.extractor.weights import write_demo_weights

    network = backbone_named(backbone)
    if layout != "lists" and backbone != "alexnet":
        raise ConfigError(
            f"--layout is AlexNet's (.npy); {backbone}'s file has Keras's HDF5 layout only"
        )
    if layout != "lists":
        write_demo_weights(path, seed, layout)
    else:
        network.write_demo_weights(path, seed)
    out.print(
        f"wrote {path}: seeded random {backbone} weights (seed={seed}) in the layout of "
        f"{network.weights_file}, NOT ImageNet-trained"
    )
