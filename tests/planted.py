"""A generated image dataset with planted problems, for the doctor's tests and benchmark.

Digits (sklearn's real 8x8 scans, upscaled to 32x32: small, self-similar pictures) in an image
folder with ``train/`` and ``test/``; planted: copies of train pictures in test (resized,
re-encoded as JPEG, shifted by one pixel), flipped labels, pure-noise and foreign-domain
pictures (coloured shapes).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


@dataclass
class Planted:
    root: Path
    pairs: list[tuple[str, str]] = field(default_factory=list)  # (train path, test path)
    flipped: list[str] = field(default_factory=list)
    outliers: list[str] = field(default_factory=list)


def _digit(image: np.ndarray) -> np.ndarray:
    pixels = (image * (255.0 / 16.0)).astype(np.uint8)
    return np.asarray(Image.fromarray(pixels).resize((32, 32), Image.Resampling.BILINEAR))


def _foreign(rng: np.random.Generator) -> np.ndarray:
    img = Image.new("RGB", (32, 32), tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(4):
        x0, y0 = rng.integers(0, 24, 2)
        x1, y1 = x0 + rng.integers(4, 16), y0 + rng.integers(4, 16)
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse((int(x0), int(y0), int(x1), int(y1)), fill=colour)
        else:
            draw.rectangle((int(x0), int(y0), int(x1), int(y1)), fill=colour)
    return np.asarray(img)


def write_planted(
    root: Path,
    *,
    count: int = 300,
    copies: int = 15,
    flips: int = 15,
    noise: int = 3,
    foreign: int = 3,
    seed: int = 0,
) -> Planted:
    """Write the dataset under `root`; return where each planted problem is."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(digits.images))[:count]
    planted = Planted(root)
    n_test = count // 5
    kinds = ("resize", "jpeg", "shift")
    flip_rows = set(order[n_test : n_test + flips].tolist())
    copy_rows = order[n_test + flips : n_test + flips + copies].tolist()

    def save(split: str, label: int, name: str, pixels: np.ndarray, fmt: str = "png") -> str:
        folder = root / split / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.{fmt}"
        Image.fromarray(pixels).save(path, quality=75) if fmt == "jpg" else Image.fromarray(
            pixels
        ).save(path)
        return str(path)

    for rank, index in enumerate(order.tolist()):
        label = int(digits.target[index])
        pixels = _digit(digits.images[index])
        split = "test" if rank < n_test else "train"
        if index in flip_rows:
            wrong = int((label + rng.integers(1, 10)) % 10)
            planted.flipped.append(save(split, wrong, f"{index:04d}", pixels))
            continue
        path = save(split, label, f"{index:04d}", pixels)
        if index in copy_rows:
            kind = kinds[copy_rows.index(index) % 3]
            if kind == "resize":
                copy = np.asarray(
                    Image.fromarray(pixels).resize((45, 45), Image.Resampling.BICUBIC)
                )
                other = save("test", label, f"{index:04d}-resized", copy)
            elif kind == "jpeg":
                buffer = io.BytesIO()
                Image.fromarray(pixels).convert("RGB").save(buffer, format="JPEG", quality=70)
                copy = np.asarray(Image.open(buffer))
                other = save("test", label, f"{index:04d}-reencoded", copy, "jpg")
            else:
                copy = np.zeros_like(pixels)
                copy[:, 1:] = pixels[:, :-1]
                copy[:, 0] = pixels[:, 0]
                other = save("test", label, f"{index:04d}-shifted", copy)
            planted.pairs.append((path, other))
    for i in range(noise):
        pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        planted.outliers.append(save("train", int(rng.integers(10)), f"noise{i}", pixels))
    for i in range(foreign):
        planted.outliers.append(save("train", int(rng.integers(10)), f"foreign{i}", _foreign(rng)))
    return planted


def recall_at(found: list[str], wanted: list[str], top: int) -> float:
    """Share of `wanted` among the first `top` of `found`."""
    head = set(found[:top])
    return sum(w in head for w in wanted) / len(wanted)
