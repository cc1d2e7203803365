"""AlexNet's registry entry: bvlc_alexnet.npy (`weights`), the TensorFlow `AlexNet`, the
caffe and udacity profiles. Its fingerprints are those of every store made before the
registry (the spec's ``network`` has always been ``"alexnet"``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from featcache.extractor.alexnet import CUT_DIMS
from featcache.extractor.fetch import DEFAULT_WEIGHTS_URL
from featcache.extractor.preprocess import CAFFE_MEAN_BGR, INPUT_SIZE, PROFILES
from featcache.extractor.registry import Backbone, register_backbone

__all__ = ["ALEXNET"]

#: Each layer `AlexNet.forward` returns and its vector length (alexnet.LAYER_DIMS).
_LAYERS: Final = {"pool5": 9216, "fc6": 4096, "fc7": 4096, "fc8": 1000, "prob": 1000}


def _read(path: Path) -> Any:
    from featcache.extractor.weights import read_weights

    return read_weights(path)


def _write_demo(path: Path, seed: int = 0) -> Path:
    from featcache.extractor.weights import write_demo_weights

    return write_demo_weights(path, seed)


def _shapes() -> Mapping[str, tuple[int, ...]]:
    from featcache.extractor import weights

    return weights.LAYER_SHAPES


def _build(weights: Mapping[str, tuple[Any, Any]], profile: str, precision: str) -> Any:
    from featcache.extractor.alexnet import AlexNet

    return AlexNet(weights, profile, precision=precision)


ALEXNET: Final = register_backbone(
    Backbone(
        name="alexnet",
        layers=_LAYERS,
        default_layer="fc7",
        input_size=INPUT_SIZE,
        mean_bgr=(float(CAFFE_MEAN_BGR[0]), float(CAFFE_MEAN_BGR[1]), float(CAFFE_MEAN_BGR[2])),
        profiles=PROFILES,
        weights_file="bvlc_alexnet.npy",
        weights_url=DEFAULT_WEIGHTS_URL,
        weights_mb=244.0,
        read_weights=_read,
        write_demo_weights=_write_demo,
        build_tensorflow=_build,
        weight_shapes=_shapes,
        graph_stem="alexnet",
        gmacs=0.724,
        description="AlexNet (bvlc_alexnet, caffe-tensorflow), 227x227, 61M parameters",
        storage_float16=("pool2", "conv3", "conv4", "conv5", "pool5"),
        cuts=CUT_DIMS,
    )
)
