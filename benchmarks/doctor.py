"""`featcache doctor` on GTSRB-sized data: the time of each part and the recall of each
planted kind, in one run.

    python benchmarks/doctor.py [--rows 51839] [--classes 43] [--copies 500] [--flips 500]
                                [--outliers 100] [--seed 0] [--work DIR]

Makes seeded fc7-like vectors (4,096 floats, overlapping classes: `heads.fc7_like`) for
GTSRB's 34,799 train / 4,410 val / 12,630 test rows, and 32x32 pictures stored like the lab's
``train.p`` (rows ``FILE#i``), so the first run computes the pixel hashes from the arrays (a
store extracted before hashes were recorded) and the second finds them recorded. Planted:
`copies` train pictures copied into val/test (resized, JPEG re-encoded, shifted one pixel;
their vectors the original's plus a little noise), `flips` wrong labels, and `outliers`
pure-noise pictures whose vectors point elsewhere. Prints each part's seconds and the share
of each planted kind found within 2x its count of the doctor's ranked lists.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import pickle
import tempfile
import time
from pathlib import Path

import numpy as np
from heads import fc7_like
from PIL import Image

from featcache.analysis.doctor import doctor
from featcache.store import DatasetRow, FeatureStore

FP = "d" * 64


def pictures(n: int, rng: np.random.Generator) -> np.ndarray:
    """Distinct 32x32 pictures with structure at the hash's scale (8x8 blocks, smoothed)."""
    small = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    out = np.empty((n, 32, 32, 3), np.uint8)
    for i in range(n):
        out[i] = np.asarray(Image.fromarray(small[i]).resize((32, 32), Image.Resampling.BILINEAR))
    return out


def copy_of(image: np.ndarray, kind: int) -> np.ndarray:
    if kind == 0:  # resized up and back down
        big = Image.fromarray(image).resize((45, 45), Image.Resampling.BICUBIC)
        return np.asarray(big.resize((32, 32), Image.Resampling.BICUBIC))
    if kind == 1:  # re-encoded as JPEG
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=70)
        return np.asarray(Image.open(buffer).convert("RGB"))
    shifted = image.copy()  # shifted one pixel right
    shifted[:, 1:] = image[:, :-1]
    return shifted


def build(work: Path, args: argparse.Namespace) -> dict[str, list[str]]:
    rng = np.random.default_rng(args.seed)
    n, n_train, n_val = args.rows, 34_799 * args.rows // 51_839, 4_410 * args.rows // 51_839
    X, y, _, _ = fc7_like(n, 0, args.classes, seed=args.seed)
    images = pictures(n, rng)
    splits = np.array(["train"] * n_train + ["val"] * n_val + ["test"] * (n - n_train - n_val))
    planted: dict[str, list[str]] = {"pairs": [], "flips": [], "outliers": []}
    source = work / "train.p"
    # copies: row c (val/test) becomes a copy of train row o
    held = rng.choice(np.flatnonzero(splits != "train"), args.copies, replace=False)
    originals = rng.choice(n_train, args.copies, replace=False)
    for k, (c, o) in enumerate(zip(held.tolist(), originals.tolist(), strict=True)):
        images[c] = copy_of(images[o], k % 3)
        X[c] = X[o] + 0.05 * X[o].std() * rng.standard_normal(X.shape[1]).astype(np.float32)
        y[c] = y[o]
        planted["pairs"].append(f"{source}#{o}|{source}#{c}")
    rest = np.setdiff1d(np.arange(n), np.concatenate([held, originals]))
    chosen = rng.choice(rest, args.flips + args.outliers, replace=False)
    for r in chosen[: args.flips].tolist():
        y[r] = (y[r] + rng.integers(1, args.classes)) % args.classes
        planted["flips"].append(f"{source}#{r}")
    for r in chosen[args.flips :].tolist():
        images[r] = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        X[r] = np.abs(rng.standard_normal(X.shape[1])).astype(np.float32) * X.std() * 3
        planted["outliers"].append(f"{source}#{r}")
    with open(source, "wb") as f:
        pickle.dump({"features": images, "labels": y}, f, protocol=4)
    store = FeatureStore(work / "store")
    store.register_extractor(FP, {"profile": "caffe", "weights_note": "synthetic benchmark"})
    keys = [hashlib.sha256(f"bench-{i}".encode()).hexdigest() for i in range(n)]
    for start in range(0, n, 4096):
        part = slice(start, start + 4096)
        store.put_batch(keys[start : start + 4096], {"fc7": X[part]}, FP)
    rows = [DatasetRow(keys[i], f"{source}#{i}", int(y[i]), str(splits[i])) for i in range(n)]
    store.add_dataset("bench", rows, [f"class {c}" for c in range(args.classes)])
    store.close()
    return planted


def recall(found: list[str], wanted: list[str]) -> float:
    head = set(found[: 2 * len(wanted)])
    return sum(w in head for w in wanted) / max(1, len(wanted))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=51_839)
    parser.add_argument("--classes", type=int, default=43)
    parser.add_argument("--copies", type=int, default=500)
    parser.add_argument("--flips", type=int, default=500)
    parser.add_argument("--outliers", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        planted = build(work, args)
        print(f"built {args.rows} rows x 4096 in {time.perf_counter() - t:.1f}s")
        for run in ("first run (hashes computed from train.p)", "second run (hashes recorded)"):
            t = time.perf_counter()
            cpu = time.process_time()
            report = doctor(work / "store", "bench", out=work / "out")
            wall, cpu = time.perf_counter() - t, time.process_time() - cpu
            print(f"\n{run}: {wall:.1f}s wall, {cpu:.1f}s CPU")
            for part, seconds in report.timings.items():
                print(f"  {part:16s} {seconds:7.2f}s")
        near = report.near_duplicates[report.near_duplicates.cross_split]
        pairs = [f"{a}|{b}" for a, b in zip(near.path_a, near.path_b, strict=True)]
        pairs += [f"{b}|{a}" for a, b in zip(near.path_a, near.path_b, strict=True)]
        ranked = [
            p for pair in zip(pairs[: len(near)], pairs[len(near) :], strict=True) for p in pair
        ]
        print("\nrecall within 2x the planted count:")
        print(f"  near-duplicate pairs {recall_pairs(ranked, planted['pairs']):.3f}")
        print(
            f"  flipped labels       {recall(list(report.label_issues.path), planted['flips']):.3f}"
        )
        print(
            f"  outliers             {recall(list(report.outliers.path), planted['outliers']):.3f}"
        )
        print(f"  leakage: val {report.leakage['val']:.4f}, test {report.leakage['test']:.4f}")
        print(f"  neighbour search exact: {report.search_exact}")


def recall_pairs(ranked: list[str], wanted: list[str]) -> float:
    """Pairs are listed both ways round in `ranked` (two entries per pair)."""
    head = set(ranked[: 4 * len(wanted)])
    return sum(w in head for w in wanted) / max(1, len(wanted))


if __name__ == "__main__":
    main()
