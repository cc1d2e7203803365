"""doctor beside its peers on the same planted digits: a perceptual-hash deduplicator (PHash at
several Hamming thresholds) and cleanlab's Datalab at its defaults, in one run.

    python benchmarks/doctor_peers.py [--seeds 0 1] [--work DIR]

Per seed: `tests/planted.py`'s `write_planted(count=800, copies=30, flips=20, noise=5,
foreign=5)` (840 images: 30 train/test copies, resized, JPEG re-encoded or shifted one pixel;
20 flipped labels; 10 pure-noise or foreign pictures), extracted with seeded RANDOM weights
(the demo's). Printed per method: planted pairs among its top 60 cross-split pairs, pairs it
reports (grouped) and their precision, flips among its top 40 label issues, outliers among its
top 20, average precision of both rankings, and seconds.

PHash: imagededup's `PHash` when it is installed (`pip install torch==2.13.0` first, then
`pip install -e ".[peers]"`), else the same algorithm from the `imagehash` package (`phash`:
32x32 grayscale, DCT, 8x8 low frequencies against their median), said in the output.
Datalab: `find_issues(features=fc7, pred_probs=...)` with 5-fold out-of-fold probabilities of
scikit-learn's LogisticRegression on the same cached fc7, as a user would call it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from featcache.analysis.doctor import doctor
from featcache.store import FeatureStore
from planted import Planted, write_planted

THRESHOLDS = (0, 2, 4, 6, 8, 10)


def average_precision(ranked: list[Any], wanted: set[Any]) -> float:
    hits, total = 0, 0.0
    for i, item in enumerate(ranked, 1):
        if item in wanted:
            hits += 1
            total += hits / i
    return total / max(1, len(wanted))


def top(ranked: list[Any], wanted: set[Any], n: int) -> float:
    return len(set(ranked[:n]) & wanted) / max(1, len(wanted))


def phash_all(paths: list[str]) -> tuple[np.ndarray, str]:
    """(N, 64) bits of each picture's PHash, and which library made them."""
    from PIL import Image

    try:
        from imagededup.methods import PHash

        hasher = PHash(verbose=False)
        hexes = [hasher.encode_image(image_file=p) for p in paths]
        library = "imagededup PHash"
    except ImportError:
        import imagehash

        hexes = [str(imagehash.phash(Image.open(p))) for p in paths]
        library = "imagehash.phash (imagededup's PHash algorithm; imagededup not installed)"
    bits = np.array([[int(c) for c in bin(int(h, 16))[2:].zfill(64)] for h in hexes], np.uint8)
    return bits, library


def run_seed(seed: int, work: Path, weights: Path) -> list[dict[str, Any]]:
    from featcache.extractor.pipeline import extract

    planted: Planted = write_planted(
        work / f"data{seed}", count=800, copies=30, flips=20, noise=5, foreign=5, seed=seed
    )
    store = FeatureStore(work / f"store{seed}")
    extract(work / f"data{seed}", weights, store, dataset="p")
    data = store.vectors("p", "fc7")
    paths = list(data.paths)
    wanted_pairs = {frozenset(p) for p in planted.pairs}
    flips, outliers = set(planted.flipped), set(planted.outliers)
    split = {p: ("test" if "/test/" in p else "train") for p in paths}
    results = []

    t = time.perf_counter()
    report = doctor(store, "p")
    seconds = time.perf_counter() - t
    near = report.near_duplicates
    cross = near[near.cross_split]
    ranked_pairs = [frozenset(p) for p in zip(cross.path_a, cross.path_b, strict=True)]
    grouped = [frozenset(p) for p in zip(near[near.grouped].path_a, near[near.grouped].path_b,
                                          strict=True)]  # fmt: skip
    results.append({
        "method": "featcache doctor", "pairs_top60": top(ranked_pairs, wanted_pairs, 60),
        "reported": len(grouped),
        "precision": len(set(grouped) & wanted_pairs) / max(1, len(grouped)),
        "flips_top40": top(list(report.label_issues.path), flips, 40),
        "flips_ap": average_precision(list(report.label_issues.path), flips),
        "outliers_top20": top(list(report.outliers.path), outliers, 20),
        "outliers_ap": average_precision(list(report.outliers.path), outliers),
        "seconds": seconds, "leakage_test": report.leakage["test"],
        "planted_share": len(wanted_pairs) / report.split_rows["test"],
    })  # fmt: skip

    t = time.perf_counter()
    bits, library = phash_all(paths)
    distance = (bits[:, None, :] != bits[None, :, :]).sum(axis=2)
    a, b = np.triu_indices(len(paths), 1)
    d = distance[a, b]
    seconds = time.perf_counter() - t
    order = np.argsort(d, kind="stable")
    cross_pairs = [frozenset((paths[a[i]], paths[b[i]])) for i in order
                   if split[paths[a[i]]] != split[paths[b[i]]]]  # fmt: skip
    for threshold in THRESHOLDS:
        close = np.flatnonzero(d <= threshold)
        found = {frozenset((paths[a[i]], paths[b[i]])) for i in close}
        results.append({
            "method": f"PHash <= {threshold} bits",
            "pairs_top60": top(cross_pairs, wanted_pairs, 60),
            "recall": len(found & wanted_pairs) / len(wanted_pairs), "reported": len(found),
            "precision": len(found & wanted_pairs) / max(1, len(found)), "seconds": seconds,
            "library": library,
        })  # fmt: skip

    from cleanlab import Datalab
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    t = time.perf_counter()
    y = data.y
    proba = cross_val_predict(LogisticRegression(max_iter=300), data.X, y, cv=5,
                              method="predict_proba")  # fmt: skip
    lab = Datalab({"label": y}, label_name="label", verbosity=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lab.find_issues(features=data.X, pred_probs=proba)
    seconds = time.perf_counter() - t
    issues = lab.get_issues()
    sets = lab.get_info("near_duplicate")["near_duplicate_sets"]
    found = {frozenset((paths[i], paths[j])) for i, s in enumerate(sets) for j in s}
    label_rank = [paths[i] for i in np.argsort(issues.label_score.to_numpy(), kind="stable")]
    out_rank = [paths[i] for i in np.argsort(issues.outlier_score.to_numpy(), kind="stable")]
    dup_rank = [paths[i] for i in np.argsort(issues.near_duplicate_score.to_numpy(),
                                             kind="stable")]  # fmt: skip
    results.append({
        "method": "cleanlab Datalab (defaults)", "reported": len(found),
        "recall": len(found & wanted_pairs) / len(wanted_pairs),
        "precision": len(found & wanted_pairs) / max(1, len(found)),
        "dup_rows_top60": top(dup_rank, {p for pair in wanted_pairs for p in pair}, 60),
        "flips_top40": top(label_rank, flips, 40), "flips_ap": average_precision(label_rank, flips),
        "outliers_top20": top(out_rank, outliers, 20),
        "outliers_ap": average_precision(out_rank, outliers), "seconds": seconds,
    })  # fmt: skip
    store.close()
    return results


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    from featcache.extractor.weights import write_demo_weights

    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        weights = write_demo_weights(work / "demo_alexnet.npy", seed=0)
        columns = ["method", "pairs_top60", "recall", "reported", "precision", "flips_top40",
                   "flips_ap", "outliers_top20", "outliers_ap", "seconds"]  # fmt: skip
        print("RANDOM weights (the demo's); planted digits, 840 images per seed")
        for seed in args.seeds:
            rows = run_seed(seed, work, weights)
            print(f"\nseed {seed}: doctor test leakage {rows[0]['leakage_test']:.3f}, planted "
                  f"share {rows[0]['planted_share']:.3f}; {rows[1]['library']}")  # fmt: skip
            print("| " + " | ".join(columns) + " |")
            print("|" + "---|" * len(columns))
            for row in rows:
                print("| " + " | ".join(fmt(row.get(c)) for c in columns) + " |")
            dl = rows[-1]
            print(f"Datalab: planted copy rows among its top 60 near-duplicate rows "
                  f"{dl['dup_rows_top60']:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
