"""featcache's AlexNet as TensorFlow GraphDefs, traced once and shipped for converters.

OpenVINO converts the network from these files (`runtime_openvino.convert_alexnet`), so a
conversion needs neither TensorFlow nor its 2 s import: OpenVINO's TensorFlow frontend
reads a GraphDef by itself (0.2 s here). Each profile's file is `AlexNet.export_function`'s
float32 graph with every layer out (pool5, fc6, fc7, fc8, prob) and the weights as inputs
(the file is 5 kB; the weights are bound when converting, and the outputs not asked for
are cut off there, which drops the layers only they need).

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
from featcache.extractor.alexnet import LAYERS
from featcache.extractor.preprocess import PROFILES, check_profile

__all__ = ["GRAPHS", "ShippedGraph", "shipped_graph", "trace_graph", "write_graphs"]

#: The folder of the shipped graphs (package data): ``alexnet-PROFILE.pb`` and ``.json``.
GRAPHS: Final = Path(__file__).with_name("graphs")


@dataclass(frozen=True)
class ShippedGraph:
    """One profile's traced graph: the file, its inputs after the batch ``(layer, "weights" |
    "biases")`` in order, and the tensor that holds each layer's output."""

    profile: str
    path: Path
    inputs: tuple[tuple[str, str], ...]
    outputs: dict[str, str]
    tensorflow: str
    sha256: str


def _files(profile: str, folder: Path) -> tuple[Path, Path]:
    return folder / f"alexnet-{profile}.pb", folder / f"alexnet-{profile}.json"


def shipped_graph(profile: str, folder: Path = GRAPHS) -> ShippedGraph:
    """The shipped graph of `profile`, its digest checked; `FeatcacheError` if missing or
    damaged (reinstalling featcache restores it)."""
    check_profile(profile)
    graph, meta_file = _files(profile, folder)
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
            f"{graph}: featcache's traced AlexNet graph cannot be read ({exc}); reinstall featcache"
        ) from exc
    if digest != shipped.sha256:
        raise FeatcacheError(
            f"{graph}: SHA-256 {digest[:12]}... is not the {shipped.sha256[:12]}... it was "
            "shipped with; reinstall featcache"
        )
    if set(shipped.outputs) != set(LAYERS):
        raise FeatcacheError(f"{meta_file}: outputs {sorted(shipped.outputs)}, expected {LAYERS}")
    return shipped


def trace_graph(profile: str) -> tuple[bytes, dict[str, object]]:
    """Trace `profile`'s float32 graph with every layer out (imports TensorFlow); return the
    serialized GraphDef and its metadata (what `shipped_graph` reads)."""
    from featcache.extractor._tf import import_tensorflow
    from featcache.extractor.alexnet import AlexNet
    from featcache.extractor.weights import LAYER_SHAPES

    tf = import_tensorflow()
    check_profile(profile)
    # Only the shapes matter: the weights are inputs of the traced graph.
    shapes = {
        name: (np.zeros(shape, np.float32), np.zeros(shape[-1], np.float32))
        for name, shape in LAYER_SHAPES.items()
    }
    function, names = AlexNet(shapes, profile).export_function(LAYERS)
    data = function.graph.as_graph_def().SerializeToString(deterministic=True)
    meta: dict[str, object] = {
        "profile": profile,
        "inputs": [list(pair) for pair in names],
        "outputs": {layer: t.name for layer, t in function.structured_outputs.items()},
        "tensorflow": tf.__version__,
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    return data, meta


def write_graphs(folder: Path = GRAPHS) -> list[Path]:
    """Trace every profile's graph and write it into `folder`; return the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for profile in PROFILES:
        data, meta = trace_graph(profile)
        graph, meta_file = _files(profile, folder)
        with atomic_write(graph) as out:
            out.write(data)
        with atomic_write(meta_file) as out:
            out.write((json.dumps(meta, indent=1, sort_keys=True) + "\n").encode())
        written += [graph, meta_file]
    return written


if __name__ == "__main__":  # python -m featcache.extractor.graphdef [FOLDER]
    for path in write_graphs(Path(sys.argv[1]) if len(sys.argv) > 1 else GRAPHS):
        print(path)
