"""Content keys without re-reading unchanged files: a stat record like git's index.

Hashing every image on every run reads the whole dataset again (a re-run of 1.28M JPEGs reads
~140 GB to learn that nothing changed). The store remembers, per file path, the (size,
mtime_ns, ctime_ns, inode) it had when it was hashed and its SHA-256
(`FeatureStore.known_file_digests`); a file whose stat still matches is trusted to hold the
same bytes, as git trusts its index, and as the store already trusts its own shards and
runtime models between checks. The inode change time (ctime) is in the stamp because
``touch -d`` can set a rewritten file's mtime back, but nothing short of changing the clock
sets its ctime back.

Like git's "racily clean" rule, a file modified (mtime or ctime) within `RACY_SECONDS` of
being hashed is not recorded (a write in the same timestamp tick could change it without
changing its stat).
``rehash=True`` (``extract --rehash``) hashes every file again and renews the record.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

from featcache.data import ImageItem
from featcache.extractor.stages import Failed, Keyed, MapFn, key_items
from featcache.store import FeatureStore, FileStamp

__all__ = ["RACY_SECONDS", "KeyedItems", "key_items_trusting_stat"]

#: A file modified this recently is hashed but its stat is not recorded (see the docstring).
RACY_SECONDS = 2.0


class KeyedItems:
    """What keying found: items with keys (in the given order), unreadable ones, and how many
    keys came from the stat record instead of reading the file."""

    def __init__(self, keyed: list[Keyed], failed: list[Failed], trusted: int) -> None:
        self.keyed = keyed
        self.failed = failed
        self.trusted = trusted


def _stat(item: ImageItem) -> tuple[str, FileStamp] | None:
    if item.file is None or item.data is not None or item.array is not None:
        return None  # bytes or arrays in memory: hashing them reads nothing
    try:
        st = os.stat(item.file)
    except OSError:
        return None  # key_items reports why it cannot be read
    return os.path.abspath(item.file), FileStamp.of(st)


def key_items_trusting_stat(
    items: Sequence[ImageItem],
    store: FeatureStore | None,
    map_fn: MapFn[ImageItem, Keyed | Failed] = map,
    *,
    rehash: bool = False,
) -> KeyedItems:
    """Key every item: from the store's stat record where a file is unchanged, else by
    hashing it (then recorded). Without a store, or with `rehash`, every file is hashed."""
    stats = [_stat(item) if store is not None else None for item in items]
    known: dict[str, str] = {}
    if store is not None and not rehash:
        known = store.known_file_digests({s[0]: s[1] for s in stats if s is not None})
    keys: list[str | None] = [known.get(s[0]) if s is not None else None for s in stats]
    todo = [i for i, key in enumerate(keys) if key is None]
    hashed, failed = key_items([items[i] for i in todo], map_fn)
    fresh: dict[str, tuple[FileStamp, str]] = {}
    by_item = {id(item): key for item, key in hashed}
    now = time.time_ns()
    for i in todo:
        key = by_item.get(id(items[i]))
        keys[i] = key
        found = stats[i]
        changed = max(found[1].mtime_ns, found[1].ctime_ns) if found is not None else now
        if key is not None and found is not None and now - changed > RACY_SECONDS * 1e9:
            fresh[found[0]] = (found[1], key)
    if store is not None and fresh and not store.read_only:
        store.remember_file_digests(fresh)
    keyed = [(item, key) for item, key in zip(items, keys, strict=True) if key is not None]
    return KeyedItems(keyed, failed, len(items) - len(todo))
