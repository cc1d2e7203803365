"""Predictions from the cache: image → key → stored vector → head → top-k.

Cached images never touch TensorFlow. An image the store has not seen is extracted with the
head's own extractor settings (profile, precision, weights checked by SHA-256), stored, then
answered; the network is built once, on the first such image. Used by ``featcache predict``
and by the HTTP service, which also relies on `Predictor.head` picking up retrained versions.

`runtime` "openvino" runs the model converted into the store: once it is converted, no
TensorFlow is imported and the weights file is not even read (the head's extractor records
its SHA-256); it is read only to convert again a cached model found damaged. A head
trained on reduced-precision OpenVINO vectors always extracts with OpenVINO, as its
fingerprint says.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from featcache.classifier.persist import LoadedHead, Prediction, load_head
from featcache.data.decode import DEFAULT_MAX_PIXELS
from featcache.data.source import DEFAULT_MAX_FILE_BYTES, IMAGE_SUFFIXES, ImageItem, ImageSource
from featcache.errors import ConfigError, DataError, FeatcacheError, ImageError, WeightsError
from featcache.extractor.fingerprint import check_runtime
from featcache.store.featurestore import DatasetRow, FeatureStore
from featcache.store.names import HeadSpec

if TYPE_CHECKING:  # the extractor's modules are imported only to extract
    from featcache.extractor.fingerprint import ExtractorSpec
    from featcache.extractor.network import Network, Runtime, WeightsSource
    from featcache.extractor.weights import Weights

__all__ = ["UPLOADS_DATASET", "ImageResult", "Predictor", "list_images"]

#: How an answer says its image is new and no weights were given to extract it.
NOT_STORED = "not in the store"

#: The dataset that records every image extracted to answer it (served uploads, and
#: images ``featcache predict --weights`` extracted), so gc keeps their vectors.
UPLOADS_DATASET = "uploads"


@dataclass
class ImageResult:
    """The answer for one image: its top-k predictions, or the reason it has none."""

    path: str | None
    key: str | None
    cached: bool = False
    predictions: list[Prediction] = field(default_factory=list)
    error: str | None = None
    head: dict[str, Any] | None = None  # {"name", "version"} of the head that answered

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "key": self.key, "cached": self.cached}
        if self.head is not None:
            out["head"] = self.head
        if self.error is None:
            out["predictions"] = [p.as_dict() for p in self.predictions]
        else:
            out["error"] = self.error
        return out


def list_images(paths: Sequence[str | Path]) -> list[Path]:
    """Files as given; folders expanded to their image files (sorted, recursively)."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            out += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            out.append(path)
    if not out:
        raise DataError(f"no images in {', '.join(map(str, paths))}")
    return out


def _reason_for(path: str | None, failure: tuple[str, str]) -> str:
    """A failure's reason as the file `path` would have it: the reason names the file that
    failed, and another file of the same bytes failed with it."""
    failed, reason = failure
    if path is not None and path != failed and reason.startswith(f"{failed}: "):
        return f"{path}: {reason[len(failed) + 2 :]}"
    return reason


class Predictor:
    """Answers for images and keys with a store's head: `head` is ``NAME`` (the newest
    version, re-checked), ``NAME@promoted`` (the promoted one, re-checked) or ``NAME@N``."""

    def __init__(
        self,
        store: FeatureStore,
        head: str,
        *,
        weights: str | Path | None = None,
        version: int | None = None,
        top_k: int = 5,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        refresh_seconds: float = 2.0,
        runtime: str | None = None,
    ) -> None:
        if top_k < 1:
            raise ConfigError(f"The 'top_k' must be >= 1. Got {top_k}.")
        if runtime is not None:
            check_runtime(runtime)
        self.runtime = runtime  # None: the one the head's vectors need, else TensorFlow
        self.store = store
        self.head_spec = HeadSpec.parse(head, version)
        self.head_name = self.head_spec.name
        self.top_k = top_k
        self.max_pixels = max_pixels
        if max_file_bytes < 1:
            raise ConfigError(f"The 'max_file_bytes' must be >= 1. Got {max_file_bytes}.")
        self.max_file_bytes = max_file_bytes
        self._refresh_seconds = refresh_seconds
        self._weights_path = Path(weights) if weights is not None else None
        self._head = load_head(store, self.head_spec)
        self._checked_at = time.monotonic()
        self._lock = threading.Lock()
        self._extract_lock = threading.Lock()
        self._weights: Weights | None = None
        self._networks: dict[str, Network] = {}  # by runtime and fingerprint, on first use

    @property
    def head(self) -> LoadedHead:
        """The head in use; a newly registered head replaces it (checked every few s).

        A change is seen by the head file's SHA-256, not only by its version number, so a
        head deleted and trained again is picked up; a deleted head raises `NotFoundError`.
        """
        if self.head_spec.follow == "pinned":
            return self._head
        now = time.monotonic()
        if now - self._checked_at >= self._refresh_seconds:
            with self._lock:
                if now - self._checked_at >= self._refresh_seconds:
                    self._checked_at = now
                    newest = self.store.head(self.head_spec)
                    if (newest.version, newest.sha256) != (
                        self._head.version,
                        self._head.record.sha256,
                    ):
                        self._head = load_head(self.store, self.head_name, newest.version)
        return self._head

    @property
    def can_extract(self) -> bool:
        return self._weights_path is not None

    def predict_keys(
        self, keys: Sequence[str], *, head: LoadedHead | None = None
    ) -> list[ImageResult]:
        """Answer stored keys (with `head`, default `self.head`); a key without a vector
        gets an error result."""
        head = head or self.head
        found = self.store.has(list(keys), head.fingerprint, head.layer)
        results = [ImageResult(None, key, cached=key in found) for key in keys]
        ready = [r for r in results if r.cached]
        if ready:
            X = self.store.get([r.key for r in ready if r.key], head.fingerprint, head.layer)
            for result, ranked in zip(ready, head.rank(X, self.top_k), strict=True):
                result.predictions = ranked
                result.head = {"name": head.name, "version": head.version}
        for result in results:
            if not result.cached:
                result.error = (
                    f"no '{head.layer}' vector for key {result.key} (extractor "
                    f"{head.fingerprint[:12]}); send the image itself"
                )
        return results

    def predict_items(
        self,
        items: Sequence[ImageItem],
        *,
        head: LoadedHead | None = None,
        top_k: int | None = None,
    ) -> list[ImageResult]:
        """Answer images (files or uploaded bytes), extracting and storing unseen ones, with
        `head` (default `self.head`).

        Without weights, an unseen image gets an error result (undecodable ones say why).
        """
        k = self._top_k(top_k)
        results: list[ImageResult] = []
        for item in items:
            try:
                results.append(ImageResult(item.path, item.key()))
            except ImageError as exc:
                results.append(ImageResult(item.path, None, error=str(exc)))
        head = head or self.head
        keys = [r.key for r in results if r.key]
        cached = self.store.has(keys, head.fingerprint, head.layer)
        unseen = [
            item for item, r in zip(items, results, strict=True) if r.key and r.key not in cached
        ]
        failures = self._extract(unseen, head) if unseen else {}
        answered = [r for r in results if r.key and r.key not in failures]
        if answered:
            X = self.store.get([r.key for r in answered if r.key], head.fingerprint, head.layer)
            for result, ranked in zip(answered, head.rank(X, k), strict=True):
                result.predictions = ranked
                result.cached = result.key in cached
                result.head = {"name": head.name, "version": head.version}
        for result in results:
            if result.key in failures:
                result.error = _reason_for(result.path, failures[result.key])
        return results

    def predict(self, paths: Sequence[str | Path], top_k: int | None = None) -> list[ImageResult]:
        """Answer image files and folders of images (searched recursively), one result each.

        Each result has ``path``, ``key``, ``cached`` and ``predictions`` (best first, each
        with ``class_id``, ``label``, ``probability``), or ``error`` saying why it has none.
        `top_k` overrides the predictor's own for this call.
        """
        return self.predict_items(
            [ImageItem(str(p), file=p, max_bytes=self.max_file_bytes) for p in list_images(paths)],
            top_k=top_k,
        )

    def _top_k(self, top_k: int | None) -> int:
        if top_k is None:
            return self.top_k
        if top_k < 1:
            raise ConfigError(f"The 'top_k' must be >= 1. Got {top_k}.")
        return top_k

    def _extract(self, items: list[ImageItem], head: LoadedHead) -> dict[str, tuple[str, str]]:
        """Extract unseen images into the store; return {key: (path, reason)} for those that
        failed (files of the same bytes share a key: `_reason_for` names each its own)."""
        from featcache.extractor.pipeline import ExtractConfig, extract

        if self._weights_path is None:
            return {item.key(): (item.path, self._why_unseen(item)) for item in items}
        spec = head.meta.get("extractor") or self.store.extractor_spec(head.fingerprint)
        runtime = self._runtime_for(spec)
        config = ExtractConfig(
            profile=spec["profile"],
            resize=spec["resize"],
            precision=spec["precision"],
            layers=(head.layer,),
            max_pixels=self.max_pixels,
            runtime=runtime,
            backbone=spec.get("network", "alexnet"),
        )
        with self._extract_lock:  # one batch through the network at a time
            networks = self._runtime(runtime, head.layer)
            report = extract(
                ImageSource(items, [], "uploads"),
                self._weights_source(networks, config.spec(spec["weights_sha256"])),
                self.store,
                config=config,
                network_factory=networks,
                weights_sha256=spec["weights_sha256"],
                progress=None,  # a service's requests: no bar
                record_failures=False,
            )
        if report.fingerprint != head.fingerprint:
            raise FeatcacheError(
                f"extracted with fingerprint {report.fingerprint[:12]} but head "
                f"'{head.name}' expects {head.fingerprint[:12]}"
            )
        by_path = dict(report.failures)
        self._record_uploads([item for item in items if item.path not in by_path], head)
        return {
            item.key(): (item.path, by_path[item.path]) for item in items if item.path in by_path
        }

    def _record_uploads(self, items: list[ImageItem], head: LoadedHead) -> None:
        """Keep the images just extracted for an answer as rows of the ``uploads`` dataset
        (path: time, head and file name; no label), so `gc` keeps their vectors and a user
        can label and add them later. One row per image: a known image is not extracted
        again."""
        if not items:
            return
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        rows = [
            DatasetRow(item.key(), f"{stamp} {head.name}@{head.version} {item.path}", None)
            for item in items
        ]
        self.store.add_dataset(UPLOADS_DATASET, rows, append=True, source="served uploads")

    def _why_unseen(self, item: ImageItem) -> str:
        """Why an unseen image gets no answer without weights: undecodable, or just new."""
        try:
            item.rgb(max_pixels=self.max_pixels)
        except ImageError as exc:
            return str(exc)
        return f"{item.path}: {NOT_STORED}; give the weights (--weights) to extract it"

    def _runtime_for(self, spec: dict[str, Any]) -> str:
        needed = spec.get("runtime")  # recorded only where the runtime changes the numbers
        if needed is None:
            return self.runtime or "tensorflow"
        if self.runtime is not None and self.runtime != needed:
            raise ConfigError(
                f"head '{self.head_name}' was trained on {spec['precision']} vectors from "
                f"runtime '{needed}', which only that runtime reproduces: use --runtime {needed}"
            )
        return str(needed)

    def _weights_source(self, runtime: Runtime, spec: ExtractorSpec) -> Weights | Path:
        """The weights, read and checked once per process (a service extracts again and
        again); or only their path while the runtime's converted model is cached: `extract`
        then reads them only if that model turns out to be damaged and must be converted."""
        path, converted = self._weights_path, runtime.converted
        if path is not None and self._weights is None and converted and converted(spec):
            return path
        return self._load_weights(spec.weights_sha256, spec.network)

    def _load_weights(self, sha256: str, network: str) -> Weights:
        from featcache.extractor.registry import read_backbone_weights

        if self._weights is None:
            self._weights = read_backbone_weights(self._weights_path, network)  # type: ignore[arg-type]
        if self._weights.sha256 != sha256:  # checked again for each head version
            raise WeightsError(
                f"{self._weights_path}: SHA-256 {self._weights.sha256[:12]}... is not the "
                f"{sha256[:12]}... that head '{self.head_name}' was trained with"
            )
        return self._weights

    def _runtime(self, name: str, layer: str) -> Runtime:
        """The runtime called `name`, its networks built once per fingerprint and kept."""
        from featcache.extractor.network import Runtime, runtime_named

        base = runtime_named(name, self.store, (layer,))

        def build(weights: WeightsSource, spec: ExtractorSpec) -> Network:
            key = f"{name}:{spec.fingerprint}"
            if key not in self._networks:
                self._networks[key] = base.build(weights, spec)
            return self._networks[key]

        return Runtime(name, build, converted=base.converted)
