"""`copy_store`: a whole store into an empty one (folder ↔ bucket, SQLite ↔ PostgreSQL).

Everything keeps its identity: shard files their names and bytes (so the checksums recorded
at extraction still hold), vectors their (key, fingerprint, layer) and rows, datasets their
rows in order, heads their version numbers, the versions ever used and the promotions,
failures and doctor's records. A shard is copied before it is registered, as extraction
does, so an interrupted copy leaves at worst unregistered files (``store gc`` removes them).
The copy ends with `verify` on the destination, which re-hashes every shard against the
source's checksums, and a comparison of the two catalogs' counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from featcache.errors import StoreError
from featcache.store.featurestore import FeatureStore

__all__ = ["CopyReport", "copy_store"]


@dataclass
class CopyReport:
    """What `copy_store` copied, and the destination's verify problems (none when ok)."""

    shards: int = 0
    vectors: int = 0
    bytes: int = 0
    datasets: int = 0
    heads: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _summary(store: FeatureStore) -> dict[str, object]:
    return {
        "vectors": sorted(store.info()["vectors"], key=lambda v: (v["fingerprint"], v["layer"])),
        "datasets": {d: store.dataset(d).splits for d in store.datasets()},
        "heads": [(h.name, h.version, h.sha256) for h in store.heads()],
    }


def copy_store(src: FeatureStore, dst: FeatureStore) -> CopyReport:
    """Copy every shard, vector, dataset, head and record of `src` into the empty `dst`,
    then verify `dst`; `StoreError` if `dst` already holds anything."""
    # featcache.store.copy is the store's own module: it works on its parts, as maintenance does
    source, target = src._catalog, dst._catalog
    if target.shards() or target.dataset_names() or target.heads():
        raise StoreError(
            f"{dst.location}: the destination store is not empty; copy into a new store "
            "(a new folder or bucket prefix, and a new catalog database)"
        )
    report = CopyReport()
    for fingerprint, spec in source.extractors().items():
        target.register_extractor(fingerprint, spec)
    for record in source.shards():
        payload = src._shards.read_bytes(record.name)
        dst._shards.put_bytes(record.name, payload)
        size, mtime_ns = dst._shards.stat(record.name)
        vectors = source.shard_vectors(record.id)
        target.import_shard(replace(record, bytes=size, mtime_ns=mtime_ns), vectors)
        report.shards += 1
        report.vectors += len(vectors)
        report.bytes += size
    for name in source.dataset_names():
        found = source.dataset(name)
        if found is not None:
            target.put_dataset(
                name,
                source.dataset_rows(name),
                found.class_names,
                found.source,
                append=False,
                split=None,
            )
            report.datasets += 1
    heads = []
    for head in source.heads():
        file, _ = dst._heads.write(head.name, src.head_bytes(head))
        heads.append(replace(head, file=file))
    last, promotions = source.head_history()
    target.import_heads(heads, last, promotions)
    report.heads = len(heads)
    failures = source.failures()
    if failures:
        target.add_failures(None, failures)
    target.import_analysis(*source.analysis_records())
    report.problems = list(dst.verify().problems)
    if _summary(src) != _summary(dst):
        report.problems.append(
            f"{dst.location}: the copy's vectors, datasets or heads differ from {src.location}"
        )
    return report
