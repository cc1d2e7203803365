"""Fine-tuning from the cache: a cached epoch against the pool5 extraction, and accuracy.

    python benchmarks/finetune.py [--images 512] [--epochs 10] [--skip-accuracy] [--out DIR]

Uses SEEDED RANDOM weights in the bvlc_alexnet.npy layout (real ImageNet weights cannot be
tested here), on the same images and weights, in one run:

1. speed: `featcache extract --layers pool5` over N generated 32x32 PNGs (a whole process:
   the conv1-conv5 pass an uncached fine-tune pays in every epoch), then one fine-tune
   epoch of fc6, fc7 and fc8 on the cached (float16) pool5 vectors, in float32 and in bf16.
   Each step runs in its own process, so its peak RSS is its own.
2. accuracy: `SoftmaxHead` on fc7 against `FineTuneHead` on pool5, test split, on the
   bundled digits and on a harder generated set (shapes in random colours, sizes and
   places on cluttered backgrounds).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "cross", "ring", "bar")


def write_random_pngs(folder: Path, count: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for i in range(count):
        cls = folder / f"c{i % 4}"
        cls.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(cls / f"{i}.png")


def write_shapes(folder: Path, count: int, seed: int = 0, test_fraction: float = 0.2) -> None:
    """Six shape classes; colour, size, place, background and clutter are random."""
    rng = np.random.default_rng(seed)
    n_test = round(count * test_fraction)
    for i in range(count):
        label = SHAPES[i % len(SHAPES)]
        background = rng.integers(0, 256, 3)
        noise = rng.normal(0, 40, (32, 32, 3))
        pixels = np.clip(background + noise, 0, 255).astype(np.uint8)
        image = Image.fromarray(pixels)
        draw = ImageDraw.Draw(image)
        for _ in range(3):  # clutter: small random lines
            x0, y0, x1, y1 = (int(v) for v in rng.integers(0, 32, 4))
            draw.line((x0, y0, x1, y1), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        size = int(rng.integers(8, 15))
        cx, cy = (int(v) for v in rng.integers(size, 32 - size, 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        box = (cx - size, cy - size, cx + size, cy + size)
        if label == "circle":
            draw.ellipse(box, fill=colour)
        elif label == "square":
            draw.rectangle(box, fill=colour)
        elif label == "triangle":
            draw.polygon([(cx, cy - size), (cx - size, cy + size), (cx + size, cy + size)], colour)
        elif label == "cross":
            draw.rectangle((cx - size, cy - 2, cx + size, cy + 2), fill=colour)
            draw.rectangle((cx - 2, cy - size, cx + 2, cy + size), fill=colour)
        elif label == "ring":
            draw.ellipse(box, outline=colour, width=3)
        else:
            draw.rectangle((cx - size, cy - 3, cx + size, cy + 3), fill=colour)
        split = "test" if i < n_test else "train"
        target = folder / split / label
        target.mkdir(parents=True, exist_ok=True)
        image.save(target / f"{i:05d}.png")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def step_epoch(store: str, weights: str, precision: str) -> dict[str, float]:
    """One process: 2 epochs of FineTuneHead on the cached pool5; the second is steady."""
    from featcache.classifier.finetune import FineTuneHead
    from featcache.classifier.rows import lazy_vectors
    from featcache.extractor.weights import read_weights
    from featcache.store import FeatureStore

    fs = FeatureStore(store, create=False)
    data = lazy_vectors(fs, "speed", "pool5")
    pretrained = read_weights(weights)
    before = peak_rss_mb()
    head = FineTuneHead(epochs=2, early_stopping=False, precision=precision, random_state=0)
    head.fit(data.X, data.y, pretrained=pretrained)
    return {
        "first_epoch": head.epoch_seconds_[0],
        "epoch": head.epoch_seconds_[1],
        "rss_before_fit_mb": before,
        "peak_rss_mb": peak_rss_mb(),
    }


def step_accuracy(store: str, weights: str, dataset: str, epochs: int) -> dict[str, float]:
    """One process: SoftmaxHead on fc7 and FineTuneHead on pool5, scored on the test rows."""
    from featcache.classifier.finetune import FineTuneHead
    from featcache.classifier.heads import SoftmaxHead
    from featcache.classifier.rows import lazy_vectors
    from featcache.extractor.weights import read_weights
    from featcache.store import FeatureStore

    fs = FeatureStore(store, create=False)
    fc7 = fs.vectors(dataset, "fc7")
    pool5 = lazy_vectors(fs, dataset, "pool5")
    assert fc7.keys == pool5.keys
    train = np.array([s == "train" for s in fc7.splits])
    test = ~train
    t = time.perf_counter()
    softmax = SoftmaxHead(random_state=0).fit(fc7.X[train], fc7.y[train])
    softmax_seconds = time.perf_counter() - t
    t = time.perf_counter()
    finetune = FineTuneHead(epochs=epochs, random_state=0).fit(
        pool5.X[train], pool5.y[train], pretrained=read_weights(weights)
    )
    finetune_seconds = time.perf_counter() - t
    return {
        "n_train": int(train.sum()),
        "n_test": int(test.sum()),
        "softmax": float((softmax.predict(fc7.X[test]) == fc7.y[test]).mean()),
        "finetune": float((finetune.predict(pool5.X[test]) == pool5.y[test]).mean()),
        "softmax_seconds": softmax_seconds,
        "finetune_seconds": finetune_seconds,
        "finetune_epochs": finetune.n_iter_,
        "finetune_best_epoch": finetune.best_epoch_,
    }


def run_step(*args: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, __file__, "--step", *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def extract_cli(
    data: Path, store: Path, weights: Path, layers: str, dataset: str
) -> tuple[float, float]:
    """Seconds of the whole `featcache extract` process, and of its network stage."""
    t = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "featcache", "extract", str(data), "--store", str(store),
         "--weights", str(weights), "--layers", layers, "--dataset", dataset, "--profile-time"],
        check=True,
        capture_output=True,
        text=True,
        timeout=3600,
    )  # fmt: skip
    seconds = time.perf_counter() - t
    network = next(
        float(line.split()[1].rstrip("s"))
        for line in done.stdout.splitlines()
        if line.split()[:1] == ["network"]
    )
    return seconds, network


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--shapes", type=int, default=1200)
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--step", nargs="+", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        kind, *rest = args.step
        if kind == "epoch":
            print(json.dumps(step_epoch(*rest)))
        else:
            print(json.dumps(step_accuracy(rest[0], rest[1], rest[2], int(rest[3]))))
        return

    from featcache.data import write_digits_folder
    from featcache.extractor.weights import write_demo_weights

    root = args.out or Path(tempfile.mkdtemp(prefix="featcache-finetune-"))
    root.mkdir(parents=True, exist_ok=True)
    print("NOTE: SEEDED RANDOM weights (not ImageNet-trained); real weights not tested here.")
    print(f"work folder {root}; the machine may be shared: ratios are from this one run")
    weights = write_demo_weights(root / "demo_alexnet.npy", seed=0)

    write_random_pngs(root / "speed", args.images)
    store = root / "store"
    extract_s, network_s = extract_cli(root / "speed", store, weights, "pool5", "speed")
    print(
        f"extract --layers pool5, {args.images} PNGs, whole process: {extract_s:.1f} s "
        f"({args.images / extract_s:.1f} img/s); its network stage alone {network_s:.1f} s"
    )
    shards = sum(p.stat().st_size for p in store.rglob("shards/*/pool5/*.npy"))
    print(f"pool5 on disk: {shards / 1e6:.1f} MB ({shards / args.images / 1e3:.1f} KB an image)")
    for precision in ("float32", "bf16"):
        r = run_step("epoch", str(store), str(weights), precision)
        print(
            f"fine-tune epoch {precision:>7}: {r['epoch']:.1f} s steady "
            f"({r['first_epoch']:.1f} s first, tracing included) = "
            f"{r['epoch'] / extract_s:.2f} of the extraction ({r['epoch'] / network_s:.2f} of "
            f"its network stage); an uncached epoch (extraction + the same step) costs "
            f"{(extract_s + r['epoch']) / r['epoch']:.1f}x; peak RSS {r['peak_rss_mb']:.0f} MB "
            f"({r['rss_before_fit_mb']:.0f} MB before fit: Python, NumPy and the weights file)"
        )
    if args.skip_accuracy:
        return

    write_digits_folder(root / "digits")
    write_shapes(root / "shapes", args.shapes)
    for name in ("digits", "shapes"):
        extract_cli(root / name, store, weights, "pool5,fc7", name)  # pool5 float16
        r = run_step("accuracy", str(store), str(weights), name, str(args.epochs))
        print(
            f"{name}: {r['n_train']} train / {r['n_test']} test; test accuracy softmax(fc7) "
            f"{r['softmax']:.4f} ({r['softmax_seconds']:.1f} s), finetune(pool5) "
            f"{r['finetune']:.4f} ({r['finetune_seconds']:.0f} s, {r['finetune_epochs']} "
            f"epochs, best {r['finetune_best_epoch']}): "
            f"{100 * (r['finetune'] - r['softmax']):+.2f} points"
        )


if __name__ == "__main__":
    main()
