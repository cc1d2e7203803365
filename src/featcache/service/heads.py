"""The head being served, and how it follows the store: newest, promoted, or pinned.

`HeadFollower.refresh` (run every few seconds, off the event loop) resolves the spec to a
head record and loads it when its version, its file digest or its class names differ from
the served one's: a retrain can write byte-identical weights under new class names. The
swap replaces one reference, so a request that started with the old head finishes with it
and none is dropped. When the head has no version left in the store, nothing is served:
requests get 503 ``head_unavailable`` and ``/healthz`` says why, until one is trained.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass

from featcache.classifier.persist import LoadedHead, load_head
from featcache.errors import NotFoundError
from featcache.service.config import HeadSpec
from featcache.service.errors import ApiError
from featcache.store.commands import store_command
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

    @property
    def identity(self) -> str:
        """What an answer depends on: version, file digest and class names (answers are
        cached under it)."""
        return identity_of(self.head.record)

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


def identity_of(record: HeadRecord) -> str:
    names = "\n".join(str(n) for n in record.meta.get("class_names", ()))
    return f"{record.version}:{record.sha256}:{hashlib.sha256(names.encode()).hexdigest()}"


class HeadFollower:
    """Serves the head `spec` names from `store`; `refresh` swaps in a changed one."""

    def __init__(self, store: FeatureStore, spec: HeadSpec) -> None:
        self.store = store
        self.spec = spec
        self._lock = threading.Lock()
        record = self.resolve()
        self._live = LiveHead(load_head(store, record.name, record.version), time.time())
        #: Why nothing is served (the head has no version left), or None.
        self.gone: str | None = None

    @property
    def live(self) -> LiveHead:
        """The served head; `ApiError` 503 when the head has no version left."""
        if self.gone is not None:
            raise ApiError(503, "head_unavailable", self.gone)
        return self._live

    @property
    def last(self) -> LiveHead:
        """The head served last, even when it is gone (for descriptions)."""
        return self._live

    def resolve(self) -> HeadRecord:
        """The record the spec names now; `NotFoundError` if there is none."""
        return self.store.head(str(self.spec))

    def refresh(self) -> bool:
        """Swap in the head the spec names if its version, file digest or class names
        changed; return True if it did.

        A pinned version that was deleted keeps being served (its bytes are in memory) while
        the head has other versions; with none left, `live` raises 503 until one returns.
        Store errors propagate, so the caller can report the store as unavailable.
        """
        with self._lock:
            try:
                record = self.resolve()
            except NotFoundError as exc:
                if self.store.heads(self.spec.name):
                    log.warning("keeping head '%s' v%d: %s", *self._served(), exc)
                    return False
                if self.gone is None:
                    log.error("head '%s' has no version left: serving nothing", self.spec.name)
                self.gone = (
                    f"head '{self.spec.name}' has no version left in the store (deleted); "
                    "train one with '"
                    + store_command(
                        "train", self.store.location, "--dataset DATASET --name", self.spec.name
                    )
                    + "' and it is served within seconds"
                )
                return False
            if self.gone is None and identity_of(record) == self._live.identity:
                return False
            loaded = load_head(self.store, record.name, record.version)
            self._live, self.gone = LiveHead(loaded, time.time()), None
        log.info("now serving head '%s' v%d (%s)", record.name, record.version, record.sha256[:12])
        return True

    def _served(self) -> tuple[str, int]:
        return self._live.head.name, self._live.head.version
