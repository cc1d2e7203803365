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


# -- plain data: no copies at all (what a false alarm is measured on) ----------------------


def _split_of(index: int, test_share: float = 0.2) -> str:
    """A fixed, order-free split: every fifth picture (by a multiplicative hash) to test."""
    return "test" if (index * 2654435761 % 2**32) / 2**32 < test_share else "train"


def _save_plain(root: Path, entries: list[tuple[str, np.ndarray]]) -> list[str]:
    paths = []
    for i, (label, pixels) in enumerate(entries):
        folder = root / _split_of(i) / label
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{i:05d}.png"
        Image.fromarray(pixels).save(path)
        paths.append(str(path))
    return paths


def write_plain_digits(root: Path, count: int | None = None) -> list[str]:
    """sklearn's 1,797 digit scans (or the first `count`), upscaled, split train/test."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    n = len(digits.images) if count is None else count
    return _save_plain(
        root, [(str(int(digits.target[i])), _digit(digits.images[i])) for i in range(n)]
    )


def _tiles(image: np.ndarray, side: int) -> list[np.ndarray]:
    """Non-overlapping `side` x `side` tiles of an RGB or grayscale picture, as RGB uint8."""
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    image = np.ascontiguousarray(image[:, :, :3]).astype(image.dtype, copy=False)
    if image.dtype != np.uint8:
        image = (255 * (image - image.min()) / max(1e-12, float(np.ptp(image)))).astype(np.uint8)
    return [
        image[y : y + side, x : x + side]
        for y in range(0, image.shape[0] - side + 1, side)
        for x in range(0, image.shape[1] - side + 1, side)
    ]


def write_plain_photos(root: Path, side: int = 96) -> list[str]:
    """Distinct pictures cut from the photos that ship with scikit-learn (2 photos) and
    scikit-image (its bundled photos and textures, and its 200 LFW faces and non-faces,
    blank patches among them): non-overlapping tiles, each labelled by its photo."""
    import skimage.data as sk
    from sklearn.datasets import load_sample_images

    entries: list[tuple[str, np.ndarray]] = []
    for name, image in zip(("china", "flower"), load_sample_images().images, strict=True):
        entries += [(name, t) for t in _tiles(np.asarray(image), side)]
    for name in ("astronaut", "camera", "cat", "coffee", "coins", "rocket", "brick", "grass",
                 "gravel", "moon", "immunohistochemistry", "hubble_deep_field"):  # fmt: skip
        entries += [(name, t) for t in _tiles(np.asarray(getattr(sk, name)()), side)]
    faces = sk.lfw_subset()
    entries += [("face" if i < 100 else "non-face", _tiles(f, f.shape[0])[0])
                for i, f in enumerate(faces)]  # fmt: skip
    return _save_plain(root, entries)


def generated_photo(rng: np.random.Generator, side: int = 64) -> np.ndarray:
    """A made-up photo: a sky-to-ground gradient, a horizon, shapes with soft edges and sensor
    noise; no two alike, some nearly flat (as blank patches in real photo sets are)."""
    top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0.0, 1.0, side)[:, None, None]
    img = Image.fromarray(((1 - t) * top + t * bottom).repeat(side, axis=1).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    horizon = int(rng.integers(side // 4, 3 * side // 4))
    draw.rectangle((0, horizon, side, side), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    for _ in range(int(rng.integers(0, 6))):
        x0, y0 = (int(v) for v in rng.integers(0, side - 8, 2))
        w, h = (int(v) for v in rng.integers(4, side // 2, 2))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x0, y0, x0 + w, y0 + h), fill=colour)
    pixels = np.asarray(img, dtype=np.float64) + rng.normal(0, rng.uniform(1, 12), (side, side, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def write_generated_photos(root: Path, count: int = 300, seed: int = 0) -> list[str]:
    """`count` made-up photos (`generated_photo`), in 5 arbitrary classes."""
    rng = np.random.default_rng(seed)
    return _save_plain(root, [(f"c{i % 5}", generated_photo(rng)) for i in range(count)])
