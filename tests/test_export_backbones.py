"""export-model for VGG16 and ResNet50 heads, with the same checks as AlexNet's
(test_export_model.py): the exported file, run by its own runtime (onnxruntime, OpenVINO) in
a fresh process, agrees with featcache's predict on images of two sizes (224x224: no resize;
30x40: resized in the graph) within the same tolerances.

Narrow networks (1/16 of the filters and units: conftest's NARROW) at their real 224x224
input and wiring, seeded RANDOM weights in the Keras layout: the sizes do not matter here,
the graph does. Heads: softmax on VGG16 fc2, a fine-tune from VGG16's block5_pool (vectors
stored as float16, rounded so in the graph), logistic regression on ResNet50 avg_pool.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import NARROW
from featcache.errors import ConfigError

pytestmark = pytest.mark.slow

SIZES = ((224, 224), (30, 40))
HEADS = {  # name: (backbone, layer, kind)
    "vgg16-fc2": ("vgg16", "fc2", "softmax"),
    "vgg16-tuned": ("vgg16", "block5_pool", "finetune"),
    "resnet50-avg": ("resnet50", "avg_pool", "logreg"),
}
# Every head to ONNX; OpenVINO for each network's graph (VGG16 fc2's is the tuned one's, deeper).
CASES = [*((h, "onnx") for h in HEADS), ("vgg16-tuned", "openvino"), ("resnet50-avg", "openvino")]


@pytest.fixture(scope="module")
def narrow() -> Iterator[None]:
    from featcache.extractor import resnet50, vgg16

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(vgg16, "LAYER_SHAPES", vgg16.vgg16_layer_shapes(NARROW))
        patch.setattr(resnet50, "LAYER_SHAPES", resnet50.resnet50_layer_shapes(NARROW))
        yield


def _images(folder: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(8):
        height, width = SIZES[i % 2]
        label = folder / ("cat" if i % 4 < 2 else "dog")
        label.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
        picture = Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)
        picture.save(label / f"img{i}.png")


@pytest.fixture(scope="module")
def stores(narrow: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Per backbone a store with its heads' layers of the same 8 images, and the heads."""
    from featcache.classifier.train import train_head
    from featcache.extractor.pipeline import ExtractConfig, extract
    from featcache.extractor.registry import backbone_named, read_backbone_weights
    from featcache.store import FeatureStore

    root = tmp_path_factory.mktemp("export-backbones")
    _images(root / "data")
    made: dict[str, object] = {"root": root}
    for network in ("vgg16", "resnet50"):
        weights = backbone_named(network).write_demo_weights(root / f"{network}.h5", 0)
        store = FeatureStore(root / network)
        heads = {n: h for n, h in HEADS.items() if h[0] == network}
        layers = tuple(dict.fromkeys(layer for _, layer, _ in heads.values()))
        extract(root / "data", weights, store, dataset="pets",
                config=ExtractConfig(backbone=network, layers=layers))  # fmt: skip
        for name, (_, layer, kind) in heads.items():
            params: dict[str, object] = {"random_state": 0}
            if kind == "finetune":
                params.update(epochs=2, early_stopping=False)
            train_head(
                store, "pets", head=kind, name=name, layer=layer, params=params,
                weights=read_backbone_weights(weights, network) if kind == "finetune" else None,
            )  # fmt: skip
        made[network] = (store, weights)
    return made


@pytest.fixture(scope="module")
def exported(narrow: None, stores: dict) -> dict[tuple[str, str], object]:
    from featcache.export import ExportConfig, export_model

    results = {}
    for name, fmt in CASES:
        store, weights = stores[HEADS[name][0]]
        out = stores["root"] / f"{name}-{fmt}"
        results[name, fmt] = export_model(store, name, weights, out, ExportConfig(format=fmt))
    return results


@pytest.mark.parametrize("case", CASES, ids=["-".join(c) for c in CASES])
def test_export_agrees_with_predict(exported: dict, case: tuple[str, str]) -> None:
    result = exported[case]
    name, fmt = case
    network, layer, kind = HEADS[name]
    v = result.verification
    assert result.passed, v["problems"]
    assert v["runtime"] == {"onnx": "onnxruntime"}.get(fmt, fmt)
    assert v["input_size"] == 224 and result.metadata["preprocessing"]["input_size"] == 224
    assert v["images_checked"] == 8
    assert v["images_at_input_size"] == 4 and v["images_resized"] == 4
    assert v["max_abs_diff_at_input_size"] <= 1e-4
    assert v["max_abs_diff_resized"] <= v["tolerance"]["resized"]
    assert v["top1_agreement"] == 1.0
    assert v["class_names"] == ["cat", "dog"] and v["class_names_match"]
    assert result.metadata["extractor"]["network"] == network
    assert result.metadata["head"] == {**result.metadata["head"], "kind": kind, "layer": layer}
    note = result.metadata["weights_note"]
    assert note.startswith("seeded random") and note.endswith("NOT ImageNet-trained")
    # block5_pool is stored as float16 (fc2 and avg_pool as float32): rounded so in the graph
    assert result.metadata["preprocessing"]["vectors_rounded_to_float16"] == (kind == "finetune")


def test_the_exported_model_answers_as_predict_on_new_images(
    narrow: None, stores: dict, exported: dict, tmp_path: Path
) -> None:
    """Images the store has not seen, of a third size, through onnxruntime in this process
    and through featcache's Predictor (which extracts them): same probabilities."""
    from featcache.export import RESIZED_TOLERANCE, TOLERANCE, load_model
    from featcache.predictor import Predictor

    rng = np.random.default_rng(7)
    rgb = [
        rng.integers(0, 256, (224, 224, 3), np.uint8),
        rng.integers(0, 256, (50, 64, 3), np.uint8),
    ]
    paths = []
    for i, pixels in enumerate(rgb):
        paths.append(tmp_path / f"new{i}.png")
        Image.fromarray(pixels).save(paths[-1])
    for name in HEADS:
        store, weights = stores[HEADS[name][0]]
        model = load_model("onnx", exported[name, "onnx"].path)
        answers = Predictor(store, name, weights=weights, top_k=2).predict(paths)
        tolerances = (TOLERANCE, RESIZED_TOLERANCE)
        for pixels, answer, tolerance in zip(rgb, answers, tolerances, strict=True):
            probabilities = model.run(pixels[None])[0]
            for p in answer.predictions:
                assert abs(probabilities[p.class_id] - p.probability) <= tolerance, name


def test_a_backbone_without_a_portable_graph_is_refused() -> None:
    import dataclasses

    from featcache.export.graph import portable_network
    from featcache.extractor.registry import backbone_named

    plain = dataclasses.replace(backbone_named("resnet50"), build_tensorflow=lambda *_: object())
    with pytest.raises(ConfigError, match="backbone 'resnet50': its TensorFlow network has no "
                       "portable_graph"):  # fmt: skip
        portable_network(plain, "caffe")
