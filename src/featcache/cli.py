"""The ``featcache`` command: parse, call the library, print. Nothing else happens here.

Exit codes: 0 success; 1 an error (the message names the file, row or field); 2 bad usage;
3 finished, but ``--strict`` saw failed images, or ``store verify`` found problems.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from featcache.errors import FeatcacheError

app = typer.Typer(
    help="Extract frozen AlexNet features once, cache them by image content, train heads fast.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
weights_app = typer.Typer(help="Get, inspect and make AlexNet weights files.", no_args_is_help=True)
store_app = typer.Typer(help="Inspect and maintain a feature store.", no_args_is_help=True)
app.add_typer(weights_app, name="weights")
app.add_typer(store_app, name="store")

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


def _note(meta_note: str | None) -> None:
    if meta_note:
        out.print(f"[bold yellow]note:[/bold yellow] {escape(meta_note)}", markup=True)


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
            import time

            now = time.perf_counter()
            if not started:
                started.append(now)
            elapsed = now - started[0]
            rate = f"{done / elapsed:.1f} img/s" if elapsed > 0 else ""
            bar.update(task, completed=done, total=total, rate=rate)

        yield update


def _layers(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


# -- extract ---------------------------------------------------------------------------------


@app.command()
@reports_errors
def extract(
    data: Path = typer.Argument(..., help="Image folder, CSV manifest, train.p pickle or .npz."),
    store: Path = typer.Option(..., "--store", help="Feature store directory (created if new)."),
    weights: Path = typer.Option(..., "--weights", help="bvlc_alexnet.npy (or demo weights)."),
    profile: str = typer.Option("caffe", help="caffe (deploy.prototxt) or udacity (the lab)."),
    resize: str = typer.Option("squash", help="squash (whole image) or crop (centre square)."),
    layers: str = typer.Option("fc7", help="Comma-separated: pool5,fc6,fc7,fc8,prob."),
    dataset: str | None = typer.Option(None, help="Dataset name [default: the data's name]."),
    split: str | None = typer.Option(None, help="Split for rows that have none (train, test)."),
    append: bool = typer.Option(False, help="Add rows to an existing dataset."),
    class_names: Path | None = typer.Option(None, help="ClassId,Name CSV (like signnames.csv)."),
    batch_size: int = typer.Option(0, help="Images per batch; 0: 64 for float32, 128 for bf16."),
    dtype: str = typer.Option("float32", help="Storage dtype: float32 or float16."),
    precision: str = typer.Option("float32", help="Network precision: float32, bf16, fp16."),
    workers: int = typer.Option(2, help="Decoding threads (local) or actors (ray)."),
    engine: str = typer.Option("local", help="local, or ray (pip install 'featcache[ray]')."),
    ray_address: str | None = typer.Option(
        None, help="Ray cluster: auto or ray://HOST:PORT [default: start a local one]."
    ),
    max_pixels: int = typer.Option(50_000_000, help="Refuse larger images (decompression bombs)."),
    strict: bool = typer.Option(False, help="Exit 3 if any image failed."),
    profile_time: bool = typer.Option(False, help="Print where the time went."),
) -> None:
    """Run the frozen network over DATA once; cached images cost only hashing."""
    from featcache.extractor.pipeline import ExtractConfig
    from featcache.extractor.pipeline import extract as run_extract

    config = ExtractConfig(
        profile=profile,
        resize=resize,
        precision=precision,
        layers=_layers(layers),
        batch_size=batch_size,
        dtype=dtype,
        workers=workers,
        max_pixels=max_pixels,
    )
    name = dataset or data.stem
    with progress_bar("extracting") as update:
        report = run_extract(
            data,
            weights,
            store,
            config=config,
            class_names_file=class_names,
            dataset=name,
            split=split,
            append=append,
            progress=update,
            engine=engine,
            ray_address=ray_address,
        )
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
    out.print(f"extractor {report.fingerprint[:12]} ({profile}, {precision}) → {store}")
    _note(report.weights_note)
    if report.failed:
        out.print(f"failed images are listed in {store / 'failures.csv'}")
    if profile_time:
        for stage, seconds in sorted(report.timings.items(), key=lambda kv: -kv[1]):
            out.print(f"  {stage:<14} {seconds:8.3f}s")
    if strict and report.failed:
        raise typer.Exit(EXIT_STRICT)


@app.command()
@reports_errors
def export(
    store: Path = typer.Option(..., "--store", help="Feature store directory."),
    dataset: str = typer.Option(..., "--dataset", help="Dataset name."),
    out_path: Path = typer.Option(..., "--out", help="FILE.npz or FILE.parquet."),
    layer: str = typer.Option("fc7", help="Layer to export."),
    fingerprint: str | None = typer.Option(None, help="Extractor, if the dataset has several."),
) -> None:
    """Write a dataset's keys, paths, labels, splits and vectors to .npz or Parquet."""
    from featcache.store import FeatureStore, export_vectors

    with FeatureStore(store, create=False) as fs:
        path = export_vectors(fs, dataset, out_path, layer=layer, fingerprint=fingerprint)
    out.print(f"wrote {path}")


# -- weights ---------------------------------------------------------------------------------


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
    with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task("download", total=None)
        weights = fetch_weights(
            dest, source, progress=lambda done, total: bar.update(task, completed=done, total=total)
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
    _note(weights.demo_note)


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


# -- store -----------------------------------------------------------------------------------


@store_app.command("info")
@reports_errors
def store_info(
    store: Path = typer.Argument(..., help="Feature store directory."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Datasets, extractors, vector counts, heads and disk use."""
    from featcache.store import FeatureStore

    with FeatureStore(store, create=False) as fs:
        info = fs.info()
    if as_json:
        out.print_json(json.dumps(info))
        return
    out.print(f"store {info['path']}: {info['bytes'] / 1e6:.1f} MB, {info['failures']} failure(s)")
    for name, rows in info["datasets"].items():
        out.print(f"  dataset {name}: {rows} images")
    for entry in info["vectors"]:
        spec = info["extractors"].get(entry["fingerprint"], {})
        note = " [RANDOM WEIGHTS]" if spec.get("weights_note") else ""
        out.print(
            f"  vectors {entry['layer']} x{entry['count']} from {entry['fingerprint'][:12]} "
            f"({spec.get('profile')}, {spec.get('precision')}){note}"
        )
    for head in info["heads"]:
        out.print(f"  head {head}")


@store_app.command("verify")
@reports_errors
def store_verify(store: Path = typer.Argument(..., help="Feature store directory.")) -> None:
    """Exit 0 only if every registered vector reads back and every shard is accounted for."""
    from featcache.store import FeatureStore

    with FeatureStore(store, create=False) as fs:
        report = fs.verify()
    for problem in report.problems:
        out.print(f"problem: {problem}")
    out.print(
        f"{report.shards} shards, {report.vectors} vectors, {len(report.problems)} problem(s)"
    )
    if not report.ok:
        raise typer.Exit(EXIT_STRICT)


@store_app.command("gc")
@reports_errors
def store_gc(
    store: Path = typer.Argument(..., help="Feature store directory."),
    grace: float = typer.Option(900.0, help="Leave files younger than this many seconds."),
) -> None:
    """Remove unregistered shard files and vectors that no dataset uses."""
    from featcache.store import FeatureStore

    with FeatureStore(store, create=False) as fs:
        report = fs.gc(grace_seconds=grace)
    out.print(
        f"removed {report.files_removed} file(s) and {report.vectors_removed} vector(s), "
        f"{report.bytes_freed / 1e6:.1f} MB freed"
    )


# -- heads: train, evaluate, predict -----------------------------------------------------------


def _param(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise typer.BadParameter(f"expected key=value, got {text!r}", param_hint="--param")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw  # a bare word: class_weight=balanced
    return key.strip(), value


@app.command()
@reports_errors
def train(
    store: Path = typer.Option(..., "--store", help="Feature store directory."),
    dataset: str = typer.Option(..., "--dataset", help="Dataset name."),
    layer: str = typer.Option("fc7", help="Which stored layer to train on."),
    head: str = typer.Option("softmax", help="softmax (fast, ours) or logreg (scikit-learn)."),
    param: list[str] = typer.Option([], help="Head parameter key=value, repeatable."),
    val_fraction: float = typer.Option(0.2, help="Held out by key hash if there is no val split."),
    name: str | None = typer.Option(None, help="Head name [default: DATASET-HEAD]."),
    fingerprint: str | None = typer.Option(None, help="Extractor, if the dataset has several."),
) -> None:
    """Fit a head on cached vectors (no TensorFlow), evaluate it, register a new version."""
    from featcache.classifier.train import train_head
    from featcache.store import FeatureStore

    params = dict(_param(p) for p in param)
    with FeatureStore(store, create=False) as fs:
        result = train_head(
            fs,
            dataset,
            layer=layer,
            head=head,
            params=params,
            val_fraction=val_fraction,
            name=name,
            fingerprint=fingerprint,
        )
    record, metrics = result.record, result.metrics
    out.print(
        f"head '{record.name}' v{record.version} ({head}) on {metrics['n_train']} vectors "
        f"of '{dataset}' [{layer}]: fit {result.timings['fit']:.2f}s, "
        f"read {result.timings['read_vectors']:.2f}s"
    )
    out.print(f"  train accuracy {metrics['train_accuracy']:.4f}")
    if metrics["n_val"]:
        out.print(
            f"  held-out ({metrics['n_val']} rows): accuracy {metrics['val_accuracy']:.4f}, "
            f"top-5 {metrics['val_top5_accuracy']:.4f}"
        )
    else:
        out.print("  no held-out rows (val_fraction 0 and no val split)")
    _note(record.meta.get("weights_note"))


@app.command()
@reports_errors
def evaluate(
    store: Path = typer.Option(..., "--store", help="Feature store directory."),
    head: str = typer.Option(..., "--head", help="Head name."),
    dataset: str = typer.Option(..., "--dataset", help="Dataset name."),
    split: str = typer.Option("test", help="Split to evaluate on (train, val, test, all)."),
    version: int | None = typer.Option(None, help="Head version [default: newest]."),
    out_dir: Path | None = typer.Option(None, "--out", help="Report folder [default: in store]."),
) -> None:
    """Accuracy, top-5, per-class P/R/F1 (CSV), confusion matrix (PNG, CSV), JSON summary."""
    from featcache.classifier.evaluate import evaluate_head, write_report
    from featcache.store import FeatureStore

    with FeatureStore(store, create=False) as fs:
        evaluation = evaluate_head(
            fs, head, dataset, split=None if split == "all" else split, version=version
        )
    summary = evaluation.summary
    folder = out_dir or store / "reports" / f"{head}-v{summary['version']}-{dataset}-{split}"
    paths = write_report(evaluation, folder)
    topk = next(k for k in summary if k.startswith("top"))
    out.print(
        f"head '{head}' v{summary['version']} on '{dataset}' [{split}], {summary['n']} images: "
        f"accuracy {summary['accuracy']:.4f}, {topk.replace('_', ' ')} {summary[topk]:.4f}, "
        f"macro F1 {summary['macro_f1']:.4f}"
    )
    for pair in summary["most_confused"][:5]:
        out.print(f"  {pair['true']} → {pair['predicted']}: {pair['count']}")
    out.print(f"report: {', '.join(str(p) for p in paths)}")
    _note(summary.get("weights_note"))


@app.command()
@reports_errors
def predict(
    images: list[Path] = typer.Argument(..., help="Image files or folders."),
    store: Path = typer.Option(..., "--store", help="Feature store directory."),
    head: str = typer.Option(..., "--head", help="Head name."),
    top_k: int = typer.Option(5, help="How many classes per image."),
    weights: Path | None = typer.Option(None, help="Weights, to extract images not in the store."),
    version: int | None = typer.Option(None, help="Head version [default: newest]."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
) -> None:
    """Top-k classes per image: cached images need no TensorFlow; new ones are extracted."""
    from featcache.predictor import Predictor
    from featcache.store import FeatureStore

    with FeatureStore(store, create=False) as fs:
        predictor = Predictor(fs, head, weights=weights, version=version, top_k=top_k)
        results = predictor.predict_paths(images)
        note = predictor.head.meta.get("weights_note")
    for i, result in enumerate(results):
        if as_json:
            out.print_json(json.dumps(result.as_dict()), indent=None)
            continue
        if result.error is not None:
            out.print(f"Image {i}: {result.path}\n  error: {result.error}\n")
            continue
        source = "cached" if result.cached else "extracted"
        out.print(f"Image {i}: {result.path} ({source})")
        for p in result.predictions:
            out.print(f"{p.label}: {p.probability:.3f}")
        out.print()
    if not as_json:
        _note(note)
    if any(r.error for r in results):
        raise typer.Exit(EXIT_STRICT)


heads_app = typer.Typer(help="List, show and delete heads in a store.", no_args_is_help=True)
app.add_typer(heads_app, name="heads")


@heads_app.command("list")
@reports_errors
def heads_list(store: Path = typer.Argument(..., help="Feature store directory.")) -> None:
    """Every head version with its dataset, extractor and held-out accuracy."""
    from featcache.store import FeatureStore

    with FeatureStore(store, create=False) as fs:
        records = fs.heads()
    for r in records:
        acc = r.meta.get("metrics", {}).get("val_accuracy")
        score = f"val accuracy {acc:.4f}" if acc is not None else "no held-out score"
        out.print(
            f"{r.name} v{r.version}: {r.meta.get('head')} on '{r.meta.get('dataset')}' "
            f"[{r.meta.get('layer')}, extractor {str(r.meta.get('fingerprint'))[:12]}], {score}"
        )
    if not records:
        out.print("no heads")


@heads_app.command("show")
@reports_errors
def heads_show(
    store: Path = typer.Argument(..., help="Feature store directory."),
    name: str = typer.Argument(..., help="Head name."),
    version: int | None = typer.Option(None, help="Version [default: newest]."),
) -> None:
    """A head's full metadata as JSON."""
    from featcache.store import FeatureStore

    with FeatureStore(store, create=False) as fs:
        r = fs.head(name, version)
    out.print_json(
        json.dumps(
            {"name": r.name, "version": r.version, "file": r.file, "sha256": r.sha256, **r.meta}
        )
    )


@heads_app.command("delete")
@reports_errors
def heads_delete(
    store: Path = typer.Argument(..., help="Feature store directory."),
    name: str = typer.Argument(..., help="Head name."),
    version: int | None = typer.Option(None, help="Only this version [default: all]."),
) -> None:
    """Delete a head (every version, or one)."""
    from featcache.store import FeatureStore

    with FeatureStore(store, create=False) as fs:
        count = fs.delete_head(name, version)
    out.print(f"deleted {count} version(s) of head '{name}'")


@app.command()
@reports_errors
def demo(
    out_dir: Path = typer.Option(Path("featcache-demo"), "--out", help="Where to put it all."),
    limit: int | None = typer.Option(None, help="Use only the first N digits (quick look)."),
) -> None:
    """The whole job on the bundled digits sample with RANDOM demo weights."""
    from featcache.demo import run_demo

    with progress_bar("extracting") as update:
        result = run_demo(out_dir, limit=limit, progress=update)
    ex = result.extraction
    out.print(f"sample: {ex.total} digit images (scikit-learn's digits) in {result.data}")
    out.print(f"weights: {result.weights}")
    out.print(
        f"extract: {ex.extracted} extracted, {ex.cached} already cached, {ex.failed} failed "
        f"in {ex.seconds:.1f}s → {result.store}"
    )
    for kind, trained in result.heads.items():
        summary = result.evaluations[kind].summary
        out.print(
            f"train {kind}: head '{trained.record.name}' v{trained.record.version}, "
            f"fit {trained.timings['fit']:.2f}s; test accuracy {summary['accuracy']:.4f} "
            f"(n={summary['n']}); report in {result.reports[kind]}"
        )
    out.print("predict (digits-softmax, top 3):")
    for p in result.predictions:
        ranked = ", ".join(f"{x.label}: {x.probability:.3f}" for x in p.predictions)
        out.print(f"  {p.path} → {ranked}")
    out.print(f"next: featcache predict --store {result.store} --head digits-softmax IMAGE...")
    out.print(
        f"      featcache serve --store {result.store} --head digits-softmax "
        f"--weights {result.weights}"
    )
    out.print(
        "[bold yellow]note:[/bold yellow] these features come from seeded RANDOM weights, "
        "NOT ImageNet-trained AlexNet; with the real bvlc_alexnet.npy "
        "(featcache weights fetch) the same commands give real transfer-learning results.",
        markup=True,
    )


@app.command()
@reports_errors
def serve(
    store: Path = typer.Option(..., "--store", help="Feature store directory."),
    head: str = typer.Option(..., "--head", help="Head name (retrained versions are picked up)."),
    weights: Path | None = typer.Option(None, help="Weights, to extract unseen uploads."),
    host: str = typer.Option("127.0.0.1", help="Address to bind."),
    port: int = typer.Option(8000, help="Port."),
    token_file: Path | None = typer.Option(
        None, help="File holding a bearer token [or env FEATCACHE_TOKEN]."
    ),
    top_k: int = typer.Option(5, help="Classes per answer."),
    max_upload_mb: float = typer.Option(10.0, help="Largest accepted upload, in MB."),
    max_files: int = typer.Option(16, help="Most files in one request."),
    max_pixels: int = typer.Option(50_000_000, help="Largest accepted image, in pixels."),
) -> None:
    """Serve predictions over HTTP (OpenAPI docs at /docs)."""
    import os

    import uvicorn

    from featcache.errors import ConfigError
    from featcache.service import ServiceConfig, create_app

    token = os.environ.get("FEATCACHE_TOKEN") or None
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{token_file}: cannot read token file ({exc})") from exc
    config = ServiceConfig(
        store=store,
        head=head,
        weights=weights,
        token=token,
        top_k=top_k,
        max_upload_bytes=int(max_upload_mb * 1024 * 1024),
        max_files=max_files,
        max_pixels=max_pixels,
    )
    application = create_app(config)
    served = application.state.predictor.head
    err.print(
        f"serving head '{served.name}' v{served.version} from {store} on http://{host}:{port} "
        f"({'can' if weights else 'cannot'} extract unseen images; "
        f"{'token required' if token else 'no token'})"
    )
    if served.meta.get("weights_note"):
        err.print(f"note: {served.meta['weights_note']}")
    uvicorn.run(application, host=host, port=port, log_level="warning")


def main() -> None:
    """Entry point of the ``featcache`` script."""
    # TensorFlow imports all of Keras 3 at start-up (about 2 s here) unless it is told to use
    # legacy Keras; with tf_keras absent it then loads no Keras at all. featcache never uses
    # tf.keras, and this process is ours, so the command line starts that way. The library
    # (notebooks, embedding apps) leaves the environment alone.
    import importlib.util
    import os

    if importlib.util.find_spec("tf_keras") is None:
        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
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


if __name__ == "__main__":
    main()
