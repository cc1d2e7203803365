"""An independent NumPy AlexNet written from Caffe's layer definitions (deploy.prototxt), in
float64, to check the `caffe` profile. It shares no code with featcache.

conv:  out[y, x, o] = b[o] + sum over ky, kx, c of in_pad[y*s + ky, x*s + kx, c] * W[ky, kx, c, o],
       with `group` independent slices of input and output channels.
relu:  max(x, 0)
LRN (ACROSS_CHANNELS, local_size n=5, alpha=1e-4, beta=0.75, k=1):
       out_i = x_i / (k + alpha/n * sum_{j=i-2..i+2} x_j^2) ** beta
pool:  MAX, kernel 3, stride 2, output size ceil((H - 3) / 2) + 1, windows clipped at the edge.
"""

from __future__ import annotations

import math

import numpy as np

MEAN_BGR = np.array([104.00698793, 116.66876762, 122.67891434])


def caffe_input(rgb_227: np.ndarray) -> np.ndarray:
    """Caffe's transform of a 227x227 RGB uint8 image: BGR, minus the ImageNet mean."""
    return rgb_227.astype(np.float64)[:, :, ::-1] - MEAN_BGR


def conv(
    x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, pad: int, group: int
) -> np.ndarray:
    x = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
    kh, kw, cin, cout = w.shape
    h_out = (x.shape[0] - kh) // stride + 1
    w_out = (x.shape[1] - kw) // stride + 1
    out = np.empty((h_out, w_out, cout))
    per_out = cout // group
    for g in range(group):
        xs = x[:, :, g * cin : (g + 1) * cin]
        ws = w[:, :, :, g * per_out : (g + 1) * per_out]
        for y in range(h_out):
            rows = xs[y * stride : y * stride + kh]  # (kh, W, cin)
            patches = np.stack(
                [rows[:, xx * stride : xx * stride + kw] for xx in range(w_out)]
            )  # (w_out, kh, kw, cin)
            out[y, :, g * per_out : (g + 1) * per_out] = np.tensordot(patches, ws, axes=3)
    return out + b


def lrn(
    x: np.ndarray, n: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0
) -> np.ndarray:
    sq = np.pad(x**2, ((0, 0), (0, 0), (n // 2, n // 2)))
    window = sum(sq[:, :, i : i + x.shape[2]] for i in range(n))
    return x / (k + alpha / n * window) ** beta


def max_pool(x: np.ndarray, k: int = 3, s: int = 2) -> np.ndarray:
    h_out = math.ceil((x.shape[0] - k) / s) + 1
    w_out = math.ceil((x.shape[1] - k) / s) + 1
    out = np.empty((h_out, w_out, x.shape[2]))
    for y in range(h_out):
        for xx in range(w_out):
            out[y, xx] = x[
                y * s : min(y * s + k, x.shape[0]), xx * s : min(xx * s + k, x.shape[1])
            ].max(axis=(0, 1))
    return out


def alexnet(
    image: np.ndarray, layers: dict[str, tuple[np.ndarray, np.ndarray]]
) -> dict[str, np.ndarray]:
    """One preprocessed (227, 227, 3) image → pool5, fc6, fc7, fc8, prob (float64)."""
    p = {name: (w.astype(np.float64), b.astype(np.float64)) for name, (w, b) in layers.items()}
    relu = lambda v: np.maximum(v, 0.0)  # noqa: E731
    h = max_pool(lrn(relu(conv(image, *p["conv1"], stride=4, pad=0, group=1))))
    h = max_pool(lrn(relu(conv(h, *p["conv2"], stride=1, pad=2, group=2))))
    h = relu(conv(h, *p["conv3"], stride=1, pad=1, group=1))
    h = relu(conv(h, *p["conv4"], stride=1, pad=1, group=2))
    h = max_pool(relu(conv(h, *p["conv5"], stride=1, pad=1, group=2)))
    assert h.shape == (6, 6, 256)
    pool5 = h.reshape(-1)  # H, W, C order
    fc6 = relu(pool5 @ p["fc6"][0] + p["fc6"][1])
    fc7 = relu(fc6 @ p["fc7"][0] + p["fc7"][1])
    fc8 = fc7 @ p["fc8"][0] + p["fc8"][1]
    e = np.exp(fc8 - fc8.max())
    return {"pool5": pool5, "fc6": fc6, "fc7": fc7, "fc8": fc8, "prob": e / e.sum()}
