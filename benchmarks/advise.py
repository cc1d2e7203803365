"""`featcache advise` time on the bundled digits (pool5, fc6 and fc7 cached) and on
GTSRB-sized vectors (34,799 rows; fc7 and pool5), in one run.

    python benchmarks/advise.py [--digits-store DIR] [--weights W] [--rows 34799] [--seed 0]

The digits are extracted first (seeded random weights, written if `--weights` is not given;
minutes of TensorFlow, not timed) unless `--digits-store` names a store that holds them as
dataset 'digits'. The GTSRB-sized vectors are seeded synthetic fc7-like (4,096) and
pool5-like (9,216) floats with overlapping classes (`heads.fc7_like`). Prints wall and CPU
seconds of each `advise` run and where the time went.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path

from heads import fc7_like

from featcache.analysis.advise import advise
from featcache.store import DatasetRow, FeatureStore

FP = "e" * 64


def digits_store(work: Path, weights: Path | None) -> Path:
    from featcache.data import write_digits_folder
    from featcache.extractor.pipeline import ExtractConfig, extract
    from featcache.extractor.weights import write_demo_weights

    if weights is None:
        weights = write_demo_weights(work / "demo_alexnet.npy", seed=0)
    write_digits_folder(work / "digits")
    config = ExtractConfig(layers=("pool5", "fc6", "fc7"))
    extract(work / "digits", weights, work / "digits.fc", dataset="digits", config=config)
    return work / "digits.fc"


def gtsrb_store(work: Path, rows: int, seed: int) -> Path:
    X7, y, _, _ = fc7_like(rows, 0, 43, seed=seed)
    X5, _, _, _ = fc7_like(rows, 0, 43, dim=9216, seed=seed)  # same labels: same seed
    keys = [hashlib.sha256(f"gtsrb-{i}".encode()).hexdigest() for i in range(rows)]
    store = FeatureStore(work / "gtsrb.fc")
    store.register_extractor(FP, {"profile": "caffe", "weights_note": "synthetic benchmark"})
    for start in range(0, rows, 4096):
        part = slice(start, start + 4096)
        store.put_batch(keys[part], {"fc7": X7[part], "pool5": X5[part]}, FP)
    rows_ = [DatasetRow(k, f"img{i}.png", int(y[i]), "train") for i, k in enumerate(keys)]
    store.add_dataset("gtsrb", rows_, [f"class {c}" for c in range(43)])
    store.close()
    return work / "gtsrb.fc"


def timed(store: Path, dataset: str, layers: list[str]) -> None:
    t, cpu = time.perf_counter(), time.process_time()
    report = advise(store, dataset, layers=layers)
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    print(f"advise '{dataset}' {layers}: {wall:.1f}s wall, {cpu:.1f}s CPU; case {report.case}")
    for part, seconds in report.timings.items():
        print(f"  {part:16s} {seconds:7.2f}s")
    for name, score in report.layers.items():
        print(f"  {name}: {score.cv_accuracy:.4f} ± {score.cv_std:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--digits-store", type=Path, default=None)
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--rows", type=int, default=34_799)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        digits = args.digits_store or digits_store(work, args.weights)
        timed(digits, "digits", ["pool5", "fc6", "fc7"])
        t = time.perf_counter()
        gtsrb = gtsrb_store(work, args.rows, args.seed)
        built = time.perf_counter() - t
        print(f"\nbuilt {args.rows} rows of fc7 (4096) and pool5 (9216) in {built:.1f}s")
        timed(gtsrb, "gtsrb", ["pool5", "fc7"])


if __name__ == "__main__":
    main()
