"""Export a dataset's vectors to ``.npz`` or Parquet, rows aligned with keys, paths and labels.

Parquet columns: ``key``, ``path``, ``label``, ``label_name``, ``split``, ``features``
(a fixed-size list of float32), readable by pandas, DuckDB, Spark and Ray.
The ``.npz`` holds ``keys``, ``paths``, ``labels``, ``splits`` and ``features`` (N x D float32).
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from featcache._io import atomic_write, describe_failure
from featcache.errors import ConfigError, NotFoundError, StoreError
from featcache.store.featurestore import FeatureStore
from featcache.store.streaming import DEFAULT_BATCH_ROWS, VectorBatch

__all__ = ["export_vectors"]


def export_vectors(
    store: FeatureStore,
    dataset: str,
    out: str | Path,
    *,
    layer: str = "fc7",
    fingerprint: str | None = None,
    batch_size: int = DEFAULT_BATCH_ROWS,
) -> Path:
    """Write the dataset's vectors to `out` (format from its suffix); return the path.

    Rows are read and written `batch_size` at a time (`FeatureStore.batches`): Parquet as
    one row group per batch, the ``.npz`` arrays streamed into the zip, so memory stays
    bounded by a batch at any dataset size.
    """
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".npz", ".parquet"):
        raise ConfigError(f"The 'out' file must end in .npz or .parquet. Got {out.name!r}.")
    info = store.dataset(dataset)
    if info.rows == 0:
        raise NotFoundError(f"dataset '{dataset}' has no rows to export")
    fp = store.resolve_fingerprint(dataset, layer, fingerprint)
    batches = store.batches(dataset, layer, fp, batch_size=batch_size)  # checks every row
    note = store.extractors().get(fp, {}).get("weights_note")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(out) as f:
            if suffix == ".npz":
                _write_npz(f, batches, info.rows, note)
            else:
                _write_parquet(f, batches, info.class_names, fp, layer, note)
    except OSError as exc:
        raise StoreError(describe_failure(out, "writing the export", exc)) from exc
    return out


def _write_npz(
    f: BinaryIO, batches: Iterator[VectorBatch], rows: int, weights_note: str | None
) -> None:
    """``np.savez``'s layout (one ``.npy`` member per array), with ``features`` written a
    batch at a time; the small per-row arrays are collected and written last."""
    keys: list[str] = []
    paths: list[str] = []
    splits: list[str] = []
    labels: list[np.ndarray] = []
    with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        with archive.open("features.npy", "w", force_zip64=True) as member:
            written = 0
            for batch in batches:
                if written == 0:
                    header = {
                        "descr": "<f4",
                        "fortran_order": False,
                        "shape": (rows, batch.X.shape[1]),
                    }
                    np.lib.format.write_array_header_2_0(member, header)
                member.write(np.ascontiguousarray(batch.X, dtype="<f4").tobytes())
                written += len(batch)
                keys += batch.keys
                paths += batch.paths
                splits += ["" if s is None else s for s in batch.splits]
                labels.append(batch.y)
            if written != rows:  # rows added or removed while reading
                raise StoreError(
                    f"the dataset changed while it was exported ({written} rows read, "
                    f"{rows} listed); export again"
                )
        for name, array in (
            ("keys", np.array(keys)),
            ("paths", np.array(paths)),
            ("labels", np.concatenate(labels) if labels else np.zeros(0, np.int64)),
            ("splits", np.array(splits)),
            # random weights say so wherever their vectors go (a str array)
            *([("weights_note", np.array(weights_note))] if weights_note else []),
        ):
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)


def _write_parquet(
    f: BinaryIO,
    batches: Iterator[VectorBatch],
    names: list[str],
    fingerprint: str,
    layer: str,
    weights_note: str | None,
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    metadata = {"featcache.fingerprint": fingerprint, "featcache.layer": layer}
    if weights_note:  # random weights say so wherever their vectors go
        metadata["featcache.weights_note"] = weights_note
    writer: pq.ParquetWriter | None = None
    for batch in batches:
        dim = batch.X.shape[1]
        features = pa.FixedSizeListArray.from_arrays(pa.array(batch.X.reshape(-1)), dim)
        table = pa.table(
            {
                "key": batch.keys,
                "path": batch.paths,
                "label": batch.y,
                "label_name": [names[i] if 0 <= i < len(names) else None for i in batch.y],
                "split": [s or None for s in batch.splits],
                "features": features,
            }
        ).replace_schema_metadata(metadata)
        if writer is None:
            writer = pq.ParquetWriter(f, table.schema)
        writer.write_table(table)
    if writer is not None:
        writer.close()
