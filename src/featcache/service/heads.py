"""The head being served, and how it follows the store: newest, promoted, or pinned.

`HeadFollower.refresh` (run every few seconds, off the event loop) resolves the spec to a
head record and loads it only when the record's file digest differs from the served one:
a version number says which head, the SHA-256 says which bytes. The swap replaces one
reference, so a request that started with the old head finishes with it and none is dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from featcache.classifier.persist import LoadedHead, load_head
from featcache.errors import NotFoundError
from featcache.service.config import HeadSpec
from featcache.store.featurestore import FeatureStore, HeadRecord

__all__ = ["HeadFollower", "LiveHead"]

log = logging.getLogger("featcache.service")


@dataclass(frozen=True)
class LiveHead:
    """A loaded head and since when it is served (wall-clock seconds)."""

    head: LoadedHead
    since: float

    @property
    def digest(self) -> str:
        return self.head.record.sha256

    def describe(self) -> dict[str, object]:
        head = self.head
        return {
            "name": head.name,
            "version": head.version,
            "digest": self.digest,
            "live_since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.since)),
            "layer": head.layer,
            "fingerprint": head.fingerprint,
            "weights_note": head.meta.get("weights_note"),
        }


class HeadFollower:
    """Serves the head `spec` names from `store`; `refresh` swaps in a changed one."""

    def __init__(self, store: FeatureStore, spec: HeadSpec) -> None:
        self.store = store
        self.spec = spec
        self._lock = threading.Lock()
        record = self.resolve()
        self.live = LiveHead(load_head(store, record.name, record.version), time.time())

    def resolve(self) -> HeadRecord:
        """The record the spec names now; `NotFoundError` if there is none."""
        return self.store.head(str(self.spec))

    def refresh(self) -> bool:
        """Swap in the head the spec names if its file digest changed; return True if it did.

        A pinned version that was deleted keeps being served (its bytes are in memory).
        Store errors propagate, so the caller can report the store as unavailable.
        """
        with self._lock:
            try:
                record = self.resolve()
            except NotFoundError as exc:
                log.warning("keeping head '%s' v%d: %s", *self._served(), exc)
                return False
            if record.sha256 == self.live.digest:
                return False
            loaded = load_head(self.store, record.name, record.version)
            self.live = LiveHead(loaded, time.time())
        log.info("now serving head '%s' v%d (%s)", record.name, record.version, record.sha256[:12])
        return True

    def _served(self) -> tuple[str, int]:
        return self.live.head.name, self.live.head.version
