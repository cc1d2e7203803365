"""Save heads into a store and load them back, refusing tampered files and foreign vectors.

A head is a joblib file (a pickle) registered in the store's catalog with its SHA-256 and
metadata. It is unpickled only after its bytes match the registered digest, and it only
accepts vectors from the extractor fingerprint and layer it was trained on.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import joblib
import numpy as np

from featcache.classifier.heads import LogRegHead, SoftmaxHead, top_k
from featcache.errors import FingerprintMismatchError, HeadError
from featcache.store.featurestore import FeatureStore, HeadRecord

__all__ = ["LoadedHead", "Prediction", "load_head", "save_head"]


@dataclass(frozen=True)
class Prediction:
    """One ranked answer: class id, its name and probability."""

    class_id: int
    label: str
    probability: float

    def as_dict(self) -> dict[str, Any]:
        # 6 significant digits: the same image answers the same alone or in a batch, where
        # the last bits of a float64 sum can differ.
        probability = float(f"{self.probability:.6g}")
        return {"class_id": self.class_id, "label": self.label, "probability": probability}


@dataclass(frozen=True)
class LoadedHead:
    """A head loaded from a store, with the metadata recorded when it was trained."""

    record: HeadRecord
    estimator: SoftmaxHead | LogRegHead

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def version(self) -> int:
        return self.record.version

    @property
    def meta(self) -> dict[str, Any]:
        return self.record.meta

    @property
    def fingerprint(self) -> str:
        return str(self.meta["fingerprint"])

    @property
    def layer(self) -> str:
        return str(self.meta["layer"])

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    def check_vectors(self, fingerprint: str, layer: str) -> None:
        """Raise `FingerprintMismatchError` naming both extractors if the vectors are foreign."""
        if fingerprint != self.fingerprint or layer != self.layer:
            raise FingerprintMismatchError(
                f"head '{self.name}' v{self.version} was trained on '{self.layer}' vectors of "
                f"extractor {self.fingerprint[:12]}; refused '{layer}' vectors of extractor "
                f"{fingerprint[:12]}. Extract with the head's settings or train a new head."
            )

    def label(self, class_id: int) -> str:
        names = self.class_names
        return names[class_id] if 0 <= class_id < len(names) else str(class_id)

    def rank(self, X: np.ndarray, k: int = 5) -> list[list[Prediction]]:
        """Top-`k` predictions per row, best first."""
        proba = self.estimator.predict_proba(X)
        idx, probs = top_k(proba, k)
        classes = self.estimator.classes_
        return [
            [
                Prediction(int(classes[j]), self.label(int(classes[j])), float(p))
                for j, p in zip(row_idx, row_p, strict=True)
            ]
            for row_idx, row_p in zip(idx, probs, strict=True)
        ]


def save_head(
    store: FeatureStore, name: str, estimator: SoftmaxHead | LogRegHead, meta: dict[str, Any]
) -> HeadRecord:
    """Register `estimator` under the next version of `name`; return its record."""
    buffer = io.BytesIO()
    joblib.dump(estimator, buffer)
    return store.add_head(name, buffer.getvalue(), meta)


def load_head(store: FeatureStore, name: str, version: int | None = None) -> LoadedHead:
    """Load a head (newest version unless given), after checking its file's digest."""
    record = store.head(name, version)
    payload = store.head_bytes(record)  # raises HeadError on a digest mismatch
    try:
        estimator = joblib.load(io.BytesIO(payload))
    except Exception as exc:  # a verified file that still fails is a version mismatch
        raise HeadError(
            f"head '{name}' v{record.version}: cannot be loaded ({type(exc).__name__}: {exc}); "
            "was it saved by another version of featcache or scikit-learn?"
        ) from exc
    if not isinstance(estimator, SoftmaxHead | LogRegHead):
        raise HeadError(f"head '{name}' v{record.version}: holds {type(estimator).__name__}")
    return LoadedHead(record, estimator)
