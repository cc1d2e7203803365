"""``featcache store info|verify|gc``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from featcache.cli._shared import EXIT_STRICT, out, reports_errors

store_app = typer.Typer(help="Inspect and maintain a feature store.", no_args_is_help=True)


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
        random = " [RANDOM WEIGHTS]" if spec.get("weights_note") else ""
        out.print(
            f"  vectors {entry['layer']} x{entry['count']} from {entry['fingerprint'][:12]} "
            f"({spec.get('profile')}, {spec.get('precision')}){random}"
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
