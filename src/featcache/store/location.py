"""Where a store's catalog lives: SQLite in its folder (the default) or a database server.

``FeatureStore(path, catalog=URL)`` or the ``FEATCACHE_CATALOG`` environment variable names a
``postgresql://`` catalog; processes a command starts (serve's workers, Ray's) inherit the
variable, so every one of them opens the same catalog.
"""

from __future__ import annotations

import os

from featcache.errors import ConfigError
from featcache.store.catalog_postgres import is_postgres_url, redact_url

__all__ = ["CATALOG_ENV", "server_catalog"]

CATALOG_ENV = "FEATCACHE_CATALOG"


def server_catalog(catalog: str | None) -> str | None:
    """The catalog URL to use: `catalog`, else ``$FEATCACHE_CATALOG``, else None (SQLite).

    `ConfigError` for anything but a ``postgresql://`` URL.
    """
    # "" (given) is the folder's own SQLite catalog, whatever the environment says
    url = catalog if catalog is not None else os.environ.get(CATALOG_ENV) or None
    if not url:
        return None
    if not is_postgres_url(url):
        where = "the 'catalog'" if catalog is not None else f"${CATALOG_ENV}"
        raise ConfigError(
            f"{where} must be a postgresql://USER@HOST:PORT/DATABASE URL (the SQLite catalog "
            f"is the default and needs none). Got {redact_url(url)!r}."
        )
    return url
