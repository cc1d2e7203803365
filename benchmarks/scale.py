"""Any size on one machine: seconds, peak RSS and open files per operation at 10k..1M rows.

    python benchmarks/scale.py [--sizes 10000,100000] [--dim 4096] [--classes 100]
                               [--epochs 3] [--nofile 512] [--folder /tmp/featcache-scale]
                               [--ops stream,train,...] [--keep] [--reuse]

For each size, builds a store through the public API (`FeatureStore.put_batch` in chunks of
`--shard-rows` rows, `add_dataset` with labels and a test split): seeded synthetic fc7-like
vectors (class centres plus noise, ReLU; NOT features of real images). Then runs each
operation in its own child process under ``RLIMIT_NOFILE = --nofile`` and prints, per
operation: seconds, the child's peak RSS (`ru_maxrss`, imports included) and the most open
file descriptors seen (sampled every 10 ms). The operations:

- ``catalog_cached``: `FeatureStore.has` over every key (extract's "already cached?" check)
- ``catalog_rows``: `FeatureStore.lazy_vectors` (the catalog query under every read)
- ``catalog_write``: `add_dataset` of every row again, unchanged
- ``lookup``: 200 single-key `get` + `paths_of` + generation (a cached lookup of the
  service), after 1,000 untimed ones (a serving process has checked its shards once); p50
- ``stream``: every vector through `FeatureStore.batches`
- ``train``: `train_head` softmax (`--epochs`), ``evaluate``: `evaluate_head` on the test split
- ``export``: `export_vectors` to Parquet
- ``doctor``, ``advise``: the analyses (fc7)
- ``verify``: `FeatureStore.verify` (the catalog audit of every row, then every shard
  re-hashed and read back)

The store is deleted afterwards unless `--keep`; `--reuse` measures a store kept by an
earlier `--keep` run of the same size instead of building it again (the 1M build takes about
20 minutes). Figures depend on the machine's load: the
README says on what machine and load its table was measured.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

OPS = (
    "catalog_cached",
    "catalog_rows",
    "catalog_write",
    "lookup",
    "stream",
    "train",
    "evaluate",
    "export",
    "doctor",
    "advise",
    "verify",
)
FINGERPRINT = "5ca1e" * 12 + "beef"
DATASET = "bench"
SPEC = {"network": "alexnet", "weights_note": "random: synthetic vectors, not image features"}


def key_of(i: int) -> str:
    return hashlib.sha256(i.to_bytes(8, "little")).hexdigest()


def build(
    folder: Path, rows: int, dim: int, classes: int, shard_rows: int, seed: int
) -> tuple[float, float]:
    """Write `rows` synthetic vectors and the dataset listing them; return the seconds in
    all and those of the dataset write (every row new)."""
    from featcache.store import FeatureStore

    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    # centres 2*sqrt(2) noise widths apart at any dim: classes overlap, accuracy is not 100%
    centres = rng.standard_normal((classes, dim)).astype(np.float32) * np.float32(4 / dim**0.5)
    labels = rng.integers(0, classes, size=rows)
    with FeatureStore(folder) as store:
        # advise measures the layers of registered backbones: the vectors stand in for AlexNet's
        # fc7 (4096-d by default), and the note says they are random
        store.register_extractor(FINGERPRINT, SPEC)
        for lo in range(0, rows, shard_rows):
            hi = min(rows, lo + shard_rows)
            X = centres[labels[lo:hi]]
            X += rng.standard_normal((hi - lo, dim), dtype=np.float32) * 2.0
            np.maximum(X, 0, out=X)
            store.put_batch([key_of(i) for i in range(lo, hi)], {"fc7": X}, FINGERPRINT)
        names = [f"class{c}" for c in range(classes)]
        listed = dataset_rows(rows, labels)
        write = time.perf_counter()
        store.add_dataset(DATASET, listed, names, source="synthetic")
        write = time.perf_counter() - write
    return time.perf_counter() - start, write


def dataset_rows(rows: int, labels: np.ndarray) -> list[Any]:
    from featcache.store import DatasetRow

    return [
        DatasetRow(
            key_of(i), f"/images/{i:07d}.jpg", int(labels[i]), "test" if i % 10 == 0 else "train"
        )
        for i in range(rows)
    ]


class FdWatch:
    """The most open file descriptors seen, sampled every 10 ms on a thread."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, len(os.listdir("/proc/self/fd")))
            time.sleep(0.01)

    def __enter__(self) -> FdWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, len(os.listdir("/proc/self/fd")))


def run_op(op: str, folder: Path, epochs: int) -> dict[str, Any]:
    """One operation in this process; return its measurements."""
    from featcache.store import FeatureStore

    extra: dict[str, Any] = {}
    with FdWatch() as fds:
        start = time.perf_counter()
        store = FeatureStore(folder)
        if op == "catalog_cached":
            keys = [r.key for r in store.dataset_rows(DATASET)]
            t = time.perf_counter()
            extra["found"] = len(store.has(keys, FINGERPRINT, "fc7"))
            start = t  # the check alone, as extract makes it
        elif op == "catalog_rows":
            extra["rows"] = len(store.lazy_vectors(DATASET))
        elif op == "catalog_write":
            rows = store.dataset_rows(DATASET)
            info = store.dataset(DATASET)
            t = time.perf_counter()
            extra["summary"] = store.add_dataset(
                DATASET, rows, info.class_names, source="synthetic"
            ).summary()
            start = t
        elif op == "lookup":
            keys = [r.key for r in store.dataset_rows(DATASET)]
            rng = np.random.default_rng(0)
            for i in rng.choice(len(keys), size=1000):
                store.get([keys[i]], FINGERPRINT)
                store.paths_of([keys[i]])
            start = time.perf_counter()
            times = []
            for i in rng.choice(len(keys), size=200):
                t = time.perf_counter()
                store.get([keys[i]], FINGERPRINT)
                store.paths_of([keys[i]])
                store.datasets_generation()
                times.append(time.perf_counter() - t)
            extra["p50_ms"] = round(1000 * statistics.median(times), 3)
        elif op == "stream":
            total = 0.0
            for batch in store.batches(DATASET):
                total += float(batch.X[:, 0].sum())
            extra["checksum"] = round(total, 1)
        elif op == "train":
            from featcache.classifier.train import train_head

            result = train_head(
                store,
                DATASET,
                head="softmax",
                name="bench",
                params={"epochs": epochs, "random_state": 0},
            )
            extra["val_accuracy"] = round(result.metrics.get("val_accuracy", float("nan")), 4)
        elif op == "evaluate":
            from featcache.classifier.evaluate import evaluate_head

            evaluation = evaluate_head(store, "bench", DATASET, split="test")
            extra["accuracy"] = round(float(evaluation.summary["accuracy"]), 4)
        elif op == "export":
            from featcache.store import export_vectors

            out = export_vectors(store, DATASET, folder / "export.parquet")
            extra["bytes"] = out.stat().st_size
            out.unlink()
        elif op == "doctor":
            from featcache.analysis.doctor import doctor

            report = doctor(store, DATASET)
            extra["label_issues"] = len(report.label_issues)
            extra["search_exact"] = report.search_exact
            extra["stages_s"] = {k: round(v, 1) for k, v in report.timings.items()}
        elif op == "advise":
            from featcache.analysis.advise import advise

            found = advise(store, DATASET, layers=["fc7"])
            extra["case"] = found.case
        elif op == "verify":
            verified = store.verify()
            extra["problems"] = len(verified.problems)
            extra["shards"] = verified.shards
            extra["vectors"] = verified.vectors
        else:
            raise SystemExit(f"unknown operation {op!r}; one of {', '.join(OPS)}")
        seconds = time.perf_counter() - start
        store.close()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "op": op,
        "seconds": round(seconds, 3),
        "peak_rss_mb": round(rss_mb),
        "open_files": fds.peak,
        **extra,
    }


def child(op: str, folder: Path, epochs: int, nofile: int) -> dict[str, Any]:
    """Run `op` in a fresh interpreter under ``RLIMIT_NOFILE = nofile``."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    done = subprocess.run(
        [sys.executable, __file__, "--child", op, "--folder", str(folder), "--epochs", str(epochs)],
        capture_output=True,
        text=True,
        preexec_fn=limit,
        check=False,
    )
    if done.returncode != 0:
        return {
            "op": op,
            "error": done.stderr.strip().splitlines()[-1:] or ["exit " + str(done.returncode)],
        }
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--shard-rows", type=int, default=4096)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--nofile", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ops", default=",".join(OPS))
    parser.add_argument("--folder", default="/tmp/featcache-scale")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--reuse", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_op(args.child, Path(args.folder), args.epochs)))
        return
    ops = [op for op in args.ops.split(",") if op]
    print(
        f"# synthetic fc7-like vectors (random, not image features); dim {args.dim}, "
        f"{args.classes} classes, shards of {args.shard_rows} rows, RLIMIT_NOFILE {args.nofile}"
    )
    for rows in [int(s) for s in args.sizes.split(",")]:
        folder = Path(args.folder) / f"rows{rows}"
        gb = rows * args.dim * 4 / 1e9
        if args.reuse and (folder / "catalog.sqlite").exists():
            print(f"\n## {rows:,} rows ({gb:.2f} GB of vectors): the store kept in {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
            seconds, write = build(folder, rows, args.dim, args.classes, args.shard_rows, args.seed)
            print(
                f"\n## {rows:,} rows ({gb:.2f} GB of vectors): built in {seconds:.1f} s "
                f"(the dataset write, every row new: {write:.1f} s)",
                flush=True,
            )
        print(f"{'operation':<16}{'seconds':>10}{'peak RSS MB':>13}{'open files':>12}  notes")
        try:
            for op in ops:
                found = child(op, folder, args.epochs, args.nofile)
                if "error" in found:
                    print(f"{op:<16}{'FAILED':>10}  {found['error']}")
                    continue
                notes = {
                    k: v
                    for k, v in found.items()
                    if k not in ("op", "seconds", "peak_rss_mb", "open_files")
                }
                print(
                    f"{op:<16}{found['seconds']:>10.2f}{found['peak_rss_mb']:>13}"
                    f"{found['open_files']:>12}  {json.dumps(notes)}",
                    flush=True,
                )
        finally:
            if not args.keep:
                shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
