"""`featcache export-model` figures: export time and model size per format, and the exported
model's images/s beside `featcache predict` on images the store has not seen, in one run.

    python benchmarks/export.py [--images 128] [--size 32] [--formats onnx,savedmodel,openvino]
                                [--backbone alexnet|vgg16|resnet50]

Seeded random weights at full size (AlexNet 244 MB, VGG16 528 MB, ResNet50 98 MB, written
here), `caffe` profile, a softmax head on the backbone's default layer (fc7, fc2, avg_pool)
trained on 64 generated PNGs. Each format is exported and verified (16 images). Then the
same unseen PNGs (decoded, resized, run, answered) go through `Predictor.predict` (what
`featcache predict` runs: hash, decode, the TensorFlow network, store, head) and through each
exported model loaded by its own runtime (decode with Pillow, then one batch of 32 at a
time). Prints seconds, MB and images/s, and the ratio to predict, then the peak RSS of this
process (the largest of predict's and every format's export: run one format per process to
read one format's figure).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from featcache.classifier.train import train_head
from featcache.export import ExportConfig, export_model, load_model
from featcache.extractor.pipeline import ExtractConfig, extract
from featcache.extractor.registry import backbone_named
from featcache.predictor import Predictor
from featcache.store import FeatureStore


def write_pngs(folder: Path, count: int, size: int, seed: int) -> list[Path]:
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        label = folder / f"c{i % 4}"
        label.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
        picture = Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC)
        paths.append(label / f"{seed}-{i}.png")
        picture.save(paths[-1])
    return paths


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--formats", default="onnx,savedmodel,openvino")
    parser.add_argument("--backbone", default="alexnet")
    args = parser.parse_args()
    backbone = backbone_named(args.backbone)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        weights = backbone.write_demo_weights(work / backbone.weights_file, 0)
        write_pngs(work / "train", 64, args.size, seed=0)
        store = FeatureStore(work / "store")
        config = ExtractConfig(backbone=backbone.name, layers=(backbone.default_layer,))
        extract(work / "train", weights, store, dataset="d", config=config)
        train_head(store, "d", name="h", layer=backbone.default_layer, params={"random_state": 0})
        unseen = write_pngs(work / "unseen", args.images, args.size, seed=1)

        started = time.perf_counter()
        Predictor(store, "h", weights=weights).predict(unseen)
        base = args.images / (time.perf_counter() - started)
        print(f"{backbone.name}, head on {backbone.default_layer}")
        print(f"predict (unseen: extract + store + head): {base:.1f} img/s")
        print("format      export s  verify s  MB      img/s   vs predict  max|diff|")
        for fmt in args.formats.split(","):
            result = export_model(
                store, "h", weights, work / f"out-{fmt}", ExportConfig(format=fmt, sample=16)
            )
            model = load_model(fmt, result.path)
            model.run(np.zeros((1, args.size, args.size, 3), np.uint8))  # warm-up
            started = time.perf_counter()
            for i in range(0, len(unseen), 32):
                files = unseen[i : i + 32]
                model.run(np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files]))
            rate = args.images / (time.perf_counter() - started)
            v = result.verification or {}
            print(
                f"{fmt:<11} {result.seconds['export']:8.1f}  {result.seconds['verify']:8.1f}  "
                f"{result.bytes / 1e6:6.1f}  {rate:6.1f}  {rate / base:9.2f}x  "
                f"{v.get('max_abs_diff', float('nan')):.2g}"
            )
        print("note: seeded random weights, NOT ImageNet-trained")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    kib = peak // 1024 if sys.platform == "darwin" else peak
    # The README's figures: /usr/bin/time -v's "kbytes" / 10^6.
    print(f"peak RSS (this process): {kib / 1e6:.2f} GB")


if __name__ == "__main__":
    main()
