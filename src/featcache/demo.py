"""The main job end to end on the bundled sample: extract → train → evaluate → predict.

The sample is scikit-learn's digits written as an image folder; the weights are seeded
RANDOM weights in the real file's layout (the real ones cannot be downloaded everywhere),
so the accuracies show that the machinery works, not what ImageNet features achieve.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from featcache.classifier.evaluate import Evaluation, evaluate_head, write_report
from featcache.classifier.train import TrainResult, train_head
from featcache.data import write_digits_folder
from featcache.errors import ConfigError
from featcache.extractor.pipeline import ExtractConfig, ExtractReport, extract
from featcache.extractor.weights import DEMO_MARKER, write_demo_weights
from featcache.predictor import ImageResult, Predictor, list_images
from featcache.store.featurestore import FeatureStore

__all__ = ["DemoResult", "run_demo"]

DIGITS = 1797  # images in scikit-learn's digits, the bundled sample


@dataclass
class DemoResult:
    """Where everything went and what each step measured."""

    out: Path
    data: Path
    weights: Path
    store: Path
    extraction: ExtractReport
    heads: dict[str, TrainResult] = field(default_factory=dict)
    evaluations: dict[str, Evaluation] = field(default_factory=dict)
    reports: dict[str, Path] = field(default_factory=dict)
    predictions: list[ImageResult] = field(default_factory=list)


def _has_demo_weights(path: Path) -> bool:
    # Cheap check, no full load: our marker is the pickle's last key, in its last bytes.
    if not path.is_file() or path.stat().st_size < 4096:
        return False
    with open(path, "rb") as f:
        f.seek(-4096, 2)
        return DEMO_MARKER.encode() in f.read()


def run_demo(
    out: str | Path,
    *,
    limit: int | None = None,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> DemoResult:
    """Run the whole job in `out` (reusing what a previous run left there); return results."""
    out = Path(out)
    data = out / "digits"
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be >= 1. Got {limit}.")
    if not data.is_dir():
        write_digits_folder(data, limit=limit, seed=seed)
    elif limit is not None and len(list_images([data])) != min(limit, DIGITS):
        raise ConfigError(
            f"--limit {limit}: {data} holds {len(list_images([data]))} digit images from an "
            f"earlier run, and the demo reuses what it finds in --out; give another --out "
            f"(or delete {out}) to run on {min(limit, DIGITS)}"
        )
    weights = out / "demo_alexnet_RANDOM.npy"
    if not _has_demo_weights(weights):
        write_demo_weights(weights, seed=seed)
    store_path = out / "store"
    store = FeatureStore(store_path)
    extraction = extract(
        data, weights, store, config=ExtractConfig(), dataset="digits", progress=progress
    )
    result = DemoResult(out, data, weights, store_path, extraction)
    for kind in ("softmax", "logreg"):
        params = {"random_state": seed}
        result.heads[kind] = train_head(
            store, "digits", head=kind, params=params, name=f"digits-{kind}"
        )
        evaluation = evaluate_head(store, f"digits-{kind}", "digits", split="test")
        result.evaluations[kind] = evaluation
        report_dir = out / "reports" / f"digits-{kind}"
        write_report(evaluation, report_dir)
        result.reports[kind] = report_dir
    sample = list_images([data / "test"])[:3]
    result.predictions = Predictor(store, "digits-softmax", top_k=3).predict(sample)
    return result
