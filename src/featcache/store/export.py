"""Export a dataset's vectors to ``.npz`` or Parquet, rows aligned with keys, paths and labels.

Parquet columns: ``key``, ``path``, ``label``, ``label_name``, ``split``, ``features``
(a fixed-size list of float32), readable by pandas, DuckDB, Spark and Ray.
The ``.npz`` holds ``keys``, ``paths``, ``labels``, ``splits`` and ``features`` (N x D float32).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from featcache.errors import ConfigError, StoreError
from featcache.store.featurestore import FeatureStore

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
    names = data.class_names
    splits = ["" if s is None else s for s in data.splits]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        if suffix == ".npz":
            with open(tmp, "wb") as f:
                np.savez(
                    f,
                    keys=np.array(data.keys),
                    paths=np.array(data.paths),
                    labels=data.y,
                    splits=np.array(splits),
                    features=data.X,
                )
        else:
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
            table = table.replace_schema_metadata(
                {"featcache.fingerprint": data.fingerprint, "featcache.layer": layer}
            )
            pq.write_table(table, tmp)
        os.replace(tmp, out)
    except OSError as exc:
        raise StoreError(f"{out}: cannot write export ({exc})") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return out
