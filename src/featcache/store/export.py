"""Export a dataset's vectors to ``.npz`` or Parquet, rows aligned with keys, paths and labels.

Parquet columns: ``key``, ``path``, ``label``, ``label_name``, ``split``, ``features``
(a fixed-size list of float32), readable by pandas, DuckDB, Spark and Ray.
The ``.npz`` holds ``keys``, ``paths``, ``labels``, ``splits`` and ``features`` (N x D float32).
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np

from featcache._io import atomic_write, describe_failure
from featcache.errors import ConfigError, StoreError
from featcache.store.featurestore import FeatureStore
from featcache.store.records import LabelledVectors

__all__ = ["export_vectors"]


def export_vectors(
    store: FeatureStore,
    dataset: str,
    out: str | Path,
    *,
    layer: str = "fc7",
    fingerprint: str | None = None,
) -> Path:
    """Write the dataset's vectors to `out` (format from its suffix); return the path."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".npz", ".parquet"):
        raise ConfigError(f"The 'out' file must end in .npz or .parquet. Got {out.name!r}.")
    data = store.vectors(dataset, layer, fingerprint)
    note = data.weights_note
    names = data.class_names
    splits = ["" if s is None else s for s in data.splits]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(out) as f:
            if suffix == ".npz":
                arrays = {
                    "keys": np.array(data.keys),
                    "paths": np.array(data.paths),
                    "labels": data.y,
                    "splits": np.array(splits),
                    "features": data.X,
                }
                if note:  # random weights say so wherever their vectors go (a str array)
                    arrays["weights_note"] = np.array(note)
                np.savez(f, **arrays)  # type: ignore[arg-type]
            else:
                _write_parquet(f, data, names, splits, note)
    except OSError as exc:
        raise StoreError(describe_failure(out, "writing the export", exc)) from exc
    return out


def _write_parquet(
    f: BinaryIO,
    data: LabelledVectors,
    names: list[str],
    splits: list[str],
    weights_note: str | None,
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    dim = data.X.shape[1]
    features = pa.FixedSizeListArray.from_arrays(pa.array(data.X.reshape(-1)), dim)
    table = pa.table(
        {
            "key": data.keys,
            "path": data.paths,
            "label": data.y,
            "label_name": [names[i] if 0 <= i < len(names) else None for i in data.y],
            "split": [s or None for s in splits],
            "features": features,
        }
    )
    metadata = {"featcache.fingerprint": data.fingerprint, "featcache.layer": data.layer}
    if weights_note:  # random weights say so wherever their vectors go
        metadata["featcache.weights_note"] = weights_note
    table = table.replace_schema_metadata(metadata)
    pq.write_table(table, f)
