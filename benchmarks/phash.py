"""`image_hash` (the perceptual hash recorded for every extracted image) against its first
implementation, side by side in one run, on the same seeded images.

    python benchmarks/phash.py [--images 256] [--repeats 5]

For each size (32×32, 64×64, 227×227, 500×375 RGB; a 32×32 and a 500×375 grayscale (H, W)
array; 1×500 and 500×1) it makes `images` pictures from upscaled random 4×4 colour blobs,
checks that both implementations return the same bytes for every one, and prints the
microseconds per image of each (best of `repeats` passes) and their ratio. The first
implementation is the oracle kept verbatim in tests/test_phash.py.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from featcache.data.phash import image_hash

ORACLE = Path(__file__).resolve().parents[1] / "tests" / "test_phash.py"


def oracle() -> Callable[[np.ndarray], bytes]:
    spec = importlib.util.spec_from_file_location("phash_oracle", ORACLE)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load the oracle from {ORACLE}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    function: Callable[[np.ndarray], bytes] = module.oracle_image_hash
    return function


def blobs(rng: np.random.Generator, height: int, width: int, gray: bool) -> np.ndarray:
    small = rng.integers(0, 256, (4, 4) if gray else (4, 4, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC))


def per_image_us(
    function: Callable[[np.ndarray], bytes], images: list[np.ndarray], repeats: int
) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for image in images:
            function(image)
        best = min(best, time.perf_counter() - start)
    return best / len(images) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    before = oracle()
    rng = np.random.default_rng(0)
    cases = [
        ("32x32 RGB", 32, 32, False),
        ("64x64 RGB", 64, 64, False),
        ("227x227 RGB", 227, 227, False),
        ("500x375 RGB", 375, 500, False),
        ("32x32 gray (H, W)", 32, 32, True),
        ("500x375 gray (H, W)", 375, 500, True),
        ("1x500 RGB", 1, 500, False),
        ("500x1 RGB", 500, 1, False),
    ]
    print(
        f"{'image':<22}{'before µs':>11}{'after µs':>11}{'ratio':>8}   (best of "
        f"{args.repeats}, {args.images} images each)"
    )
    for name, height, width, gray in cases:
        count = args.images if height * width <= 227 * 227 else max(1, args.images // 4)
        images = [blobs(rng, height, width, gray) for _ in range(count)]
        if any(image_hash(i) != before(i) for i in images):
            raise SystemExit(f"{name}: the hashes differ from the first implementation")
        old = per_image_us(before, images, args.repeats)
        new = per_image_us(image_hash, images, args.repeats)
        print(f"{name:<22}{old:>11.1f}{new:>11.1f}{old / new:>7.2f}x")


if __name__ == "__main__":
    main()
