"""Store maintenance: `info` (what is stored), `verify` (is it intact, and ``repair``), `gc`.

These read the catalog and the shard files directly; `FeatureStore.info`, `.verify` and
`.gc` are the public entry points.
"""

from __future__ import annotations

import os
import re
import stat
import time
from pathlib import Path
from typing import Any

import numpy as np

from featcache.errors import StoreError, UnsafePathError
from featcache.store.catalog import Catalog
from featcache.store.commands import store_command
from featcache.store.records import GcReport, VerifyReport
from featcache.store.runtime_files import RUNTIMES_FOLDER
from featcache.store.shards import QUARANTINE_FOLDER, SHARDS_FOLDER, TMP_PREFIX, ShardFiles

__all__ = ["gc", "info", "stale_temporaries", "verify"]

# A temporary file of `featcache._io.atomic_write`: ".tmp-PID-RANDOM-<final name>".
_TEMPORARY = re.compile(rf"^{re.escape(TMP_PREFIX)}\d+-[0-9a-f]{{12}}-.+")


def stale_temporaries(store_dir: Path, cutoff: float) -> list[Path]:
    """Temporary files of featcache's atomic writes anywhere in the store (heads,
    failures.csv, reports...) older than `cutoff`: left by a process that was killed.
    Symlinks are neither listed nor followed; shard temporaries are gc's shard sweep's and
    runtime-model folders the runtime cache's."""
    found = []
    skip = {store_dir / SHARDS_FOLDER, store_dir / RUNTIMES_FOLDER}
    for folder, dirs, files in os.walk(store_dir):  # never follows symlinked folders
        here = Path(folder)
        dirs[:] = [d for d in dirs if here / d not in skip and not (here / d).is_symlink()]
        for file in files:
            path = here / file
            if not _TEMPORARY.match(file):
                continue
            try:
                st = path.lstat()
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and st.st_mtime < cutoff:
                found.append(path)
    return sorted(found)


def info(path: Path, catalog: Catalog) -> dict[str, Any]:
    """A summary: datasets (rows per split), extractors, vector counts, heads, disk use."""
    size = 0
    for p in path.rglob("*"):
        try:
            size += p.stat().st_size if p.is_file() else 0
        except OSError:  # removed while walking (a concurrent run's temporary file)
            continue
    datasets = {}
    for name in catalog.dataset_names():
        found = catalog.dataset(name)
        if found is not None:
            datasets[name] = {"rows": found.rows, "splits": found.splits}
    return {
        "path": str(path),
        "bytes": size,
        # whether this user may write the store (info itself always reads it read-only)
        "read_only": not os.access(path, os.W_OK),
        "datasets": datasets,
        "extractors": catalog.extractors(),
        "vectors": [
            {"fingerprint": fp, "layer": layer, "count": n}
            for fp, layer, n in catalog.vector_counts()
        ],
        "heads": sorted({h.name for h in catalog.heads()}),
        "failures": len(catalog.failures()),
    }


def verify(
    catalog: Catalog, shards: ShardFiles, *, repair: bool = False, store: str = "STORE"
) -> VerifyReport:
    """Re-hash every registered shard, read back every vector, account for every file.

    Damaged shards (missing, truncated, changed since written, a header contradicting the
    record, or holding NaN/infinity) are named in ``report.damaged``. With `repair`, their
    vectors are dropped from the catalog and their files moved to ``STORE/quarantine/``
    (``report.quarantined``; nothing is deleted), so the next ``extract`` computes those
    images again; vectors that
    point to no shard are dropped too, and rows sharing a dataset path are merged. `store`
    names the store in the commands the problems suggest.
    """
    report = VerifyReport()
    registered: set[str] = set()
    damaged: dict[int, str] = {}
    for record in catalog.shards():
        registered.add(record.name)
        report.shards += 1
        path = shards.root / record.name  # for messages only: check() resolves it safely
        check = shards.check(record, rehash=True)
        if check.problem is not None:
            damaged[record.id] = check.problem
            continue
        if record.sha256 is None and check.sha256 is not None and not catalog.read_only:
            # a shard registered before checksums existed: its checksum from now on
            catalog.record_shard_file(record.id, check.sha256, check.size or 0, check.mtime_ns or 0)
        try:
            matrix = shards.open(record.name)
        except StoreError as exc:
            damaged[record.id] = str(exc)
            continue
        if matrix.shape != (record.rows, record.dim) or str(matrix.dtype) != record.dtype:
            damaged[record.id] = (
                f"{path}: {matrix.shape} {matrix.dtype}, registered as "
                f"({record.rows}, {record.dim}) {record.dtype}"
            )
            continue
        try:
            used = catalog.shard_rows(record.id)
        except StoreError as exc:  # a crafted vector row (the catalog audit lists each)
            damaged[record.id] = str(exc)
            continue
        report.vectors += len(used)
        if used and max(used) >= record.rows:
            damaged[record.id] = f"{path}: a vector points past row {record.rows}"
        elif used and not np.isfinite(np.asarray(matrix[sorted(used)])).all():
            damaged[record.id] = f"{path}: holds NaN or infinity"
        del matrix  # release the memory map before a possible delete
    records = {r.id: r for r in catalog.shards()}
    report.damaged = [records[i].name for i in damaged]
    dangling = catalog.dangling_vectors()
    if repair:
        report.vectors_dropped = catalog.forget_shards(list(damaged))
        for shard_id, problem in damaged.items():
            where = shards.quarantine(records[shard_id], problem)
            if where is not None:
                report.quarantined.append(where)
        report.repaired = list(report.damaged)
        report.vectors_dropped += catalog.drop_dangling_vectors() if dangling else 0
        catalog.dedupe_dataset_rows()
    else:
        fix = store_command("store verify", store, "--repair")
        report.problems += [
            f"{problem}; '{fix}' drops its vectors and moves the file to "
            f"{QUARANTINE_FOLDER}/ (nothing is deleted), then extract computes them again"
            for problem in damaged.values()
        ]
        if dangling:
            report.problems.append(
                f"{dangling} vector(s) point to an unregistered shard ('{fix}' drops them)"
            )
    for name, _ in shards.names():
        if name in registered or name in report.repaired:
            continue
        where = shards.where(name)
        if shards.removable(name):
            report.problems.append(
                f"{where}: shard file not in the catalog (left by an interrupted run; "
                f"'{store_command('store gc', store)}' removes it once older than --grace)"
            )
        else:  # gc deletes only files named as featcache names its own
            report.problems.append(
                f"{where}: a file featcache did not write, in its shards folder; move it out of "
                "the store (gc leaves it alone)"
            )
    return report


def gc(catalog: Catalog, shards: ShardFiles, *, grace_seconds: float = 900.0) -> GcReport:
    """Remove unregistered shard files and vectors no dataset uses (see `FeatureStore.gc`)."""
    registered = {record.name for record in catalog.shards()}
    files = [(n, m) for n, m in shards.names() if not Path(n).name.startswith(TMP_PREFIX)]
    if not registered and files:
        raise StoreError(
            f"{catalog.path}: the catalog lists no shards but {shards.root} holds {len(files)} "
            "shard file(s); gc refuses to delete them, as the catalog may have been lost or "
            "replaced. Restore the catalog, or delete the shards folder yourself if you are sure"
        )
    cutoff = time.time() - grace_seconds
    dropped, emptied = catalog.drop_unused_vectors(cutoff)
    registered = {record.name for record in catalog.shards()}
    doomed = [n for n in emptied if n not in registered]
    doomed += [n for n, mtime in shards.names() if n not in registered and mtime < cutoff]
    freed = 0
    removed = 0
    for name in dict.fromkeys(doomed):
        try:
            size = shards.stat(name)[0]
        except (StoreError, UnsafePathError):
            continue
        shards.remove(name)
        try:
            shards.stat(name)
        except StoreError:  # gone
            freed += size
            removed += 1
    return GcReport(files_removed=removed, vectors_removed=dropped, bytes_freed=freed)
