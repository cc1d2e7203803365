"""The feature store: a SQLite catalog and memory-mapped vector shards in one directory.

`FeatureStore` is the API; the other names are its parts (catalog, shard and head files,
maintenance, name rules, records), exported so that every public name has one home here.
"""

from featcache.store.catalog import Catalog
from featcache.store.export import export_vectors
from featcache.store.featurestore import CATALOG_FILE, STORAGE_DTYPES, FeatureStore
from featcache.store.heads import HEAD_SUFFIX, HEADS_FOLDER, HeadFiles
from featcache.store.maintenance import gc, info, verify
from featcache.store.names import (
    NAME_RULE,
    SPLITS,
    HeadSpec,
    normalize_split,
    validate_dataset_name,
    validate_head_name,
)
from featcache.store.paths import contained, featcache_made, open_regular, plain_name
from featcache.store.records import (
    DatasetChange,
    DatasetInfo,
    DatasetRow,
    GcReport,
    HeadRecord,
    LabelledVectors,
    ShardInfo,
    ShardRecord,
    VectorRow,
    VerifyReport,
)
from featcache.store.runtime_files import RUNTIMES_FOLDER, RuntimeAudit, RuntimeFiles, RuntimeModel
from featcache.store.schema import SCHEMA_VERSION, create_or_migrate, dedupe_rows, schema_version
from featcache.store.shards import SHARDS_FOLDER, TMP_PREFIX, ShardCheck, ShardFiles

__all__ = [
    "CATALOG_FILE",
    "HEADS_FOLDER",
    "HEAD_SUFFIX",
    "NAME_RULE",
    "RUNTIMES_FOLDER",
    "SCHEMA_VERSION",
    "SHARDS_FOLDER",
    "SPLITS",
    "STORAGE_DTYPES",
    "TMP_PREFIX",
    "Catalog",
    "DatasetChange",
    "DatasetInfo",
    "DatasetRow",
    "FeatureStore",
    "GcReport",
    "HeadFiles",
    "HeadRecord",
    "HeadSpec",
    "LabelledVectors",
    "RuntimeAudit",
    "RuntimeFiles",
    "RuntimeModel",
    "ShardCheck",
    "ShardFiles",
    "ShardInfo",
    "ShardRecord",
    "VectorRow",
    "VerifyReport",
    "contained",
    "create_or_migrate",
    "dedupe_rows",
    "export_vectors",
    "featcache_made",
    "gc",
    "info",
    "normalize_split",
    "open_regular",
    "plain_name",
    "schema_version",
    "validate_dataset_name",
    "validate_head_name",
    "verify",
]
