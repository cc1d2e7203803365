"""The feature store: a SQLite catalog and memory-mapped vector shards in one directory."""

from featcache.store.export import export_vectors
from featcache.store.featurestore import (
    DatasetRow,
    FeatureStore,
    GcReport,
    HeadRecord,
    LabelledVectors,
    VerifyReport,
)

__all__ = [
    "DatasetRow",
    "FeatureStore",
    "GcReport",
    "HeadRecord",
    "LabelledVectors",
    "VerifyReport",
    "export_vectors",
]
