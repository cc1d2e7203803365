"""Independent NumPy references for keras.applications' VGG16 and ResNet50 (float64).

They share no code with featcache: the weights are read from the ``.h5`` file here with
h5py (by each group's ``weight_names``, as Keras's loader does), BatchNormalization is
applied from its four raw arrays, and convolutions are written as im2col matrix products.

Keras semantics written out:
conv 'same' (3x3, stride 1): pad 1 on every side; 'valid': none. MaxPooling2D(2) / (3, 2):
'valid'. ResNet50 (keras.applications.resnet, v1): ZeroPadding2D(3) → conv1 7x7/2 (bias) →
BN(eps=1.001e-5) → ReLU → ZeroPadding2D(1) → MaxPool 3/2 → stacks [64x3 (stride 1), 128x4,
256x6, 512x3], each block 1x1 (stride s) → 3x3 same → 1x1, every conv with bias and BN;
the first block's shortcut is a 1x1 conv (stride s) + BN; ReLU after the sum. avg_pool is
the spatial mean.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

EPS = 1.001e-5


def read_h5(path: Path, dtype: type = np.float64) -> dict[str, list[np.ndarray]]:
    """{layer: [arrays in weight_names order]} as `dtype` (float32 for the full networks)."""
    out: dict[str, list[np.ndarray]] = {}
    with h5py.File(path, "r") as f:
        for layer in f:
            names = [
                n.decode() if isinstance(n, bytes) else n for n in f[layer].attrs["weight_names"]
            ]
            out[layer] = [np.asarray(f[layer][n], dtype=dtype) for n in names]
    return out


def conv(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """(H, W, C) x (k, k, C, O) → (H', W', O), im2col."""
    k = kernel.shape[0]
    if pad:
        x = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
    h = (x.shape[0] - k) // stride + 1
    w = (x.shape[1] - k) // stride + 1
    cols = np.empty((h, w, k, k, x.shape[2]), x.dtype)
    for dy in range(k):
        for dx in range(k):
            cols[:, :, dy, dx, :] = x[dy : dy + stride * h : stride, dx : dx + stride * w : stride]
    return cols.reshape(h * w, -1) @ kernel.reshape(-1, kernel.shape[3]) + bias


def max_pool(x: np.ndarray, k: int, s: int) -> np.ndarray:
    h = (x.shape[0] - k) // s + 1
    w = (x.shape[1] - k) // s + 1
    out = np.full((h, w, x.shape[2]), -np.inf, x.dtype)
    for dy in range(k):
        for dx in range(k):
            out = np.maximum(out, x[dy : dy + s * h : s, dx : dx + s * w : s])
    return out


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def vgg16(path: Path, image: np.ndarray, dtype: type = np.float64) -> dict[str, np.ndarray]:
    """block5_pool, fc1, fc2 of one preprocessed (224, 224, 3) image."""
    p = read_h5(path, dtype)
    h = image.astype(dtype)
    for block, convs in enumerate((2, 2, 3, 3, 3), start=1):
        for i in range(1, convs + 1):
            out = conv(h, *p[f"block{block}_conv{i}"], stride=1, pad=1)
            h = relu(out.reshape(h.shape[0], h.shape[1], -1))
        h = max_pool(h, 2, 2)
    pool = h.reshape(-1)
    fc1 = relu(pool @ p["fc1"][0] + p["fc1"][1])
    fc2 = relu(fc1 @ p["fc2"][0] + p["fc2"][1])
    return {"block5_pool": pool, "fc1": fc1, "fc2": fc2}


def _conv_bn(
    p: dict[str, list[np.ndarray]], x: np.ndarray, name: str, stride: int = 1, pad: int = 0
) -> np.ndarray:
    kernel, bias = p[f"{name}_conv"]
    k = kernel.shape[0]
    h = (x.shape[0] + 2 * pad - k) // stride + 1
    w = (x.shape[1] + 2 * pad - k) // stride + 1
    y = conv(x, kernel, bias, stride, pad).reshape(h, w, -1)
    gamma, beta, mean, variance = p[f"{name}_bn"]
    return (y - mean) / np.sqrt(variance + EPS) * gamma + beta


def resnet50(path: Path, image: np.ndarray, dtype: type = np.float64) -> dict[str, np.ndarray]:
    """conv4_block6_out, conv5_block3_out (flattened) and avg_pool of one (S, S, 3) image."""
    p = read_h5(path, dtype)
    x = np.pad(image.astype(dtype), ((3, 3), (3, 3), (0, 0)))
    x = relu(_conv_bn(p, x, "conv1", stride=2))
    x = max_pool(np.pad(x, ((1, 1), (1, 1), (0, 0))), 3, 2)
    out = {}
    for stage, blocks, stride1 in (
        ("conv2", 3, 1),
        ("conv3", 4, 2),
        ("conv4", 6, 2),
        ("conv5", 3, 2),
    ):
        for block in range(1, blocks + 1):
            name = f"{stage}_block{block}"
            s = stride1 if block == 1 else 1
            shortcut = _conv_bn(p, x, f"{name}_0", stride=s) if block == 1 else x
            y = relu(_conv_bn(p, x, f"{name}_1", stride=s))
            y = relu(_conv_bn(p, y, f"{name}_2", pad=1))
            x = relu(shortcut + _conv_bn(p, y, f"{name}_3"))
        out[f"{stage}_block{blocks}_out"] = x.reshape(-1)
    out["avg_pool"] = x.mean(axis=(0, 1))
    return {
        k: v for k, v in out.items() if k in ("conv4_block6_out", "conv5_block3_out", "avg_pool")
    }
