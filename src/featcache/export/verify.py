"""Verification: the exported file, run by its own runtime in a fresh process, against
`featcache predict` on a sample of the dataset's images.

`verification.json` beside the model records what was compared and the outcome: the
largest absolute difference of probabilities (overall, at the network's input size, and
on images the graph resized), top-1 agreement, images checked, the class names and metadata
read back from the file, the SHA-256 of every model file, and `predict`'s probabilities
for the sample, so that `reverify` can run the file again later without the store and
catch a changed (tampered, truncated) model.

Tolerances: ``TOLERANCE`` (1e-4) on images at the network's input size (227x227 for AlexNet,
224x224 for VGG16 and ResNet50: ``input_size`` in the record), where the
graph's preprocessing is exact; ``RESIZED_TOLERANCE`` where the graph resized: the caffe
profile's resize rounds like Pillow's 8-bit path, but sums in float32 rather than Pillow's
22-bit fixed point, so 0.01-0.3% of the pixel values come out one level apart, which moved
probabilities by up to 3.5e-3 in the tests (README, "Export"); the udacity resize is within
3e-5 of its reference.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from featcache._io import atomic_write_bytes, file_sha256
from featcache.analysis.pixels import RowPixels
from featcache.data.decode import DEFAULT_MAX_PIXELS
from featcache.data.source import ImageItem
from featcache.errors import DataError, ExportError, ImageError
from featcache.export.formats import model_files
from featcache.extractor.preprocess import INPUT_SIZE

__all__ = [
    "RESIZED_TOLERANCE",
    "TOLERANCE",
    "VERIFICATION_FILE",
    "SampleImage",
    "compare",
    "read_sample",
    "reverify",
    "run_fresh",
]

TOLERANCE: Final = 1e-4
RESIZED_TOLERANCE: Final = 1e-2
VERIFICATION_FILE: Final = "verification.json"


@dataclass(frozen=True)
class SampleImage:
    """One image of the sample: its dataset path, content key, decoded pixels and the item
    `predict` reads (the same file or array row, so the same key)."""

    path: str
    key: str
    rgb: np.ndarray
    item: ImageItem


def read_sample(
    paths: Sequence[str], *, keys: Sequence[str] | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> list[SampleImage]:
    """Decode the images at `paths` (dataset rows: files or ``FILE#INDEX`` array rows).

    With `keys`, each image must still have its recorded key (`ExportError` naming the path
    otherwise); without, unreadable images are left out.
    """
    pixels = RowPixels()
    out = []
    for i, path in enumerate(paths):
        item: ImageItem = pixels.item(path)
        try:
            key = item.key()
            rgb = item.rgb(max_pixels=max_pixels)
        except (ImageError, DataError, OSError, IndexError, ValueError) as exc:
            if keys is not None:
                raise ExportError(f"{path}: sample image unreadable ({exc})") from exc
            continue
        if keys is not None and key != keys[i]:
            raise ExportError(
                f"{path}: the sample image changed since the export (key {key[:12]}, recorded "
                f"{keys[i][:12]}); export again to verify on the current images"
            )
        out.append(SampleImage(path, key, rgb, item))
    return out


def run_fresh(
    fmt: str, folder: Path, images: Sequence[np.ndarray], *, timeout: float = 900.0
) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Run the model in `folder` on each image (one batch per image) in a new Python process
    with the format's own runtime; return one probability row per image and its report."""
    with tempfile.TemporaryDirectory(prefix="featcache-verify-") as tmp:
        inputs, outputs = Path(tmp) / "inputs.npz", Path(tmp) / "outputs.npz"
        batches = {f"images_{i:06d}": rgb[None] for i, rgb in enumerate(images)}
        np.savez(inputs, **batches)  # type: ignore[arg-type]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        command = [sys.executable, "-m", "featcache.export.run", fmt, str(folder)]
        done = subprocess.run(
            [*command, str(inputs), str(outputs)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )
        if done.returncode != 0:
            reason = done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"]
            raise ExportError(f"{folder}: the {fmt} runtime could not run the model: {reason[0]}")
        with np.load(outputs, allow_pickle=False) as results:
            rows = [results[f"probabilities_{i:06d}"][0] for i in range(len(images))]
            report: dict[str, Any] = json.loads(str(results["report"]))
    return rows, report


def digests(fmt: str, folder: Path) -> dict[str, str]:
    """{file relative to `folder`: SHA-256} of the model's files."""
    return {str(p.relative_to(folder)): file_sha256(p) for p in model_files(fmt, folder)}


def compare(
    sample: Sequence[SampleImage],
    reference: np.ndarray,
    exported: Sequence[np.ndarray],
    input_size: int = INPUT_SIZE,
) -> dict[str, Any]:
    """The figures of `verification.json` for `exported` rows against `reference` ones;
    images of `input_size` squared (the network's) are held to `TOLERANCE`."""
    at_size: list[float] = []
    resized: list[float] = []
    images: list[dict[str, Any]] = []
    agree = 0
    for image, want, got in zip(sample, reference, exported, strict=True):
        diff = float(np.max(np.abs(np.asarray(got, np.float64) - want))) if len(want) else 0.0
        same_size = image.rgb.shape[:2] == (input_size, input_size)
        (at_size if same_size else resized).append(diff)
        top_want, top_got = int(np.argmax(want)), int(np.argmax(got))
        agree += top_want == top_got
        images.append(
            {
                "path": image.path,
                "key": image.key,
                "height": int(image.rgb.shape[0]),
                "width": int(image.rgb.shape[1]),
                "max_abs_diff": diff,
                "top1_predict": top_want,
                "top1_model": top_got,
            }
        )
    n = len(images)
    worst_at_size = max(at_size, default=0.0)
    worst_resized = max(resized, default=0.0)
    return {
        "images_checked": n,
        "input_size": input_size,
        "images_at_input_size": len(at_size),
        "images_resized": len(resized),
        "max_abs_diff": max(worst_at_size, worst_resized),
        "max_abs_diff_at_input_size": worst_at_size,
        "max_abs_diff_resized": worst_resized,
        "top1_agreement": agree / n if n else None,
        "tolerance": {"at_input_size": TOLERANCE, "resized": RESIZED_TOLERANCE},
        "within_tolerance": bool(
            n > 0 and worst_at_size <= TOLERANCE and worst_resized <= RESIZED_TOLERANCE
        ),
        "images": images,
    }


def _json_bytes(document: dict[str, Any]) -> bytes:
    return (json.dumps(document, indent=1, sort_keys=True) + "\n").encode()


def write_verification(folder: Path, document: dict[str, Any]) -> Path:
    path = folder / VERIFICATION_FILE
    atomic_write_bytes(path, _json_bytes(document))
    return path


def model_folder(path: Path) -> Path:
    """The export's folder, given it or a file in it."""
    return path if path.is_dir() else path.parent


def reverify(path: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> dict[str, Any]:
    """Verify an exported model again from its `verification.json`: its files' digests,
    then the model run in a fresh process on the recorded sample against the recorded
    `predict` probabilities. Returns the result (``passed`` and the reasons); nothing is
    written."""
    folder = model_folder(path)
    record_file = folder / VERIFICATION_FILE
    try:
        record = json.loads(record_file.read_text())
        fmt = str(record["format"])
        recorded_files: dict[str, str] = dict(record["model_files"])
        paths = [str(image["path"]) for image in record["images"]]
        keys = [str(image["key"]) for image in record["images"]]
        reference = np.asarray(record["reference"], np.float64)
        size = int(record.get("input_size", INPUT_SIZE))  # older records: AlexNet's
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ExportError(
            f"{record_file}: cannot be read ({exc}); re-verification needs the "
            "verification.json written by export-model"
        ) from exc
    problems = []
    current = {}
    for name, digest in sorted(recorded_files.items()):
        file = folder / name
        current[name] = file_sha256(file) if file.is_file() else None
        if current[name] is None:
            problems.append(f"{file}: missing")
        elif current[name] != digest:
            problems.append(
                f"{file}: SHA-256 {str(current[name])[:12]}... is not the {digest[:12]}... "
                "recorded at export: the file changed"
            )
    started = time.perf_counter()
    sample = read_sample(paths, keys=keys, max_pixels=max_pixels)
    try:
        rows, report = run_fresh(fmt, folder, [image.rgb for image in sample])
    except ExportError as exc:
        problems.append(str(exc))
        rows, report = [], {}
    figures: dict[str, Any] = {}
    if rows:
        figures = compare(sample, reference, rows, size)
        if not figures["within_tolerance"]:
            problems.append(
                f"{folder}: probabilities differ from predict's by up to "
                f"{figures['max_abs_diff']:.3g} (tolerance {TOLERANCE:g} at "
                f"{size}x{size}, {RESIZED_TOLERANCE:g} resized)"
            )
        if report.get("class_names") != record.get("class_names"):
            problems.append(f"{folder}: the class names in the model are not the recorded ones")
    return {
        "model": str(folder),
        "format": fmt,
        "passed": not problems,
        "problems": problems,
        "files_changed": sorted(n for n, d in recorded_files.items() if current[n] != d),
        "runtime": report.get("runtime"),
        "seconds": time.perf_counter() - started,
        **{k: v for k, v in figures.items() if k != "images"},
    }
