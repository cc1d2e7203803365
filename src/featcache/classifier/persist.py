"""Save heads into a store and load them back, refusing tampered files and foreign vectors.

A head is a file of arrays plus JSON (`featcache.classifier.headstate`: safetensors, never
a pickle) registered in the store's catalog with its SHA-256 and metadata. It is parsed
only after its bytes match the registered digest, and it only accepts vectors from the
extractor fingerprint and layer it was trained on. Heads saved by older featcache versions
are joblib pickles: they are refused here, and converted only by ``featcache heads
upgrade`` (`featcache.classifier.upgrade`), for a store the user trusts.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from featcache.classifier.finetune import FineTuneHead
from featcache.classifier.heads import LogRegHead, SoftmaxHead, top_k
from featcache.classifier.headstate import decode_head, encode_head, is_legacy_pickle
from featcache.classifier.rows import LazyVectors
from featcache.errors import ConfigError, FingerprintMismatchError, HeadError, NotFoundError
from featcache.store.commands import store_command
from featcache.store.featurestore import FeatureStore, HeadRecord, LabelledVectors
from featcache.store.names import HeadSpec

__all__ = [
    "HEAD_KINDS",
    "LoadedHead",
    "Prediction",
    "describe_training",
    "head_file_bytes",
    "load_head",
    "parse_head_file",
    "save_head",
    "training_digest",
]


#: Every head kind a head file may name, by the kind it records.
HEAD_KINDS: dict[str, type[SoftmaxHead] | type[LogRegHead] | type[FineTuneHead]] = {
    cls.head_kind: cls for cls in (SoftmaxHead, LogRegHead, FineTuneHead)
}


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
    estimator: SoftmaxHead | LogRegHead | FineTuneHead

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


def training_digest(fingerprint: str, layer: str, keys: list[str], labels: np.ndarray) -> str:
    """SHA-256 of what a head was trained on: extractor, layer, image keys and labels."""
    digest = hashlib.sha256(f"{fingerprint}:{layer}\n".encode())
    for key, label in zip(keys, labels.tolist(), strict=True):
        digest.update(f"{key}:{label}\n".encode())
    return digest.hexdigest()


def _json_safe(params: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v if isinstance(v, str | int | float | bool | type(None) | dict) else repr(v)
        for k, v in params.items()
    }


def describe_training(
    store: FeatureStore,
    estimator: SoftmaxHead | LogRegHead | FineTuneHead,
    data: LabelledVectors | LazyVectors,
    rows: np.ndarray | None = None,
) -> dict[str, Any]:
    """The metadata a saved head carries about `data`, the vectors it was fit on.

    Records the extractor (so the head refuses other vectors), the layer, the class names,
    the parameters and a digest of the rows fit on (`rows`, a boolean mask; default all).
    """
    mask = np.ones(len(data.keys), bool) if rows is None else rows
    keys = [k for k, m in zip(data.keys, mask.tolist(), strict=True) if m]
    kind = next((k for k, cls in HEAD_KINDS.items() if isinstance(estimator, cls)), None)
    if kind is None:
        raise ConfigError(
            "save_head takes a SoftmaxHead, LogRegHead or FineTuneHead; got "
            f"{type(estimator).__name__}"
        )
    spec = store.extractors().get(data.fingerprint, {})
    return {
        "head": kind,
        "params": _json_safe(estimator.get_params()),
        "dataset": data.dataset or None,
        "fingerprint": data.fingerprint,
        "layer": data.layer,
        "extractor": spec,
        "weights_note": spec.get("weights_note"),
        "classes": [int(c) for c in estimator.classes_],
        "class_names": list(data.class_names),
        "train_digest": training_digest(data.fingerprint, data.layer, keys, data.y[mask]),
        "created": time.time(),
    }


def save_head(
    store: FeatureStore,
    name: str,
    estimator: SoftmaxHead | LogRegHead | FineTuneHead,
    meta: dict[str, Any] | None = None,
    *,
    trained_on: LabelledVectors | None = None,
) -> HeadRecord:
    """Register a fitted head under the next version of `name`; return its record.

    `trained_on` is the `LabelledVectors` (from `FeatureStore.vectors`, or a ``.split()`` of
    them) the head was fit on: the head then records their extractor, layer and class names
    and refuses vectors of any other. `meta` adds or overrides entries.
    """
    if not hasattr(estimator, "classes_"):
        raise HeadError(f"head '{name}': {type(estimator).__name__} is not fitted; call .fit first")
    if trained_on is not None:
        meta = {**describe_training(store, estimator, trained_on), **(meta or {})}
    if meta is None or "fingerprint" not in meta or "layer" not in meta:
        raise ConfigError(
            f"head '{name}': pass trained_on= (the LabelledVectors it was fit on), so the head "
            "knows which extractor and layer its vectors come from"
        )
    return store.add_head(name, head_file_bytes(estimator), meta)


def head_file_bytes(estimator: SoftmaxHead | LogRegHead | FineTuneHead) -> bytes:
    """The bytes of `estimator`'s head file (arrays plus JSON)."""
    return encode_head(estimator.to_state())


def parse_head_file(
    payload: bytes, source: str, *, store: str = "STORE"
) -> SoftmaxHead | LogRegHead | FineTuneHead:
    """Build the head a head file's bytes hold; never unpickles.

    `HeadError` naming `source` for an old pickled head (naming the command that converts
    it), an unknown kind, or arrays that do not fit together.
    """
    if is_legacy_pickle(payload):
        raise HeadError(
            f"{source}: an old head file (a joblib pickle), which featcache no longer loads: "
            "unpickling a file can run any code it holds. If you trust this store (you made "
            f"it, or trust who did), convert its heads once with "
            f"'{store_command('heads upgrade', store)}'; otherwise train the head again"
        )
    state = decode_head(payload, source)
    cls = HEAD_KINDS.get(state.kind)
    if cls is None:
        raise HeadError(
            f"{source}: unknown head kind {state.kind!r} (known: {', '.join(HEAD_KINDS)})"
        )
    return cls.from_state(state, source)


def load_head(store: FeatureStore, name: str | HeadSpec, version: int | None = None) -> LoadedHead:
    """Load a head (``NAME``, ``NAME@N``, ``NAME@promoted``, or NAME and `version`), after
    checking its file's digest."""
    spec = name if isinstance(name, HeadSpec) else HeadSpec.parse(name, version)
    try:
        # name and version, as a store's head() has always been asked (wrappers rely on it)
        record = (
            store.head(spec) if spec.follow == "promoted" else store.head(spec.name, spec.version)
        )
    except NotFoundError as exc:
        if store.heads(spec.name):
            raise
        raise NotFoundError(
            f"{exc}; train one with '"
            + store_command("train", store.location, "--dataset DATASET --name", spec.name)
            + "'"
        ) from None
    name = record.name
    payload = store.head_bytes(record)  # raises HeadError on a digest mismatch
    source = f"head '{name}' v{record.version} ({store.path / record.file})"
    return LoadedHead(record, parse_head_file(payload, source, store=store.location))
