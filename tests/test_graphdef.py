"""The shipped AlexNet graphs: fresh, checked, converted without TensorFlow, cut to the layers.

Networks here use the session's seeded RANDOM weights.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import write_images
from featcache._openvino import import_openvino
from featcache.errors import FeatcacheError
from featcache.extractor.alexnet import LAYERS
from featcache.extractor.graphdef import GRAPHS, shipped_graph, write_graphs
from featcache.extractor.preprocess import PROFILES
from featcache.extractor.weights import Weights

needs_openvino = pytest.mark.skipif(
    importlib.util.find_spec("openvino") is None, reason='pip install "featcache[openvino]"'
)


def _openvino() -> Any:
    """OpenVINO through featcache's one import of it (telemetry off)."""
    return import_openvino("test_graphdef", "openvino")


def _outputs(model: object, batch: np.ndarray) -> dict[str, np.ndarray]:
    ov = _openvino()
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    result = compiled({0: batch})
    return {o.get_any_name(): np.asarray(result[o]) for o in compiled.outputs}


@pytest.mark.slow
@needs_openvino
def test_shipped_graphs_are_the_network_traced_now(tmp_path: Path, weights: Weights) -> None:
    """Trace again with the installed TensorFlow: a stale shipped file converts to other
    numbers (regenerate with ``python -m featcache.extractor.graphdef``)."""
    from featcache.extractor.runtime_openvino import convert_alexnet

    write_graphs(tmp_path)
    batch = np.random.default_rng(0).normal(0, 60, (2, 227, 227, 3)).astype(np.float32)
    for profile in PROFILES:
        shipped, fresh = shipped_graph(profile), shipped_graph(profile, tmp_path)
        assert (shipped.inputs, shipped.outputs) == (fresh.inputs, fresh.outputs)
        if shipped.sha256 == fresh.sha256:
            continue  # the same bytes
        ours = _outputs(convert_alexnet(weights, profile, LAYERS), batch)
        theirs = _outputs(_convert_file(fresh.path, weights), batch)
        for layer in LAYERS:
            stale = f"{profile} {layer}: stale; run python -m featcache.extractor.graphdef"
            np.testing.assert_array_equal(ours[layer], theirs[layer], err_msg=stale)


def _convert_file(path: Path, weights: Weights) -> object:
    """The model of a GraphDef file with `weights` bound, outputs named by the shipped map."""
    ov = _openvino()
    opset13 = ov.opset13
    model = ov.convert_model(str(path))
    for parameter in model.get_parameters()[1:]:
        layer, part = parameter.get_friendly_name().split(":")[0].split("_")
        array = weights.layers[layer][0 if part == "weights" else 1]
        constant = opset13.constant(array)
        for target in list(parameter.output(0).get_target_inputs()):
            target.replace_source_output(constant.output(0))
        model.remove_parameter(parameter)
    tensors = {t: layer for layer, t in shipped_graph("caffe").outputs.items()}
    for output in model.outputs:
        output.get_tensor().set_names({tensors[n] for n in output.get_names() if n in tensors})
    return model


def test_a_damaged_or_missing_graph_says_reinstall(tmp_path: Path) -> None:
    for name in ("alexnet-caffe.pb", "alexnet-caffe.json"):
        shutil.copy(GRAPHS / name, tmp_path / name)
    assert shipped_graph("caffe", tmp_path).sha256 == shipped_graph("caffe").sha256
    graph = tmp_path / "alexnet-caffe.pb"
    data = bytearray(graph.read_bytes())
    data[100] ^= 1
    graph.write_bytes(bytes(data))
    with pytest.raises(FeatcacheError, match=r"alexnet-caffe\.pb: SHA-256 .* reinstall"):
        shipped_graph("caffe", tmp_path)
    graph.unlink()
    with pytest.raises(FeatcacheError, match=r"alexnet-caffe\.pb.*cannot be read.*reinstall"):
        shipped_graph("caffe", tmp_path)
    meta = json.loads((GRAPHS / "alexnet-caffe.json").read_text())
    assert meta["sha256"] == shipped_graph("caffe").sha256


@needs_openvino
@pytest.mark.parametrize(("layers", "products"), [(("pool5",), 0), (("fc6",), 1), (("fc7",), 2)])
def test_conversion_keeps_only_the_layers_asked_for(
    layers: tuple[str, ...], products: int, weights: Weights
) -> None:
    from featcache.extractor.runtime_openvino import convert_alexnet

    model = convert_alexnet(weights, "udacity", layers)
    assert [o.get_any_name() for o in model.outputs] == list(layers)
    assert [op.get_type_name() for op in model.get_ops()].count("MatMul") == products
    assert len(model.get_parameters()) == 1


@needs_openvino
def test_a_wrong_shaped_weight_is_named(weights: Weights) -> None:
    from featcache.extractor.runtime_openvino import convert_alexnet

    layers = dict(weights.layers)
    w, b = layers["fc7"]
    layers["fc7"] = (w[:, :100], b[:100])
    bad = Weights(layers=layers, path=weights.path, sha256=weights.sha256, demo_note=None)
    with pytest.raises(FeatcacheError, match=r"layer 'fc7' weights has shape \(4096, 100\)"):
        convert_alexnet(bad, "caffe", ("fc7",))


@pytest.mark.slow
@needs_openvino
def test_a_first_conversion_imports_no_tensorflow(tmp_path: Path, weights_path: Path) -> None:
    write_images(tmp_path / "data", 3, seed=5)
    code = (
        "import json, sys\n"
        "from featcache.extractor.pipeline import ExtractConfig, extract\n"
        "config = ExtractConfig(runtime='openvino', profile='udacity')\n"
        f"r = extract({str(tmp_path / 'data')!r}, {str(weights_path)!r}, "
        f"{str(tmp_path / 'store')!r}, config=config)\n"
        "print(json.dumps({'tensorflow': 'tensorflow' in sys.modules, 'extracted': r.extracted,"
        " 'note': r.weights_note}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["tensorflow"] is False and result["extracted"] == 3
    assert "random" in result["note"]
    manifests = list((tmp_path / "store" / "runtimes").rglob("manifest.json"))
    assert len(manifests) == 1
    meta = json.loads(manifests[0].read_text())
    assert meta["meta"]["graph"]["sha256"] == shipped_graph("udacity").sha256
