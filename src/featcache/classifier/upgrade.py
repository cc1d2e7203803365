"""Convert a trusted store's old heads (joblib pickles) to head files of arrays plus JSON.

The one place featcache still unpickles a head, on the user's explicit word that the store
is trusted (``featcache heads upgrade``): unpickling runs whatever code a file holds, so
every other command refuses these files and names this one.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from featcache.classifier.finetune import FineTuneHead
from featcache.classifier.heads import LogRegHead, SoftmaxHead
from featcache.classifier.headstate import is_legacy_pickle
from featcache.classifier.persist import head_file_bytes
from featcache.errors import HeadError
from featcache.store.featurestore import FeatureStore, HeadRecord

__all__ = ["UpgradedHead", "legacy_heads", "upgrade_heads"]


@dataclass(frozen=True)
class UpgradedHead:
    """One head version converted: its name, version, and old and new files."""

    name: str
    version: int
    old_file: str
    new_file: str


def legacy_heads(store: FeatureStore) -> list[HeadRecord]:
    """The head versions whose file is an old pickle (read, never unpickled, to tell)."""
    found = []
    for record in store.heads():
        try:
            payload = store.head_bytes(record)
        except HeadError:
            continue  # a missing or changed file is store verify's to report, not ours
        if is_legacy_pickle(payload):
            found.append(record)
    return found


def upgrade_heads(store: FeatureStore) -> list[UpgradedHead]:
    """Unpickle each old head (its digest checked first) and save it again as arrays plus
    JSON under the same name and version. Only for a store the caller trusts."""
    import joblib

    done = []
    for record in legacy_heads(store):
        payload = store.head_bytes(record)  # HeadError on a digest mismatch
        label = f"head '{record.name}' v{record.version} ({store.path / record.file})"
        try:
            estimator = joblib.load(io.BytesIO(payload))
        except Exception as exc:  # anything a pickle from an older version may raise
            raise HeadError(
                f"{label}: cannot be unpickled ({type(exc).__name__}: {exc}); train it again"
            ) from exc
        if not isinstance(estimator, SoftmaxHead | LogRegHead | FineTuneHead):
            raise HeadError(f"{label}: holds {type(estimator).__name__}, not a featcache head")
        if isinstance(estimator, LogRegHead) and not hasattr(estimator, "coef_"):
            # before heads were data, LogRegHead kept the fitted LogisticRegression itself
            model = estimator.__dict__.pop("model_")
            estimator.coef_, estimator.intercept_ = model.coef_, model.intercept_
        new = store.replace_head_file(record, head_file_bytes(estimator))
        done.append(UpgradedHead(record.name, record.version, record.file, new.file))
    return done
