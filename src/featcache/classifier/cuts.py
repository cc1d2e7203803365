"""Where a fine-tune can start: the network above each cut, and its NumPy forward pass.

A *cut* is a layer whose output is cached; fine-tuning trains every layer above it. For
AlexNet (both profiles wire the layers above pool2 alike: 3x3 convolutions padded by 1,
a 3x3 stride-2 max pool)::

    pool2 (13x13x256) → conv3 → conv4 (group 2) → conv5 (group 2) → pool5 → fc6 → fc7 → fc8
    cut:  pool2 trains conv3-fc8, conv3 trains conv4-fc8, conv4 conv5-fc8, conv5 fc6-fc8
          (pool5 has no weights), pool5 fc6-fc8, fc6 fc7-fc8

Spatial vectors are stored flattened in H, W, C order, as pool5 is. This module is plain
data and NumPy (prediction never imports TensorFlow); `featcache.classifier._finetune_tf`
runs the same stages in TensorFlow for training. The test suite checks both against the
extractor's own outputs at every layer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["CUTS", "Stage", "conv2d", "max_pool", "run_stages", "stages_above"]


@dataclass(frozen=True)
class Stage:
    """One layer above a cut: a convolution (3x3 kernels from the weights, `padding`,
    `groups`), the 3x3 stride-2 max pool, or a dense product; ReLU after if `relu`."""

    name: str
    kind: str  # "conv" | "pool" | "dense"
    relu: bool
    padding: int = 0
    groups: int = 1
    width: int = 0  # channels out (conv) or units out (dense) of AlexNet's own layer

    @property
    def has_weights(self) -> bool:
        return self.kind != "pool"


#: AlexNet above pool2, in order (fc8 is the new last layer; its width is the classes').
ALEXNET: Final = (
    Stage("conv3", "conv", True, padding=1, groups=1, width=384),
    Stage("conv4", "conv", True, padding=1, groups=2, width=384),
    Stage("conv5", "conv", True, padding=1, groups=2, width=256),
    Stage("pool5", "pool", False),
    Stage("fc6", "dense", True, width=4096),
    Stage("fc7", "dense", True, width=4096),
    Stage("fc8", "dense", False),
)

#: cut → (index in `ALEXNET` of the first stage above it, channels of a spatial cut or 0).
CUTS: Final = {
    "pool2": (0, 256),
    "conv3": (1, 384),
    "conv4": (2, 384),
    "conv5": (3, 256),
    "pool5": (4, 0),
    "fc6": (5, 0),
}
#: The layer whose kernels give a spatial cut's channels (their last dimension).
_CUT_SOURCE: Final = {"pool2": "conv2", "conv3": "conv3", "conv4": "conv4", "conv5": "conv5"}


def stages_above(cut: str) -> tuple[Stage, ...]:
    """The stages a fine-tune from `cut` trains or runs, fc8 last; `ValueError` if unknown."""
    if cut not in CUTS:
        raise ValueError(f"The 'cut' must be one of {list(CUTS)}. Got {cut!r}.")
    return ALEXNET[CUTS[cut][0] :]


def spatial_shape(cut: str, n_features: int, channels: int | None = None) -> tuple[int, int, int]:
    """(H, W, C) of a spatial cut's flattened vectors of `n_features` values (square maps);
    `channels` defaults to AlexNet's. `ValueError` when the width does not fit."""
    c = CUTS[cut][1] if channels is None else channels
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
    if cut in _CUT_SOURCE:
        source = _CUT_SOURCE[cut]
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
