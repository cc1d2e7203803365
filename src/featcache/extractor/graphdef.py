"""featcache's networks as TensorFlow GraphDefs, traced once and shipped for converters.

OpenVINO converts a network from these files (`runtime_openvino.convert_network`), so a
conversion needs neither TensorFlow nor its 2 s import: OpenVINO's TensorFlow frontend
reads a GraphDef by itself (0.2 s here). Each backbone's file per profile
(``STEM-PROFILE.pb``: ``alexnet-caffe.pb``, ``vgg16-caffe.pb``, ``resnet50-caffe.pb``) is
its TensorFlow network's ``export_function`` float32 graph with every layer out and the
weights as inputs (a few kB; the weights are bound when converting, and the outputs not
asked for are cut off there, which drops the layers only they need). VGG16's and
ResNet50's weight inputs have unknown dimensions: the bound arrays give the shapes.

The files are generated, never edited: after changing `alexnet.py`, run
``python -m featcache.extractor.graphdef`` and commit ``graphs/``. tests/test_graphdef.py
traces the graph again with the installed TensorFlow and checks the shipped file converts
to the same network (equal outputs), so a stale file fails the tests.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np

from featcache._io import atomic_write
from featcache.errors import FeatcacheError
from featcache.extractor.preprocess import check_profile
from featcache.extractor.registry import DEFAULT_BACKBONE, backbone_named, backbone_names

__all__ = ["GRAPHS", "ShippedGraph", "shipped_graph", "trace_graph", "write_graphs"]

#: The folder of the shipped graphs (package data): ``STEM-PROFILE.pb`` and ``.json``.
GRAPHS: Final = Path(__file__).with_name("graphs")


@dataclass(frozen=True)
class ShippedGraph:
    """One backbone's traced graph for a profile: the file, its inputs after the batch
    ``(layer, "weights" | "biases")`` in order, and the tensor that holds each layer's output."""

    profile: str
    path: Path
    inputs: tuple[tuple[str, str], ...]
    outputs: dict[str, str]
    tensorflow: str
    sha256: str


def _files(profile: str, folder: Path, backbone: str) -> tuple[Path, Path]:
    stem = backbone_named(backbone).graph_stem
    return folder / f"{stem}-{profile}.pb", folder / f"{stem}-{profile}.json"


def shipped_graph(
    profile: str, folder: Path = GRAPHS, *, backbone: str = DEFAULT_BACKBONE
) -> ShippedGraph:
    """The shipped graph of `backbone` for `profile`, its digest checked; `FeatcacheError`
    if missing or damaged (reinstalling featcache restores it)."""
    check_profile(profile)
    network = backbone_named(backbone)
    network.check_profile(profile)
    graph, meta_file = _files(profile, folder, backbone)
    try:
        meta = json.loads(meta_file.read_text())
        digest = hashlib.sha256(graph.read_bytes()).hexdigest()
        shipped = ShippedGraph(
            profile=profile,
            path=graph,
            inputs=tuple((str(layer), str(part)) for layer, part in meta["inputs"]),
            outputs={str(k): str(v) for k, v in meta["outputs"].items()},
            tensorflow=str(meta["tensorflow"]),
            sha256=str(meta["sha256"]),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FeatcacheError(
            f"{graph}: featcache's traced {backbone} graph cannot be read ({exc}); "
            "reinstall featcache"
        ) from exc
    if digest != shipped.sha256:
        raise FeatcacheError(
            f"{graph}: SHA-256 {digest[:12]}... is not the {shipped.sha256[:12]}... it was "
            "shipped with; reinstall featcache"
        )
    if set(shipped.outputs) != set(network.layers):
        raise FeatcacheError(
            f"{meta_file}: outputs {sorted(shipped.outputs)}, expected {list(network.layers)}"
        )
    return shipped


def trace_graph(profile: str, backbone: str = DEFAULT_BACKBONE) -> tuple[bytes, dict[str, object]]:
    """Trace `backbone`'s float32 graph for `profile` with every layer out (imports
    TensorFlow); return the serialized GraphDef and its metadata (what `shipped_graph` reads)."""
    from featcache.extractor._tf import import_tensorflow

    tf = import_tensorflow()
    check_profile(profile)
    network = backbone_named(backbone)
    network.check_profile(profile)
    # Only the shapes matter: the weights are inputs of the traced graph.
    shapes = {
        name: (np.zeros(shape, np.float32), np.zeros(shape[-1], np.float32))
        for name, shape in network.weight_shapes().items()
    }
    model = network.build_tensorflow(shapes, profile, "float32")
    function, names = model.export_function(network.layer_names)
    data = function.graph.as_graph_def().SerializeToString(deterministic=True)
    meta: dict[str, object] = {
        "backbone": backbone,
        "profile": profile,
        "inputs": [list(pair) for pair in names],
        "outputs": {layer: t.name for layer, t in function.structured_outputs.items()},
        "tensorflow": tf.__version__,
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    return data, meta


def write_graphs(folder: Path = GRAPHS) -> list[Path]:
    """Trace every backbone's graph for each of its profiles into `folder`; return the files
    written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for backbone, profile in (
        (name, profile) for name in backbone_names() for profile in backbone_named(name).profiles
    ):
        data, meta = trace_graph(profile, backbone)
        graph, meta_file = _files(profile, folder, backbone)
        with atomic_write(graph) as out:
            out.write(data)
        with atomic_write(meta_file) as out:
            out.write((json.dumps(meta, indent=1, sort_keys=True) + "\n").encode())
        written += [graph, meta_file]
    return written


if __name__ == "__main__":  # python -m featcache.extractor.graphdef [FOLDER]
    for path in write_graphs(Path(sys.argv[1]) if len(sys.argv) > 1 else GRAPHS):
        print(path)
