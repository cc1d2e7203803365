"""export-model: each format run by its own runtime in a fresh process agrees with predict.

Real AlexNet convolutions with narrow fc6/fc7 (32 wide instead of 4,096: the sizes do not
matter here, the wiring does), seeded random weights, images of two sizes (227x227: no
resize; 30x40: resized inside the graph), both profiles and every head kind, spread over
the three formats (each format sees both profiles; the fine-tuned head, whose pool5
vectors are stored as float16 and rounded so in the graph, every format).
"""

from __future__ import annotations

import io
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import PYTHON
from featcache.errors import ConfigError, ExportError
from featcache.extractor import weights as weights_module

pytestmark = pytest.mark.slow

NARROW = {**weights_module.LAYER_SHAPES, "fc6": (9216, 32), "fc7": (32, 32), "fc8": (32, 1000)}
SIZES = ((227, 227), (30, 40))
CASES = [  # (format, profile, head kind)
    ("onnx", "caffe", "softmax"),
    ("onnx", "udacity", "finetune"),
    ("savedmodel", "udacity", "logreg"),
    ("savedmodel", "caffe", "finetune"),
    ("openvino", "caffe", "logreg"),
    ("openvino", "udacity", "finetune"),
]


def _images(folder: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(8):
        height, width = SIZES[i % 2]
        label = folder / ("cat" if i % 4 < 2 else "dog")
        label.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
        picture = Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)
        paths.append(label / f"img{i}.png")
        picture.save(paths[-1])
    return paths


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """Per profile a store with fc7 and pool5 of the same 8 images and three heads."""
    from featcache.classifier.train import train_head
    from featcache.extractor.pipeline import ExtractConfig, extract
    from featcache.extractor.weights import read_weights, write_demo_weights
    from featcache.store import FeatureStore

    root = tmp_path_factory.mktemp("export")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(weights_module, "LAYER_SHAPES", NARROW)
        weights = write_demo_weights(root / "narrow.npy")
        paths = _images(root / "data")
        made: dict[str, object] = {"weights": weights, "paths": paths, "root": root}
        for profile in ("caffe", "udacity"):
            store = FeatureStore(root / profile)
            config = ExtractConfig(profile=profile, layers=("fc7", "pool5"))
            extract(root / "data", weights, store, dataset="pets", config=config)
            for kind in sorted({k for _, p, k in CASES if p == profile}):
                params: dict[str, object] = {"random_state": 0}
                if kind == "finetune":
                    params["epochs"] = 1
                train_head(
                    store,
                    "pets",
                    head=kind,
                    name=kind,
                    params=params,
                    weights=read_weights(weights) if kind == "finetune" else None,
                )
            made[profile] = store
        yield made


@pytest.fixture(scope="module")
def converted() -> dict[tuple[str, str], object]:
    """The TensorFlow graphs the exports gave tf2onnx and OpenVINO, by case."""
    return {}


@pytest.fixture(scope="module")
def exported(
    stores: dict[str, object], converted: dict[tuple[str, str], object]
) -> dict[tuple[str, str, str], object]:
    import tf2onnx

    from featcache._openvino import import_openvino
    from featcache.export import ExportConfig, export_model

    root = stores["root"]
    assert isinstance(root, Path)
    results = {}
    ov = import_openvino("the export tests", "export")
    real = {"onnx": tf2onnx.convert.from_graph_def, "openvino": ov.convert_model}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(weights_module, "LAYER_SHAPES", NARROW)
        for fmt, profile, kind in CASES:

            def spy(graph_def: object, *args: object, key: object = (fmt, profile, kind),
                    **kw: object):  # fmt: skip
                converted[key] = graph_def  # type: ignore[index]
                return real[key[0]](graph_def, *args, **kw)  # type: ignore[index]

            patch.setattr(tf2onnx.convert, "from_graph_def", spy)
            patch.setattr(ov, "convert_model", spy)
            results[fmt, profile, kind] = export_model(
                stores[profile],  # type: ignore[arg-type]
                kind,
                stores["weights"],  # type: ignore[arg-type]
                root / f"{fmt}-{profile}-{kind}",
                ExportConfig(format=fmt),
            )
    return results


@pytest.mark.parametrize("case", CASES, ids=["-".join(c) for c in CASES])
def test_export_agrees_with_predict(exported: dict, case: tuple[str, str, str]) -> None:
    result = exported[case]
    fmt, profile, kind = case
    v = result.verification
    assert result.passed, v["problems"]
    assert v["runtime"] == {"onnx": "onnxruntime", "savedmodel": "tensorflow"}.get(fmt, fmt)
    assert v["images_checked"] == 8
    assert v["images_at_input_size"] == 4 and v["images_resized"] == 4
    assert v["max_abs_diff_at_input_size"] <= 1e-4
    assert v["max_abs_diff_resized"] <= v["tolerance"]["resized"]
    assert v["top1_agreement"] == 1.0
    # The class names and the head's identity travel inside the file.
    assert v["class_names"] == ["cat", "dog"] and v["class_names_match"]
    assert result.metadata["head"]["name"] == kind
    assert result.metadata["extractor"]["profile"] == profile
    assert result.metadata["weights_note"].startswith("seeded random weights")
    # pool5 is stored as float16 (fc7 as float32): the graph rounds the vectors as they were.
    assert result.metadata["preprocessing"]["vectors_rounded_to_float16"] == (kind == "finetune")
    written = json.loads((result.path / "verification.json").read_text())
    assert written["passed"] and set(written["model_files"]) == {
        str(p.relative_to(result.path)) for p in result.files
    }


def test_predict_json_matches_the_exported_onnx(stores: dict, exported: dict) -> None:
    """`featcache predict --json` (a cached answer, another process) against onnxruntime."""
    from featcache.export import RESIZED_TOLERANCE, TOLERANCE, load_model

    paths = stores["paths"]
    done = subprocess.run(
        [PYTHON, "-m", "featcache", "predict", *map(str, paths), "--store",
         str(stores["caffe"].path), "--head", "softmax", "--top-k", "2", "--json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    model = load_model("onnx", exported["onnx", "caffe", "softmax"].path)
    assert model.class_names == ["cat", "dog"]
    for path, answer in zip(paths, answers, strict=True):
        rgb = np.asarray(Image.open(path).convert("RGB"))
        probabilities = model.run(rgb[None])[0]
        tolerance = TOLERANCE if rgb.shape[:2] == (227, 227) else RESIZED_TOLERANCE
        for p in answer["predictions"]:
            assert abs(probabilities[p["class_id"]] - p["probability"]) <= tolerance


def _weight_arrays(stores: dict, profile: str, kind: str, every: bool) -> dict[str, np.ndarray]:
    """The arrays an export of head `kind` binds, by input name: the head's and the
    backbone's layers it uses, every array (`every`) or the weight matrices only."""
    from featcache.classifier.persist import load_head
    from featcache.export import head_layers
    from featcache.extractor.alexnet import weight_layers
    from featcache.extractor.weights import read_weights

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(weights_module, "LAYER_SHAPES", NARROW)
        backbone = read_weights(stores["weights"]).layers
    loaded = load_head(stores[profile], kind)
    arrays = {}
    for name in weight_layers([loaded.layer]):
        arrays[f"{name}_weights"], arrays[f"{name}_biases"] = backbone[name]
    for i, layer in enumerate(head_layers(loaded.estimator)):
        arrays[f"head{i}_weights"], arrays[f"head{i}_biases"] = layer.weights, layer.biases
    if every:
        return arrays
    return {n: a for n, a in arrays.items() if n.endswith("_weights") and a.ndim == 2}


def _constant_shapes(graph_def: object) -> set[tuple[int, ...]]:
    return {
        tuple(d.size for d in n.attr["value"].tensor.tensor_shape.dim)
        for n in graph_def.node  # type: ignore[attr-defined]
        if n.op == "Const"
    }


def test_onnx_dense_matrices_are_bound_after_conversion(
    stores: dict, exported: dict, converted: dict
) -> None:
    """tf2onnx converts the graph with the dense weight matrices as inputs, not constants (it
    copies every constant it holds on each of its passes: 21.8 GB for AlexNet's 228 MB); the
    file then holds each matrix once, as an initialiser equal to its source, and takes only
    the images."""
    import onnx
    from onnx import numpy_helper

    cases = [c for c in CASES if c[0] == "onnx"]
    assert sorted(k for k in converted if k[0] == "onnx") == sorted(cases)
    for fmt, profile, kind in cases:
        expected = _weight_arrays(stores, profile, kind, every=False)
        assert "head0_weights" in expected and ("fc7_weights" in expected) == (kind != "finetune")
        graph_def = converted[fmt, profile, kind]
        placeholders = {n.name for n in graph_def.node if n.op == "Placeholder"}
        assert placeholders == {"images", *expected}
        assert not _constant_shapes(graph_def) & {m.shape for m in expected.values()}
        model = onnx.load(str(exported[fmt, profile, kind].path / "model.onnx"))
        assert [value.name for value in model.graph.input] == ["images"]
        bound = {t.name: t for t in model.graph.initializer if t.name in expected}
        assert sorted(bound) == sorted(expected)
        for name, matrix in expected.items():
            np.testing.assert_array_equal(numpy_helper.to_array(bound[name]), matrix)


def test_openvino_binds_every_weight_after_conversion(
    stores: dict, exported: dict, converted: dict
) -> None:
    """OpenVINO converts a graph that holds no weights (every array an input: given the frozen
    graph's constants, its conversion peaked at 4.3 GB for AlexNet's 244 MB); the saved model
    takes only the images, and its weights file holds every array, float32, as given."""
    from featcache._openvino import import_openvino

    ov = import_openvino("the export tests", "export")
    cases = [c for c in CASES if c[0] == "openvino"]
    assert sorted(k for k in converted if k[0] == "openvino") == sorted(cases)
    for fmt, profile, kind in cases:
        expected = _weight_arrays(stores, profile, kind, every=True)
        graph_def = converted[fmt, profile, kind]
        placeholders = {n.name for n in graph_def.node if n.op == "Placeholder"}
        assert placeholders == {"images", *expected}
        assert max(np.prod(s) for s in _constant_shapes(graph_def)) < 1000  # no weights
        model = ov.Core().read_model(str(exported[fmt, profile, kind].path / "model.xml"))
        assert [i.get_names() for i in model.inputs] == [{"images"}]
        constants = [op.get_data() for op in model.get_ops() if op.get_type_name() == "Constant"]
        for name, array in expected.items():
            found = [c for c in constants if c.shape == array.shape and np.array_equal(c, array)]
            assert found and found[0].dtype == np.float32, name


def test_serving_bytes_answers_png_and_jpeg(exported: dict) -> None:
    from featcache.export import load_model

    model = load_model("savedmodel", exported["savedmodel", "caffe", "finetune"].path)
    assert model.run_bytes is not None
    rng = np.random.default_rng(3)
    small = rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)
    rgb = np.asarray(Image.fromarray(small).resize((40, 30), Image.Resampling.BICUBIC))
    encoded = {}
    for kind in ("PNG", "JPEG"):
        buffer = io.BytesIO()
        Image.fromarray(rgb).save(buffer, kind, quality=95)
        encoded[kind] = buffer.getvalue()
    from_bytes = model.run_bytes([encoded["PNG"], encoded["JPEG"]])
    jpeg_pixels = np.asarray(Image.open(io.BytesIO(encoded["JPEG"])).convert("RGB"))
    assert from_bytes.shape == (2, 2)
    np.testing.assert_allclose(from_bytes[0], model.run(rgb[None])[0], atol=1e-6)
    np.testing.assert_allclose(from_bytes[1], model.run(jpeg_pixels[None])[0], atol=1e-6)


def test_reverify_catches_a_tampered_model(exported: dict, tmp_path: Path) -> None:
    import shutil

    from featcache.export import reverify

    source = exported["onnx", "caffe", "softmax"].path
    copy = tmp_path / "model"
    shutil.copytree(source, copy)
    assert reverify(copy)["passed"]
    onnx_file = copy / "model.onnx"
    data = bytearray(onnx_file.read_bytes())
    middle = len(data) // 2  # inside the weights: the file still loads, the answers change
    data[middle : middle + 64] = bytes(64)
    onnx_file.write_bytes(bytes(data))
    done = subprocess.run(
        [PYTHON, "-m", "featcache", "export-model", "--verify", str(copy)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "model.onnx: SHA-256" in done.stderr and "the file changed" in done.stderr


def test_refuses_an_existing_out_and_bad_format(stores: dict, exported: dict) -> None:
    from featcache.export import ExportConfig, export_model

    with pytest.raises(ConfigError, match="'format' must be one of"):
        ExportConfig(format="tflite")
    out = exported["onnx", "caffe", "softmax"].path
    with pytest.raises(ConfigError, match="already exists; choose another --out"):
        export_model(stores["caffe"], "softmax", stores["weights"], out, ExportConfig("onnx"))
    with pytest.raises(ExportError, match="verification.json"):
        from featcache.export import reverify

        reverify(out.parent)


def test_head_named_as_the_other_commands_name_it(stores: dict, tmp_path: Path) -> None:
    """NAME@N, NAME@promoted and --version, as predict and evaluate take them."""
    from typer.testing import CliRunner

    from featcache.cli import app
    from featcache.export import ExportConfig, export_model

    store = stores["caffe"]
    with pytest.raises(ConfigError, match="say the version once, as softmax@1"):
        export_model(store, "softmax@1", stores["weights"], tmp_path / "a", ExportConfig("onnx"),
                     version=1)  # fmt: skip
    store.promote_head("softmax@1")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(weights_module, "LAYER_SHAPES", NARROW)
        done = CliRunner().invoke(
            app,
            ["export-model", "--store", str(store.path), "--head", "softmax@promoted",
             "--weights", str(stores["weights"]), "--format", "openvino", "--out",
             str(tmp_path / "promoted"), "--sample", "0", "--json"],
        )  # fmt: skip
        assert done.exit_code == 0, done.output
        answer = json.loads(done.stdout)
        assert answer["head"]["name"] == "softmax" and answer["head"]["version"] == 1
        assert answer["passed"] and answer["verification"] == {}
        refused = CliRunner().invoke(
            app,
            ["export-model", "--store", str(store.path), "--head", "softmax", "--version", "2",
             "--weights", str(stores["weights"]), "--out", str(tmp_path / "v2")],
        )  # fmt: skip
    assert refused.exit_code != 0 and "softmax" in refused.output and "2" in refused.output


_KILL_WHILE_WRITING = """
import builtins, io, os, signal, sys
from featcache.extractor import weights
weights.LAYER_SHAPES = {**weights.LAYER_SHAPES, "fc6": (9216, 32), "fc7": (32, 32),
                        "fc8": (32, 1000)}
real_open = builtins.open

class KilledHalfway(io.FileIO):
    def write(self, data):  # half the bytes reach the disk, then the process is killed
        super().write(memoryview(data).cast("B")[: len(data) // 2])
        os.fsync(self.fileno())
        os.kill(os.getpid(), signal.SIGKILL)

def killing_open(file, mode="r", *args, **kwargs):
    if str(file).endswith("model.onnx") and "w" in mode:
        return KilledHalfway(file, "wb")
    return real_open(file, mode, *args, **kwargs)

builtins.open = io.open = killing_open
from featcache.cli import app
app(sys.argv[1:])
"""


def test_a_killed_export_leaves_no_partial_model_file(stores: dict, tmp_path: Path) -> None:
    """An export killed (SIGKILL) with half of model.onnx written: nothing under `out`, no
    file named model.onnx anywhere, only the hidden staging folder, which the next export to
    the same `out` removes."""
    from featcache.export.api import _staging

    out = tmp_path / "model"
    done = subprocess.run(
        [PYTHON, "-c", _KILL_WHILE_WRITING, "export-model", "--store",
         str(stores["caffe"].path), "--head", "softmax", "--weights", str(stores["weights"]),
         "--format", "onnx", "--out", str(out), "--sample", "0"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == -9, done.stderr[-2000:]
    assert not out.exists()
    assert not list(tmp_path.rglob("model.onnx"))
    (staged,) = tmp_path.glob(".model.export-*")
    (half,) = staged.iterdir()  # the partial file, under its temporary name only
    assert half.name.startswith(".tmp-") and half.name.endswith("model.onnx")
    assert half.stat().st_size > 0
    fresh = _staging(out)  # the next export's staging: the dead process's folder is gone
    assert sorted(tmp_path.iterdir()) == [fresh]


def test_a_failed_overwrite_keeps_the_old_model(
    stores: dict, exported: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--overwrite with a disk that fills up while the new OpenVINO files are moved into
    place: the old model stays whole under `out`, and no temporary file or folder is left."""
    import errno
    import os
    import shutil

    from featcache.export import ExportConfig, export_model

    out = tmp_path / "model"
    shutil.copytree(exported["onnx", "caffe", "softmax"].path, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real_replace = os.replace

    def full_disk(source: object, target: object) -> None:
        if str(target).endswith("model.xml"):
            raise OSError(errno.ENOSPC, "No space left on device", str(target))
        real_replace(source, target)  # type: ignore[arg-type]

    monkeypatch.setattr(weights_module, "LAYER_SHAPES", NARROW)
    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError, match="No space left on device"):
        export_model(stores["caffe"], "softmax", stores["weights"], out,
                     ExportConfig("openvino", sample=0, overwrite=True))  # fmt: skip
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
