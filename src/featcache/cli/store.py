"""``featcache store info|verify|gc|copy``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from featcache.cli._shared import EXIT_STRICT, out, reports_errors, store_option, which_store

OLD_STORE = typer.Argument(None, metavar="[STORE]", help="Deprecated: use --store.")

store_app = typer.Typer(
    rich_markup_mode=None, help="Inspect and maintain a feature store.", no_args_is_help=True
)


@store_app.command("info")
@reports_errors
def store_info(
    old_store: Path | None = OLD_STORE,
    store: Path | None = store_option(),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Datasets, extractors, vector counts, heads and disk use."""
    store = which_store(store, old_store, "store info")
    from featcache.store import FeatureStore

    with FeatureStore(store, create=False, read_only=True) as fs:
        info = fs.info()
    if as_json:
        out.print_json(json.dumps(info))
        return
    out.print(f"store {info['path']}: {info['bytes'] / 1e6:.1f} MB, {info['failures']} failure(s)")
    for name, entry in info["datasets"].items():
        splits = ", ".join(f"{s or 'no split'} {n}" for s, n in entry["splits"].items())
        out.print(f"  dataset {name}: {entry['rows']} images" + (f" ({splits})" if splits else ""))
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
def store_verify(
    old_store: Path | None = OLD_STORE,
    store: Path | None = store_option(),
    repair: bool = typer.Option(
        False,
        help="Drop damaged shards' vectors, so the next extract computes them again; their "
        "files are moved to STORE/quarantine/, never deleted.",
    ),
) -> None:
    """Exit 0 only if every shard matches its checksum, every registered vector reads back
    and every shard file is accounted for."""
    store = which_store(store, old_store, "store verify")
    from featcache.store import FeatureStore

    with FeatureStore(store, create=False, read_only=not repair) as fs:
        report = fs.verify(repair=repair)
    for problem in report.problems:
        out.print(f"problem: {problem}")
    for name in report.repaired:
        out.print(f"repaired: shard {name} dropped; extract again to recompute its vectors")
    for where in report.quarantined:
        out.print(f"kept: {where} (the damaged file, moved to quarantine; nothing was deleted)")
    if report.quarantine_files:
        out.print(
            f"note: {report.quarantine_files} damaged shard file(s) kept in quarantine/ "
            "(moved there, never deleted; a .json beside each says why): inspect them, then "
            "delete them yourself when you no longer need them"
        )
    for folder in report.runtime_models_removed:
        out.print(f"repaired: runtime model {folder} removed; the next run converts it again")
    out.print(
        f"{report.shards} shards, {report.vectors} vectors, {report.runtime_models} runtime "
        f"model(s), {len(report.problems)} problem(s)"
        + (
            f", {len(report.repaired)} shard(s) and {report.vectors_dropped} vector(s) dropped"
            if repair
            else ""
        )
    )
    if not report.ok:
        raise typer.Exit(EXIT_STRICT)


@store_app.command("gc")
@reports_errors
def store_gc(
    old_store: Path | None = OLD_STORE,
    store: Path | None = store_option(),
    grace: float = typer.Option(900.0, help="Leave files younger than this many seconds."),
) -> None:
    """Remove unregistered shard files, vectors that no dataset uses (never a shard the
    catalog references; refuses when the catalog lists no shard but shard files exist) and
    runtime models of extractors left without vectors."""
    store = which_store(store, old_store, "store gc")
    from featcache.store import FeatureStore

    with FeatureStore(store, create=False) as fs:
        report = fs.gc(grace_seconds=grace)
    out.print(
        f"removed {report.files_removed} file(s), {report.vectors_removed} vector(s) and "
        f"{report.runtime_models_removed} runtime model(s), "
        f"{report.bytes_freed / 1e6:.1f} MB freed"
    )


@store_app.command("copy")
@reports_errors
def store_copy(
    src: str = typer.Option(
        ..., "--store", help="The store to copy: a folder or s3://bucket/prefix."
    ),
    dst: str = typer.Option(
        ..., "--to", help="A new, empty store: a folder or s3://bucket/prefix."
    ),
    src_catalog: str | None = typer.Option(
        None,
        "--src-catalog",
        help="SRC's catalog on PostgreSQL (default: catalog.sqlite in SRC's folder).",
    ),
    dst_catalog: str | None = typer.Option(
        None,
        "--dst-catalog",
        help="DST's catalog on PostgreSQL, an empty database (default: catalog.sqlite in DST).",
    ),
) -> None:
    """Copy a whole store (shards, vectors, datasets, heads with their versions, records)
    into a new one, folder <-> bucket and SQLite <-> PostgreSQL; exit 0 only if the copy
    verifies (every shard re-hashed against the source's checksums, the same counts)."""
    from featcache.store import FeatureStore
    from featcache.store.copy import copy_store

    # "" is the folder's own SQLite catalog, whatever FEATCACHE_CATALOG says
    with (
        FeatureStore(src, create=False, read_only=True, catalog=src_catalog or "") as source,
        FeatureStore(dst, catalog=dst_catalog or "") as target,
    ):
        report = copy_store(source, target)
    for problem in report.problems:
        out.print(f"problem: {problem}")
    out.print(
        f"copied {report.shards} shard(s) ({report.bytes / 1e6:.1f} MB), {report.vectors} "
        f"vector(s), {report.datasets} dataset(s), {report.heads} head version(s) from {src} "
        f"to {dst}: " + ("verified" if report.ok else f"{len(report.problems)} problem(s)")
    )
    if not report.ok:
        raise typer.Exit(EXIT_STRICT)
