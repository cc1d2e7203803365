"""Extraction commands: ``extract`` (images → store) and ``export`` (store → files)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape

from featcache.cli._shared import (
    EXIT_INTERRUPTED,
    EXIT_STRICT,
    err,
    note,
    out,
    progress_bar,
    reports_errors,
    show_tf_logs,
)

if TYPE_CHECKING:
    from featcache.extractor.pipeline import ExtractConfig
    from featcache.extractor.ray_connect import RayRunSummary


def _layers(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


# -- extract ---------------------------------------------------------------------------------


@reports_errors
def extract(
    data: Path = typer.Argument(..., help="Image folder, CSV manifest, train.p pickle or .npz."),
    store: Path = typer.Option(..., "--store", help="Feature store directory (created if new)."),
    weights: Path = typer.Option(
        ...,
        "--weights",
        help="The backbone's weights file: bvlc_alexnet.npy, vgg16_weights_tf_dim_ordering_"
        "tf_kernels.h5, resnet50_weights_tf_dim_ordering_tf_kernels.h5 (or demo weights).",
    ),
    backbone: str = typer.Option(
        "alexnet", help="The network: alexnet, vgg16 or resnet50 (featcache weights demo)."
    ),
    profile: str = typer.Option(
        "caffe", help="caffe (the network's own: BGR, mean subtracted) or udacity (AlexNet)."
    ),
    resize: str = typer.Option("squash", help="squash (whole image) or crop (centre square)."),
    layers: str = typer.Option(
        "",
        help="Comma-separated [default: the backbone's own]. alexnet: pool5,fc6,fc7 (default),"
        "fc8,prob, and the cuts pool2,conv3,conv4,conv5 to fine-tune from; vgg16: "
        "block5_pool,fc1,fc2 (default),predictions; resnet50: "
        "conv4_block6_out,conv5_block3_out,avg_pool (default),predictions.",
    ),
    dataset: str | None = typer.Option(None, help="Dataset name [default: the data's name]."),
    split: str | None = typer.Option(
        None,
        help="Split for rows that have none: train, val (or valid), test. Without --append, "
        "only this split's rows are replaced.",
    ),
    append: bool = typer.Option(
        False, help="Add new rows and update known ones (by path); never remove any."
    ),
    class_names: Path | None = typer.Option(None, help="ClassId,Name CSV (like signnames.csv)."),
    batch_size: int = typer.Option(0, help="Images per batch; 0: 64 for float32, 128 for bf16."),
    dtype: str = typer.Option(
        "auto",
        help="Storage dtype: float32, float16, or auto (float16 for pool5 and the conv cuts).",
    ),
    precision: str = typer.Option("float32", help="Network precision: float32, bf16, fp16."),
    runtime: str = typer.Option(
        "tensorflow", help="tensorflow, or openvino (pip install 'featcache[openvino]')."
    ),
    workers: int = typer.Option(2, help="Decoding threads (local) or actors (ray)."),
    engine: str = typer.Option("local", help="local, or ray (pip install 'featcache[ray]')."),
    ray_address: str | None = typer.Option(
        None,
        help="Ray cluster to run on, from one of its machines: auto (this machine's cluster) "
        "or HEAD:6379 [default: start Ray here]. Not ray:// (use ray job submit).",
    ),
    ray_max_retries: int = typer.Option(
        3, help="Ray: retries of a batch whose worker died; then its images fail."
    ),
    ray_timeout: float = typer.Option(30.0, help="Ray: seconds allowed for connecting."),
    verbose: bool = typer.Option(
        False,
        help="Show TensorFlow's own log lines, and Ray's messages instead of writing them to "
        "STORE/logs/.",
    ),
    max_pixels: int = typer.Option(50_000_000, help="Refuse larger images (decompression bombs)."),
    max_file_mb: float = typer.Option(
        256.0, help="Larger input files are that file's failure, refused before reading."
    ),
    strict: bool = typer.Option(False, help="Exit 3 if any image failed."),
    rehash: bool = typer.Option(
        False,
        help="Hash every file again instead of trusting the store's record of files whose "
        "size, mtime and inode are unchanged since they were last hashed.",
    ),
    profile_time: bool = typer.Option(False, help="Print where the time went."),
) -> None:
    """Run the frozen network over DATA once; cached images cost only hashing."""
    show_tf_logs(verbose)
    from featcache.extractor.pipeline import ExtractConfig
    from featcache.extractor.pipeline import extract as run_extract

    config = ExtractConfig(
        backbone=backbone,
        profile=profile,
        resize=resize,
        precision=precision,
        layers=_layers(layers),
        batch_size=batch_size,
        dtype=dtype,
        workers=workers,
        max_pixels=max_pixels,
        max_file_bytes=max(1, int(max_file_mb * 1024 * 1024)),
        engine=engine,
        ray_address=ray_address,
        ray_max_retries=ray_max_retries,
        ray_timeout=ray_timeout,
        ray_verbose=verbose,
        runtime=runtime,
        rehash=rehash,
    )
    with progress_bar("extracting") as update:
        try:
            report = run_extract(
                data,
                weights,
                store,
                config=config,
                class_names_file=class_names,
                dataset=dataset,
                split=split,
                append=append,
                progress=update,
                on_ray_event=lambda event: err.print(f"ray: {event.message}"),
            )
        except KeyboardInterrupt:
            err.print(
                f"interrupted: {_stored_so_far(store, weights, config)}. Run the same command "
                "again to resume: stored images are only hashed, and the dataset is recorded "
                "when a run completes."
            )
            raise typer.Exit(EXIT_INTERRUPTED) from None
    name = report.dataset
    for path, reason in report.failures:
        text = reason if path in reason else f"{path}: {reason}"
        err.print(f"[yellow]skipped[/yellow] {escape(text)}", markup=True)
    rate = f", {report.images_per_second:.1f} img/s in the network" if report.extracted else ""
    out.print(
        f"dataset '{name}': {report.total} images, {report.extracted} extracted, "
        f"{report.cached} already cached, {report.failed} failed"
        + (f", {report.duplicates} duplicate(s)" if report.duplicates else "")
        + f" in {report.seconds:.1f}s{rate}"
    )
    if report.rows is not None:
        out.print(f"dataset '{name}' rows: {report.rows.summary()}")
    for repair in report.repairs:
        err.print(f"[yellow]repaired[/yellow] {escape(repair)}", markup=True)
    out.print(
        f"extractor {report.fingerprint[:12]} ({backbone}, {profile}, {precision}, {runtime}) "
        f"→ {store}"
    )
    note(report.weights_note or _stored_weights_note(store, report.fingerprint))
    if report.failed:
        out.print(f"failed images are listed in {store / 'failures.csv'}")
    if report.ray is not None:
        _print_ray_summary(report.ray)
    if profile_time:
        for stage, seconds in sorted(report.timings.items(), key=lambda kv: -kv[1]):
            out.print(f"  {stage:<14} {seconds:8.3f}s")
    if report.dataset is not None and report.total > report.failed:
        from featcache.cli._next import after_extract
        from featcache.store import FeatureStore

        with FeatureStore(store, create=False, read_only=True) as fs:
            info = fs.dataset(report.dataset)
        for line in after_extract(str(store), info, str(weights)):
            out.print(line)
    if strict and report.failed:
        raise typer.Exit(EXIT_STRICT)


def _stored_so_far(store: Path, weights: Path, config: ExtractConfig) -> str:
    """What an interrupted run leaves: every finished batch is registered, nothing is half."""
    from featcache.errors import FeatcacheError
    from featcache.extractor.weights import file_sha256
    from featcache.store import FeatureStore

    layer = config.layers[0]
    try:
        with FeatureStore(store, create=False) as fs:
            fingerprint = config.spec(fs.file_sha256(weights, file_sha256)).fingerprint
            held = sum(
                entry["count"]
                for entry in fs.info()["vectors"]
                if entry["fingerprint"] == fingerprint and entry["layer"] == layer
            )
    except (FeatcacheError, OSError):
        return "nothing was stored yet"
    return f"{store} holds {held} '{layer}' vector(s) of this extractor, all complete"


def _stored_weights_note(store: Path, fingerprint: str) -> str | None:
    """A fully cached run loads no weights; the store remembers whether they were random."""
    from featcache.store import FeatureStore

    with FeatureStore(store, create=False, read_only=True) as fs:
        note: str | None = fs.extractors().get(fingerprint, {}).get("weights_note")
    return note


def _print_ray_summary(summary: RayRunSummary) -> None:
    nodes = ", ".join(f"{node} {n}" for node, n in sorted(summary.batches_by_node.items()))
    out.print(
        f"ray: batches per node: {nodes or 'none'}; {summary.retries} retried, "
        f"{summary.batches_given_up} given up, {len(summary.nodes_lost)} node(s) lost"
        + (
            f"; removed {summary.leftovers_removed} shard file(s) left by dead workers"
            if summary.leftovers_removed
            else ""
        )
    )
    if summary.log_path:
        out.print(f"ray: Ray's messages are in {summary.log_path}")


@reports_errors
def export(
    store: Path = typer.Option(..., "--store", help="Feature store directory."),
    dataset: str = typer.Option(..., "--dataset", help="Dataset name."),
    out_path: Path = typer.Option(..., "--out", help="FILE.npz or FILE.parquet."),
    layer: str | None = typer.Option(
        None,
        help="Layer to export [default: the backbone's: alexnet fc7, vgg16 fc2, resnet50 "
        "avg_pool].",
    ),
    backbone: str | None = typer.Option(
        None,
        help="Whose vectors: alexnet, vgg16 or resnet50 [default: the one the dataset has "
        "vectors of; alexnet if several].",
    ),
    fingerprint: str | None = typer.Option(None, help="Extractor, if the dataset has several."),
) -> None:
    """Write a dataset's keys, paths, labels, splits and vectors to .npz or Parquet."""
    from featcache.extractor.stored import resolve_vectors
    from featcache.store import FeatureStore, export_vectors

    with FeatureStore(store, create=False, read_only=True) as fs:
        fs.dataset(dataset)  # an unknown dataset is named as such, with the known ones
        # the same choice of vectors as train and doctor make
        chosen = resolve_vectors(
            fs, dataset, backbone=backbone, layer=layer, fingerprint=fingerprint
        )
        layer, fingerprint = chosen.layer, chosen.fingerprint
        path = export_vectors(fs, dataset, out_path, layer=layer, fingerprint=fingerprint)
        weights_note = fs.extractors().get(fingerprint, {}).get("weights_note")
    out.print(f"wrote {path}")
    note(weights_note)
