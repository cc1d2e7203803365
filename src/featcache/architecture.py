"""The layers above each cut of a network, as data: the one description that the
extractor's TensorFlow graph, the fine-tune's training pass and its NumPy prediction all run.

A *cut* is a layer whose output is cached; fine-tuning trains every layer above it. AlexNet
above pool2 (both profiles wire these layers alike: 3x3 convolutions padded by 1, conv4 and
conv5 in two groups, a 3x3 stride-2 max pool)::

    pool2 (13x13x256) → conv3 → conv4 → conv5 → pool5 → fc6 → fc7 → fc8
    cut:  pool2 trains conv3-fc8, conv3 trains conv4-fc8, conv4 conv5-fc8, conv5 fc6-fc8
          (pool5 has no weights), pool5 fc6-fc8, fc6 fc7-fc8

VGG16's cut is block5_pool (7x7x512, flattened): it trains fc1, fc2 and a new last layer
in place of predictions. Spatial vectors are stored flattened in H, W, C order.

This module is plain data (no NumPy work, no TensorFlow import): `featcache.extractor.alexnet`
builds its graph above pool2 from `ALEXNET_TOP` with `tf_stage`, `featcache.extractor.vgg16`
its dense top from `VGG16_TOP`, and `featcache.classifier` trains and predicts the same
stages. The last stage (fc8, predictions) is the one a fine-tune replaces by a new layer of
its classes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "ALEXNET_TOP",
    "CUTS",
    "VGG16_TOP",
    "Cut",
    "Stage",
    "cuts_of",
    "describe_cuts",
    "stages_above",
    "tf_stage",
]


@dataclass(frozen=True)
class Stage:
    """One layer above a cut: a convolution (3x3 kernels from the weights, stride 1,
    `padding` on each side, `groups`), the 3x3 stride-2 max pool, or a dense product;
    ReLU after if `relu`. `width`: channels out (conv) or units out (dense) of the
    network's own layer (0 for the pool)."""

    name: str
    kind: str  # "conv" | "pool" | "dense"
    relu: bool
    padding: int = 0
    groups: int = 1
    width: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ("conv", "pool", "dense"):
            raise ValueError(f"Stage {self.name!r}: kind must be conv, pool or dense")

    @property
    def has_weights(self) -> bool:
        return self.kind != "pool"


@dataclass(frozen=True)
class Cut:
    """Where a fine-tune of `network` (a backbone's registry name) can start:
    `stages[first:]` are the layers above it; a spatial cut has `side` x `side` maps of
    `channels` (the last dimension of layer `source`'s kernels in a weights file); a flat
    one has side 0."""

    name: str
    network: str
    stages: tuple[Stage, ...]
    first: int
    side: int = 0
    channels: int = 0
    source: str = ""

    @property
    def spatial(self) -> bool:
        return self.channels > 0

    @property
    def dim(self) -> int:
        """The length of the cut's vectors for the network's own input size (spatial cuts)."""
        return self.side * self.side * self.channels


#: AlexNet above pool2, in order (fc8 is the new last layer; its width is the classes').
ALEXNET_TOP: Final = (
    Stage("conv3", "conv", True, padding=1, groups=1, width=384),
    Stage("conv4", "conv", True, padding=1, groups=2, width=384),
    Stage("conv5", "conv", True, padding=1, groups=2, width=256),
    Stage("pool5", "pool", False),
    Stage("fc6", "dense", True, width=4096),
    Stage("fc7", "dense", True, width=4096),
    Stage("fc8", "dense", False, width=1000),
)

#: VGG16 above block5_pool (keras.applications' names; predictions is the new last layer).
VGG16_TOP: Final = (
    Stage("fc1", "dense", True, width=4096),
    Stage("fc2", "dense", True, width=4096),
    Stage("predictions", "dense", False, width=1000),
)

#: Every cut, shallow to deep per network.
CUTS: Final[Mapping[str, Cut]] = {
    "pool2": Cut("pool2", "alexnet", ALEXNET_TOP, 0, 13, 256, "conv2"),
    "conv3": Cut("conv3", "alexnet", ALEXNET_TOP, 1, 13, 384, "conv3"),
    "conv4": Cut("conv4", "alexnet", ALEXNET_TOP, 2, 13, 384, "conv4"),
    "conv5": Cut("conv5", "alexnet", ALEXNET_TOP, 3, 13, 256, "conv5"),
    "pool5": Cut("pool5", "alexnet", ALEXNET_TOP, 4),
    "fc6": Cut("fc6", "alexnet", ALEXNET_TOP, 5),
    "block5_pool": Cut("block5_pool", "vgg16", VGG16_TOP, 0),
}


def cuts_of(network: str) -> tuple[str, ...]:
    """The cuts a fine-tune of `network` can start from, shallow to deep (none: a backbone
    featcache does not fine-tune, such as resnet50)."""
    return tuple(name for name, cut in CUTS.items() if cut.network == network)


def describe_cuts() -> str:
    """Every network's cuts in words, for messages: "alexnet: pool2, ...; vgg16: ..."."""
    networks = dict.fromkeys(cut.network for cut in CUTS.values())
    return "; ".join(f"{n}: {', '.join(cuts_of(n))}" for n in networks)


def stages_above(cut: str) -> tuple[Stage, ...]:
    """The stages a fine-tune from `cut` trains or runs, the last layer last; `ValueError`
    naming the cuts if `cut` is none of them."""
    if cut not in CUTS:
        raise ValueError(f"The 'cut' must be one of {list(CUTS)}. Got {cut!r}.")
    found = CUTS[cut]
    return found.stages[found.first :]


def tf_stage(tf: Any, h: Any, stage: Stage, w: Any, b: Any, *, split_groups: bool = False) -> Any:
    """`stage` as TensorFlow ops on NHWC (or, for a dense stage, any-shaped) `h`.

    A convolution's groups come from the kernel (its input depth is h's over the groups):
    TensorFlow's native grouped convolution by default, or one convolution per group with
    `split_groups` (TensorFlow has no gradient for the native one on the CPU).
    """
    if stage.kind == "pool":
        return tf.nn.max_pool2d(h, ksize=3, strides=2, padding="VALID")
    if stage.kind == "conv":
        pad = [[0, 0], [stage.padding] * 2, [stage.padding] * 2, [0, 0]]
        groups = int(h.shape[-1]) // int(w.shape[2])
        if groups == 1 or not split_groups:
            z = tf.nn.conv2d(h, w, 1, pad)
        else:
            xs = tf.split(h, groups, axis=-1)
            ws = tf.split(w, groups, axis=-1)
            z = tf.concat([tf.nn.conv2d(x, k, 1, pad) for x, k in zip(xs, ws, strict=True)], -1)
        z = tf.nn.bias_add(z, b)
    else:
        if len(h.shape) != 2:  # a spatial input, flattened H, W, C
            h = tf.reshape(h, [-1, int(w.shape[0])])
        z = tf.matmul(h, w) + b
    return tf.nn.relu(z) if stage.relu else z
