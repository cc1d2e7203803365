"""The feature store: a catalog (SQLite, or PostgreSQL) and vector shards in one directory
or under one object-storage URL.

`FeatureStore` is the API; the other names are its parts (catalog, shard and head files,
maintenance, name rules, records), exported so that every public name has one home here.
"""

from featcache.store.bucket import (
    BLOCK_BYTES,
    CACHE_BYTES_ENV,
    CACHE_DIR_ENV,
    BlockCache,
    BucketFiles,
    BucketHeadFiles,
    BucketShardFiles,
    RangeMatrix,
    cache_folder,
    is_url,
    shard_files_at,
    store_url,
)
from featcache.store.catalog import Catalog
from featcache.store.catalog_postgres import (
    POSTGRES_SCHEMES,
    POSTGRES_TABLES,
    PostgresConnection,
    is_postgres_url,
    redact_url,
)
from featcache.store.commands import extract_command, shell_word, source_path, store_command
from featcache.store.copy import CopyReport, copy_store
from featcache.store.export import export_vectors
from featcache.store.featurestore import (
    CATALOG_FILE,
    MAX_OPEN_SHARDS,
    VECTORS_MAX_BYTES,
    FeatureStore,
)
from featcache.store.heads import HEAD_SUFFIX, HEADS_FOLDER, MAX_HEAD_BYTES, HeadFiles
from featcache.store.localkey import KEY_ENV, LocalKey, canonical_json, key_file, local_key
from featcache.store.location import CATALOG_ENV, server_catalog
from featcache.store.maintenance import gc, info, stale_temporaries, verify
from featcache.store.names import (
    NAME_RULE,
    SPLITS,
    HeadSpec,
    normalize_split,
    validate_dataset_name,
    validate_head_name,
)
from featcache.store.paths import (
    JSON_LIMIT,
    contained,
    featcache_made,
    open_regular,
    plain_name,
    read_json,
)
from featcache.store.records import (
    DatasetChange,
    DatasetInfo,
    DatasetRow,
    FileStamp,
    GcReport,
    HeadRecord,
    LabelledVectors,
    ShardInfo,
    ShardRecord,
    VectorRow,
    VerifyReport,
)
from featcache.store.runtime_files import RUNTIMES_FOLDER, RuntimeAudit, RuntimeFiles, RuntimeModel
from featcache.store.schema import (
    SCHEMA_VERSION,
    create_or_migrate,
    dedupe_rows,
    foreign_schema,
    has_stamp_ctime,
    schema_version,
)
from featcache.store.shards import (
    SHARDS_FOLDER,
    STORAGE_DTYPES,
    TMP_PREFIX,
    ShardCheck,
    ShardFiles,
)
from featcache.store.streaming import (
    DEFAULT_BATCH_ROWS,
    LazyVectors,
    Locations,
    StoredRows,
    VectorBatch,
)

__all__ = [
    "BLOCK_BYTES",
    "CACHE_BYTES_ENV",
    "CACHE_DIR_ENV",
    "CATALOG_ENV",
    "CATALOG_FILE",
    "DEFAULT_BATCH_ROWS",
    "HEADS_FOLDER",
    "HEAD_SUFFIX",
    "JSON_LIMIT",
    "KEY_ENV",
    "MAX_HEAD_BYTES",
    "MAX_OPEN_SHARDS",
    "NAME_RULE",
    "POSTGRES_SCHEMES",
    "POSTGRES_TABLES",
    "RUNTIMES_FOLDER",
    "SCHEMA_VERSION",
    "SHARDS_FOLDER",
    "SPLITS",
    "STORAGE_DTYPES",
    "TMP_PREFIX",
    "VECTORS_MAX_BYTES",
    "BlockCache",
    "BucketFiles",
    "BucketHeadFiles",
    "BucketShardFiles",
    "Catalog",
    "CopyReport",
    "DatasetChange",
    "DatasetInfo",
    "DatasetRow",
    "FeatureStore",
    "FileStamp",
    "GcReport",
    "HeadFiles",
    "HeadRecord",
    "HeadSpec",
    "LabelledVectors",
    "LazyVectors",
    "LocalKey",
    "Locations",
    "PostgresConnection",
    "RangeMatrix",
    "RuntimeAudit",
    "RuntimeFiles",
    "RuntimeModel",
    "ShardCheck",
    "ShardFiles",
    "ShardInfo",
    "ShardRecord",
    "StoredRows",
    "VectorBatch",
    "VectorRow",
    "VerifyReport",
    "cache_folder",
    "canonical_json",
    "contained",
    "copy_store",
    "create_or_migrate",
    "dedupe_rows",
    "export_vectors",
    "extract_command",
    "featcache_made",
    "foreign_schema",
    "gc",
    "has_stamp_ctime",
    "info",
    "is_postgres_url",
    "is_url",
    "key_file",
    "local_key",
    "normalize_split",
    "open_regular",
    "plain_name",
    "read_json",
    "redact_url",
    "schema_version",
    "server_catalog",
    "shard_files_at",
    "shell_word",
    "source_path",
    "stale_temporaries",
    "store_command",
    "store_url",
    "validate_dataset_name",
    "validate_head_name",
    "verify",
]
