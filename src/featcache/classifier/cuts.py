"""The network above each cut, run in NumPy: a fine-tuned head's prediction pass.

The stages themselves (which layers lie above a cut, their padding, groups and ReLUs) are
described once, in `featcache.architecture`, which the extractor's TensorFlow graph also
runs; this module runs them in plain NumPy float32 (prediction never imports TensorFlow),
and checks a weights file's layers against them. The test suite checks this pass against
the extractor's own outputs at every layer above every cut.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from featcache.architecture import CUTS, Stage, stages_above

__all__ = ["CUTS", "Stage", "conv2d", "max_pool", "run_stages", "stages_above"]


def spatial_shape(cut: str, n_features: int, channels: int | None = None) -> tuple[int, int, int]:
    """(H, W, C) of a spatial cut's flattened vectors of `n_features` values (square maps);
    `channels` defaults to AlexNet's. `ValueError` when the width does not fit."""
    c = CUTS[cut].channels if channels is None else channels
    side = round(float(np.sqrt(n_features / c))) if c else 0
    if not c or side * side * c != n_features:
        raise ValueError(
            f"'{cut}' vectors are square maps of {c} channels flattened in H, W, C order; "
            f"X has {n_features} features, which is not side*side*{c}."
        )
    return side, side, c


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray, padding: int, groups: int) -> np.ndarray:
    """Stride-1 convolution of NHWC `x` by HWIO `w` (input depth per group), plus `b`."""
    if padding:
        x = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    kh, kw, cin, cout = w.shape
    per_group = cout // groups
    windows = sliding_window_view(x, (kh, kw), axis=(1, 2))  # (N, H', W', C, kh, kw)
    n, h, wd = windows.shape[:3]
    out = np.empty((n, h, wd, cout), np.float32)
    for g in range(groups):
        patches = windows[:, :, :, g * cin : (g + 1) * cin]
        cols = patches.transpose(0, 1, 2, 4, 5, 3).reshape(n * h * wd, kh * kw * cin)
        kernel = w[..., g * per_group : (g + 1) * per_group].reshape(kh * kw * cin, per_group)
        out[..., g * per_group : (g + 1) * per_group] = (cols @ kernel).reshape(n, h, wd, -1)
    out += b
    return out


def max_pool(x: np.ndarray) -> np.ndarray:
    """3x3 stride-2 max pool without padding (AlexNet's), NHWC."""
    windows = sliding_window_view(x, (3, 3), axis=(1, 2))[:, ::2, ::2]
    out: np.ndarray = windows.max(axis=(4, 5))
    return out


def run_stages(
    x: np.ndarray,
    stages: Sequence[Stage],
    params: Sequence[tuple[np.ndarray, np.ndarray]],
    input_shape: tuple[int, int, int] | None,
) -> np.ndarray:
    """Run (N, features) float32 `x` through `stages` in inference mode; `params` holds the
    (W, b) of each stage with weights, in order; spatial outputs come out flattened."""
    h = x if input_shape is None else x.reshape(len(x), *input_shape)
    weights = iter(params)
    for stage in stages:
        if stage.kind == "pool":
            h = max_pool(h)
            continue
        w, b = next(weights)
        if stage.kind == "conv":
            groups = h.shape[-1] // w.shape[2]
            h = conv2d(h, w, b, stage.padding, groups)
        else:
            h = h.reshape(len(h), -1) @ w
            h += b
        if stage.relu:
            np.maximum(h, 0, out=h)
    return h.reshape(len(h), -1)


def pretrained_params(
    stages: Sequence[Stage],
    layers: Mapping[str, tuple[np.ndarray, np.ndarray]],
    cut: str,
    n_features: int,
) -> tuple[list[tuple[np.ndarray, np.ndarray]], tuple[int, int, int] | None]:
    """The weights file's (W, b) for each hidden stage with weights, checked against the
    input they get, and the cut's (H, W, C) (None for a flat cut). `ValueError` names the
    layer and the mismatch."""
    input_shape: tuple[int, int, int] | None = None
    if CUTS[cut].spatial:
        source = CUTS[cut].source
        if source not in layers:
            raise ValueError(f"The pretrained weights have no layer '{source}'.")
        input_shape = spatial_shape(cut, n_features, int(layers[source][0].shape[-1]))
    out: list[tuple[np.ndarray, np.ndarray]] = []
    shape: tuple[int, ...] = input_shape or (n_features,)
    for first, stage in zip([True] + [False] * len(stages), stages[:-1], strict=False):
        if stage.kind == "pool":
            shape = ((shape[0] - 3) // 2 + 1, (shape[1] - 3) // 2 + 1, shape[2])
            continue
        if stage.name not in layers:
            raise ValueError(f"The pretrained weights have no layer '{stage.name}'.")
        w, b = (np.asarray(a, np.float32) for a in layers[stage.name])
        if stage.kind == "conv":
            if w.ndim != 4 or w.shape[2] * stage.groups != shape[-1]:
                raise ValueError(
                    f"Layer '{stage.name}' takes {shape[-1]} channels in {stage.groups} "
                    f"group(s), but its kernel has shape {w.shape}."
                )
            shape = (shape[0], shape[1], int(w.shape[3]))
        else:
            width = int(np.prod(shape))
            if w.ndim != 2 or w.shape[0] != width:
                given = f"X has {width} features" if first else f"the layer below gives {width}"
                raise ValueError(
                    f"Layer '{stage.name}' takes {w.shape[0]} inputs but {given}; a fine-tune "
                    f"from '{cut}' trains on '{cut}' vectors."
                )
            shape = (int(w.shape[1]),)
        out.append((w, b))
    return out, input_shape
