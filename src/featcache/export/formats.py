"""The three formats: write an exported module, and load one back with its own runtime.

=============  ==================================  ==========================================
format         files in the output folder          metadata (class names, head, fingerprint)
=============  ==================================  ==========================================
onnx           ``model.onnx`` (tf2onnx, opset 17)  ``metadata_props``: ``featcache`` (JSON),
                                                   ``class_names`` (JSON list)
savedmodel     ``saved_model.pb``, ``variables/``  ``assets/featcache.json``,
               signatures ``serving_default``,     ``assets/class_names.txt`` (one per line)
               ``serving_bytes``
openvino       ``model.xml`` + ``model.bin`` (f32)  runtime info ``featcache`` (JSON) and
                                                   ``class_names`` (JSON list)
=============  ==================================  ==========================================

Every file is written atomically: ``model.onnx`` through `featcache._io.atomic_write`; the
converters' files (OpenVINO's pair, the SavedModel's tree) into a temporary folder beside
them, fsynced, then renamed into place one by one, the file a runtime opens first last. A
killed export never leaves a partial file under a model file's name.

Loading (`load_model`) imports only the target runtime: onnxruntime, TensorFlow or OpenVINO.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from featcache._io import atomic_write_bytes, move_into, temporary_name
from featcache.errors import ConfigError, DependencyError, ExportError

__all__ = ["FORMATS", "LoadedModel", "load_model", "model_files", "write_model"]

FORMATS: Final = ("onnx", "savedmodel", "openvino")
ONNX_OPSET: Final = 17
_INSTALL = 'pip install "featcache[export]"'


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ConfigError(f"The 'format' must be one of {list(FORMATS)}. Got {fmt!r}.")


def model_files(fmt: str, folder: Path) -> list[Path]:
    """The files that make up the exported model in `folder` (sorted), for digests."""
    check_format(fmt)
    if fmt == "onnx":
        return [folder / "model.onnx"]
    if fmt == "openvino":
        return [folder / "model.xml", folder / "model.bin"]
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "verification.json")


# -- writing (TensorFlow and the converters) ------------------------------------------------


def _frozen(function: Any) -> Any:
    """The concrete `function` with its variables frozen into constants."""
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    return convert_variables_to_constants_v2(function)


def _write_savedmodel(module: Any, folder: Path, metadata: dict[str, Any]) -> None:
    import tensorflow as tf

    assets = temporary_name(folder / "assets")
    staged = temporary_name(folder / "savedmodel")
    try:
        assets.mkdir()
        atomic_write_bytes(
            assets / "featcache.json", json.dumps(metadata, indent=1, sort_keys=True).encode()
        )
        names = "".join(f"{n}\n" for n in metadata["class_names"])
        atomic_write_bytes(assets / "class_names.txt", names.encode())
        module.metadata_file = tf.saved_model.Asset(str(assets / "featcache.json"))
        module.class_names_file = tf.saved_model.Asset(str(assets / "class_names.txt"))
        signatures = {
            "serving_default": module.serve.get_concrete_function(),
            "serving_bytes": module.serve_bytes.get_concrete_function(),
        }
        tf.saved_model.save(module, str(staged), signatures=signatures)
        move_into(staged, folder, ("saved_model.pb",))
    finally:
        shutil.rmtree(assets, ignore_errors=True)
        shutil.rmtree(staged, ignore_errors=True)


def _rename(graph: Any, old: str, new: str) -> None:
    """Rename tensor `old` to `new` everywhere in an ONNX graph."""
    for value in [*graph.input, *graph.output]:
        if value.name == old:
            value.name = new
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]


def _bind(graph: Any, arrays: dict[str, np.ndarray]) -> None:
    """Turn the graph inputs named as `arrays`' keys into initialisers holding the arrays."""
    from onnx import TensorProto

    positions = {value.name: i for i, value in enumerate(graph.input)}
    missing = sorted(set(arrays) - set(positions))
    if missing:
        raise ExportError(f"the converted ONNX graph has no inputs {missing} to bind weights to")
    for i in sorted((positions[name] for name in arrays), reverse=True):
        del graph.input[i]
    for name, array in arrays.items():
        # Filled in place: appending a finished TensorProto would copy it once more.
        tensor = graph.initializer.add()
        tensor.name = name
        tensor.data_type = TensorProto.FLOAT
        tensor.dims.extend(array.shape)
        tensor.raw_data = np.ascontiguousarray(array, "<f4").tobytes()


def _write_onnx(module: Any, folder: Path, metadata: dict[str, Any]) -> None:
    """tf2onnx converts `serve` with the dense weight matrices as graph inputs, and the
    matrices are bound as initialisers afterwards. Given them as constants, its conversion
    peaked at 21.8 GB for AlexNet's 228 MB: each of its graph passes copies every constant
    tensor into its node protos (upb keeps the old copies until the whole graph is freed) and,
    unless told not to, deep-copies the whole graph before each optimizer, twelve per round."""
    try:
        import onnx
        import tf2onnx
    except ImportError as exc:
        raise DependencyError(f"exporting to ONNX needs tf2onnx and onnx: {_INSTALL}") from exc
    matrices = module.fed_arrays("matrices")
    frozen = _frozen(module.serve_fed("matrices"))
    inputs = [tensor.name for tensor in frozen.inputs]  # images, then the matrices
    result = frozen.outputs[0].name
    model, _ = tf2onnx.convert.from_graph_def(
        frozen.graph.as_graph_def(),
        input_names=inputs,
        output_names=[result],
        opset=ONNX_OPSET,
    )
    del frozen
    _rename(model.graph, inputs[0], "images")
    _rename(model.graph, result, "probabilities")
    for name in inputs[1:]:
        _rename(model.graph, name, name.split(":")[0])
    _bind(model.graph, matrices)
    model.doc_string = metadata["description"]
    for key, value in _metadata_props(metadata).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    data = model.SerializeToString()
    del model  # checked and written from its bytes: two copies of the weights, not three
    onnx.checker.check_model(data)
    atomic_write_bytes(folder / "model.onnx", data)


def _metadata_props(metadata: dict[str, Any]) -> dict[str, str]:
    return {
        "featcache": json.dumps(metadata, sort_keys=True),
        "class_names": json.dumps(metadata["class_names"]),
    }


def _write_openvino(module: Any, folder: Path, metadata: dict[str, Any]) -> None:
    """OpenVINO converts `serve` with every weight array as a graph input, and the arrays are
    bound as constants afterwards (sharing their memory), as `_write_onnx` does for the
    matrices: given the frozen graph's constants, the conversion peaked at 4.1-4.3 GB for
    AlexNet's 244 MB (README, "Export")."""
    from featcache._openvino import bind_parameter, import_openvino

    ov = import_openvino("exporting to OpenVINO", "export")
    arrays = module.fed_arrays("all")
    frozen = _frozen(module.serve_fed("all"))
    model = ov.convert_model(frozen.graph.as_graph_def())
    del frozen
    by_name = {p.get_friendly_name().split(":")[0]: p for p in model.get_parameters()}
    missing = sorted(set(arrays) - set(by_name))
    if missing:
        raise ExportError(f"the converted OpenVINO model has no inputs {missing} to bind")
    for name, array in arrays.items():
        bind_parameter(ov, model, by_name[name], array)
    model.validate_nodes_and_infer_types()
    model.inputs[0].get_tensor().set_names({"images"})
    model.outputs[0].get_tensor().set_names({"probabilities"})
    for key, value in _metadata_props(metadata).items():
        model.set_rt_info(value, [key])
    staged = temporary_name(folder / "openvino")
    try:
        staged.mkdir()
        # float32 weights as they are: OpenVINO would store them as float16 by default.
        ov.save_model(model, str(staged / "model.xml"), compress_to_fp16=False)
        move_into(staged, folder, ("model.bin", "model.xml"))
    finally:
        shutil.rmtree(staged, ignore_errors=True)


_WRITERS: Final[dict[str, Callable[[Any, Path, dict[str, Any]], None]]] = {
    "onnx": _write_onnx,
    "savedmodel": _write_savedmodel,
    "openvino": _write_openvino,
}


def write_model(fmt: str, module: Any, folder: Path, metadata: dict[str, Any]) -> None:
    """Write `module` (`featcache.export.graph.build_module`) as `fmt` into `folder`."""
    check_format(fmt)
    _WRITERS[fmt](module, folder, metadata)


# -- loading (the target runtime only) ------------------------------------------------------


@dataclass(frozen=True)
class LoadedModel:
    """An exported model loaded by its runtime: ``run(uint8 [N, H, W, 3]) -> float32 [N, C]``,
    the metadata written into it, and the runtime's name and version."""

    run: Callable[[np.ndarray], np.ndarray]
    metadata: dict[str, Any]
    class_names: list[str]
    runtime: str
    runtime_version: str
    run_bytes: Callable[[list[bytes]], np.ndarray] | None = None


def _load_onnx(folder: Path) -> LoadedModel:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(
        str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"]
    )
    props = session.get_modelmeta().custom_metadata_map

    def run(images: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(["probabilities"], {"images": images})[0])

    return LoadedModel(
        run,
        json.loads(props["featcache"]),
        json.loads(props["class_names"]),
        "onnxruntime",
        ort.__version__,
    )


def _load_openvino(folder: Path) -> LoadedModel:
    from featcache._openvino import import_openvino

    ov = import_openvino("running an OpenVINO export", "export")

    core = ov.Core()
    model = core.read_model(str(folder / "model.xml"))
    metadata = json.loads(model.get_rt_info(["featcache"]).astype(str))
    names = json.loads(model.get_rt_info(["class_names"]).astype(str))
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})

    def run(images: np.ndarray) -> np.ndarray:
        return np.asarray(compiled(images)["probabilities"])

    return LoadedModel(run, metadata, names, "openvino", ov.get_version())


def _load_savedmodel(folder: Path) -> LoadedModel:
    from featcache.extractor._tf import import_tensorflow

    tf = import_tensorflow()
    loaded = tf.saved_model.load(str(folder))
    serve, serve_bytes = loaded.signatures["serving_default"], loaded.signatures["serving_bytes"]
    metadata = json.loads(Path(loaded.metadata_file.asset_path.numpy().decode()).read_text())
    names_file = Path(loaded.class_names_file.asset_path.numpy().decode())
    names = names_file.read_text().splitlines()

    def run(images: np.ndarray) -> np.ndarray:
        return np.asarray(serve(images=tf.constant(images))["probabilities"])

    def run_bytes(data: list[bytes]) -> np.ndarray:
        return np.asarray(serve_bytes(image_bytes=tf.constant(data))["probabilities"])

    return LoadedModel(run, metadata, names, "tensorflow", tf.__version__, run_bytes)


def load_model(fmt: str, folder: Path) -> LoadedModel:
    """Load the `fmt` model in `folder` with its own runtime; `ExportError` if unreadable."""
    check_format(fmt)
    loader = {"onnx": _load_onnx, "openvino": _load_openvino, "savedmodel": _load_savedmodel}
    try:
        return loader[fmt](folder)
    except ImportError as exc:
        raise DependencyError(f"running a {fmt} model needs its runtime: {_INSTALL}") from exc
    except (OSError, RuntimeError, ValueError, KeyError, AttributeError) as exc:
        raise ExportError(
            f"{folder}: the {fmt} model cannot be loaded ({type(exc).__name__}: {exc}); "
            "export it again"
        ) from exc
