"""`export_model`: one file (or folder) to deploy, built from a store's head and verified.

The model is written into a temporary folder beside `out` (each file atomically: temporary
name, fsync, rename), verified there (a fresh process runs it with the format's own runtime
on a sample of the head's dataset and compares with `featcache predict`), then renamed to
`out` with its `verification.json`. A killed export leaves at most its hidden staging folder,
removed by the next export to the same `out`; never a partial file under `out`. A model past
the tolerance is still kept, for inspection, and `ExportResult.passed` is False (the CLI
exits 1).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from featcache._io import fsync_tree, replace_folder
from featcache.classifier.persist import LoadedHead, load_head
from featcache.data.decode import DEFAULT_MAX_PIXELS
from featcache.errors import ConfigError, DataError, ExportError, WeightsError
from featcache.export.dense import head_layers
from featcache.export.formats import check_format, model_files, write_model
from featcache.export.verify import (
    RESIZED_TOLERANCE,
    TOLERANCE,
    SampleImage,
    compare,
    digests,
    read_sample,
    run_fresh,
    write_verification,
)
from featcache.extractor.registry import DEFAULT_BACKBONE, backbone_named, read_backbone_weights
from featcache.store.featurestore import FeatureStore

__all__ = ["ExportConfig", "ExportResult", "export_model"]


@dataclass(frozen=True)
class ExportConfig:
    """How to export: `format` (onnx, savedmodel, openvino); `sample` images of `dataset`
    (default: the head's own) to verify on, 0 to skip verification; `overwrite` an existing
    `out` folder."""

    format: str
    sample: int = 32
    dataset: str | None = None
    overwrite: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        check_format(self.format)
        if isinstance(self.sample, bool) or not isinstance(self.sample, int) or self.sample < 0:
            raise ConfigError(
                f"The 'sample' must be an integer >= 0 (0: no verification). Got {self.sample!r}."
            )


@dataclass
class ExportResult:
    """What was exported: the folder, its model files, the metadata written into the model,
    the verification (None when skipped) and the seconds taken (export, verification)."""

    path: Path
    format: str
    files: list[Path]
    metadata: dict[str, Any]
    verification: dict[str, Any] | None
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """True when verified within the tolerance (or verification was skipped)."""
        return self.verification is None or bool(self.verification["passed"])

    @property
    def bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files)


def _extractor(store: FeatureStore, head: LoadedHead) -> dict[str, Any]:
    spec = dict(head.meta.get("extractor") or store.extractor_spec(head.fingerprint))
    spec.setdefault("network", DEFAULT_BACKBONE)
    backbone_named(str(spec["network"])).check_profile(str(spec["profile"]))
    if spec.get("precision", "float32") != "float32":
        raise ConfigError(
            f"head '{head.name}' v{head.version} was trained on {spec['precision']} vectors; "
            "exported models run float32 and could not be verified against them: train the "
            "head on float32 vectors (extract --precision float32)"
        )
    return spec


def _sample(store: FeatureStore, dataset: str, count: int, max_pixels: int) -> list[SampleImage]:
    rows = store.dataset_rows(dataset)
    by_key = {row.key: row.path for row in sorted(rows, key=lambda r: r.key)}
    if not by_key:
        raise DataError(f"dataset '{dataset}' has no rows to verify the export on")
    keys = list(by_key)
    # Evenly spaced in key order: a pseudo-random, repeatable choice of distinct images.
    picks = sorted({int(i) for i in np.linspace(0, len(keys) - 1, min(count, len(keys)))})
    sample = read_sample([by_key[keys[i]] for i in picks], max_pixels=max_pixels)
    if not sample:
        raise DataError(
            f"dataset '{dataset}': none of the {len(picks)} sampled images can be read from "
            "their paths any more; give --dataset with images on this machine"
        )
    return sample


def _trained_on_float16(store: FeatureStore, head: LoadedHead, sample: list[str]) -> bool:
    """Whether the head's vectors are stored as float16 (then the graph rounds them so too):
    asked of up to 256 rows of the dataset it was trained on, else of the sample's."""
    trained_on = head.meta.get("dataset")
    keys = sample
    if trained_on and trained_on in store.datasets():
        rows = store.dataset_rows(str(trained_on))
        keys = [rows[int(i)].key for i in np.linspace(0, len(rows) - 1, min(256, len(rows)))]
    return "float16" in store.stored_dtypes(keys, head.fingerprint, head.layer)


def _reference(
    store: FeatureStore,
    head: LoadedHead,
    weights: Path,
    sample: list[SampleImage],
    max_pixels: int,
) -> tuple[list[SampleImage], np.ndarray]:
    """`featcache predict`'s probabilities for the sample (all classes, in column order)."""
    from featcache.predictor import Predictor

    classes = [int(c) for c in head.estimator.classes_]
    predictor = Predictor(
        store,
        head.name,
        version=head.version,
        weights=weights,
        top_k=len(classes),
        max_pixels=max_pixels,
    )
    kept, rows = [], []
    column = {c: j for j, c in enumerate(classes)}
    answers = predictor.predict_items([s.item for s in sample])
    for image, result in zip(sample, answers, strict=True):
        if result.error is not None:
            continue
        row = np.zeros(len(classes))
        for p in result.predictions:
            row[column[p.class_id]] = p.probability
        kept.append(image)
        rows.append(row)
    return kept, np.array(rows).reshape(len(rows), len(classes))


def _metadata(
    head: LoadedHead, spec: dict[str, Any], fmt: str, float16: bool, pillow_order: bool
) -> dict[str, Any]:
    from featcache import __version__

    classes = [int(c) for c in head.estimator.classes_]
    names = [head.label(c) for c in classes]
    note = head.meta.get("weights_note") or spec.get("weights_note")
    backbone = backbone_named(str(spec["network"]))
    description = (
        f"featcache head '{head.name}' v{head.version} ({head.meta.get('head')}) on "
        f"{backbone.description.split(' (')[0]} {head.layer}, profile {spec['profile']}: "
        "uint8 RGB images [N, H, W, 3] in, "
        f"probabilities [N, {len(classes)}] out"
    )
    return {
        "featcache_version": __version__,
        "format": fmt,
        "description": description + (f"; {note}" if note else ""),
        "head": {
            "name": head.name,
            "version": head.version,
            "sha256": head.record.sha256,
            "kind": head.meta.get("head"),
            "layer": head.layer,
            "dataset": head.meta.get("dataset"),
        },
        "fingerprint": head.fingerprint,
        "extractor": spec,
        "weights_note": note,
        "class_ids": classes,
        "class_names": names,
        "input": {"name": "images", "dtype": "uint8", "shape": ["N", "H", "W", 3], "order": "RGB"},
        "output": {"name": "probabilities", "dtype": "float32", "shape": ["N", len(classes)]},
        "preprocessing": {
            "profile": spec["profile"],
            "resize": spec["resize"],
            "input_size": backbone.input_size,
            "vectors_rounded_to_float16": float16,
            "pillow_pass_order": pillow_order,
        },
    }


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not (out.is_dir() and not any(out.iterdir())) and not overwrite:
        raise ConfigError(
            f"{out}: already exists; choose another --out or pass --overwrite to replace it"
        )
    out.parent.mkdir(parents=True, exist_ok=True)


_STAGING = ".{name}.export-{pid}"


def _staging(out: Path) -> Path:
    """A new, empty staging folder beside `out` for this process, after removing those that
    exports killed before left there (their process is gone)."""
    prefix = _STAGING.format(name=out.name, pid="")
    for folder in out.parent.glob(f"{glob.escape(prefix)}*"):
        pid = folder.name[len(prefix) :]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
    staging = out.parent / _STAGING.format(name=out.name, pid=os.getpid())
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    return staging


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _publish(staging: Path, out: Path) -> None:
    """Rename the finished `staging` folder to `out` (fsynced first; an `out` being replaced
    is removed only once the new one is in place: `featcache._io.replace_folder`)."""
    fsync_tree(staging)
    if not replace_folder(staging, out):
        raise ExportError(f"{out}: written by another process meanwhile; export again")


def export_model(
    store: FeatureStore,
    head: str,
    weights: str | Path,
    out: str | Path,
    config: ExportConfig,
    *,
    version: int | None = None,
) -> ExportResult:
    """Export head `head` (version `version`, default the newest) of `store` with the
    backbone from `weights` as one model of `config.format` in the folder `out`, then verify it
    (unless ``config.sample == 0``). Returns the `ExportResult`; check ``.passed``."""
    from featcache.export.graph import GraphSpec, build_module
    from featcache.export.ingraph import pillow_orders_passes

    out = Path(out)
    _prepare_out(out, config.overwrite)
    loaded = load_head(store, head, version)
    spec = _extractor(store, loaded)
    dataset = config.dataset or loaded.meta.get("dataset")
    if config.sample and not dataset:
        raise ConfigError(
            f"head '{loaded.name}' v{loaded.version} records no dataset: give --dataset to "
            "verify the export on (or --sample 0 to skip verification)"
        )
    started = time.perf_counter()
    sample = []
    if dataset and config.sample:
        sample = _sample(store, str(dataset), config.sample, config.max_pixels)
    float16 = _trained_on_float16(store, loaded, [s.key for s in sample])
    read = read_backbone_weights(weights, str(spec["network"]))
    if read.sha256 != spec["weights_sha256"]:
        raise WeightsError(
            f"{weights}: SHA-256 {read.sha256[:12]}... is not the {spec['weights_sha256'][:12]}"
            f"... that head '{loaded.name}' v{loaded.version} was trained with"
        )
    pillow_order = pillow_orders_passes()
    metadata = _metadata(loaded, spec, config.format, float16, pillow_order)
    module = build_module(
        read.layers,
        head_layers(loaded.estimator),
        GraphSpec(
            spec["profile"], spec["resize"], loaded.layer, float16, pillow_order, spec["network"]
        ),
    )
    staging = _staging(out)
    try:
        write_model(config.format, module, staging, metadata)
        del module, read
        exported = time.perf_counter()
        verification = None
        if sample:
            size = int(metadata["preprocessing"]["input_size"])
            verification = _verify(store, loaded, Path(weights), sample, config, staging, size)
            verification["model_files"] = digests(config.format, staging)
            write_verification(staging, verification)
        _publish(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    done = time.perf_counter()
    return ExportResult(
        out,
        config.format,
        model_files(config.format, out),
        metadata,
        verification,
        {"export": exported - started, "verify": done - exported},
    )


def _verify(
    store: FeatureStore,
    head: LoadedHead,
    weights: Path,
    sample: list[SampleImage],
    config: ExportConfig,
    folder: Path,
    size: int,
) -> dict[str, Any]:
    sample, reference = _reference(store, head, weights, sample, config.max_pixels)
    if not sample:
        raise ExportError(f"{folder}: predict answered none of the sampled images")
    rows, report = run_fresh(config.format, folder, [s.rgb for s in sample])
    figures = compare(sample, reference, rows, size)
    names_match = report["class_names"] == [head.label(int(c)) for c in head.estimator.classes_]
    head_match = report["metadata"].get("head", {}).get("sha256") == head.record.sha256
    problems = []
    if not figures["within_tolerance"]:
        problems.append(
            f"probabilities differ from predict's by up to {figures['max_abs_diff']:.3g} "
            f"(tolerance {TOLERANCE:g} at {size}x{size}, {RESIZED_TOLERANCE:g} resized)"
        )
    if not names_match:
        problems.append("the class names read back from the model are not the head's")
    if not head_match:
        problems.append("the head digest read back from the model is not the head's")
    with contextlib.suppress(KeyError):
        report["metadata"].pop("class_names")
    return {
        "format": config.format,
        "passed": not problems,
        "problems": problems,
        "runtime": report["runtime"],
        "runtime_version": report["runtime_version"],
        "runtime_seconds": {"load": report["load_seconds"], "run": report["run_seconds"]},
        "head": {"name": head.name, "version": head.version, "sha256": head.record.sha256},
        "fingerprint": head.fingerprint,
        "dataset": config.dataset or head.meta.get("dataset"),
        "class_names": report["class_names"],
        "class_names_match": names_match,
        **figures,
        "reference": [[float(f"{p:.9g}") for p in row] for row in reference],
        "verified_at": time.time(),
    }
