"""The feature store: a SQLite catalog and memory-mapped vector shards in one directory."""

from featcache.store.export import export_vectors
from featcache.store.featurestore import STORAGE_DTYPES, FeatureStore
from featcache.store.names import (
    SPLITS,
    normalize_split,
    validate_dataset_name,
    validate_head_name,
)
from featcache.store.records import (
    DatasetChange,
    DatasetInfo,
    DatasetRow,
    GcReport,
    HeadRecord,
    LabelledVectors,
    ShardInfo,
    VerifyReport,
)
from featcache.store.shards import ShardFiles

__all__ = [
    "SPLITS",
    "STORAGE_DTYPES",
    "DatasetChange",
    "DatasetInfo",
    "DatasetRow",
    "FeatureStore",
    "GcReport",
    "HeadRecord",
    "LabelledVectors",
    "ShardFiles",
    "ShardInfo",
    "VerifyReport",
    "export_vectors",
    "normalize_split",
    "validate_dataset_name",
    "validate_head_name",
]
