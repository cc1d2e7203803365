"""The OpenVINO runtime: fidelity to TensorFlow, the converted-model cache, install hints.

Networks here use the session's seeded RANDOM weights. A conversion takes seconds (and
the TensorFlow reference more), so the tests share one converted store where they can.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import publish_runtime_model, write_images
from featcache.errors import ConfigError
from featcache.extractor.fingerprint import ExtractorSpec
from featcache.extractor.pipeline import ExtractConfig, extract
from featcache.extractor.weights import Weights, file_sha256
from featcache.store import FeatureStore, RuntimeFiles, RuntimeModel

LAYERS = ("pool5", "fc6", "fc7", "fc8")


def _batch(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 60, (count, 227, 227, 3)).astype(np.float32)


def _relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """The worst row's ||a - b|| / ||b||."""
    return float((np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)).max())


# -- without OpenVINO, and what the fingerprint says -------------------------------------------


def test_without_openvino_the_runtime_says_how_to_install(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "sys.modules['openvino'] = None  # as if it were not installed\n"
        "from featcache.errors import DependencyError\n"
        "from featcache.extractor.pipeline import ExtractConfig, extract\n"
        "try:\n"
        "    extract('no-data', 'no-weights', None, config=ExtractConfig(runtime='openvino'))\n"
        "except DependencyError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert 'pip install "featcache[openvino]"' in done.stdout
    cli = (
        "import sys\n"
        "sys.modules['openvino'] = None\n"
        "from featcache.cli import main\n"
        f"sys.argv = ['featcache', 'extract', {str(tmp_path)!r}, '--store', "
        f"{str(tmp_path / 's')!r}, '--weights', 'w.npy', '--runtime', 'openvino']\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", cli], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "featcache[openvino]" in done.stderr and "Traceback" not in done.stderr


def test_runtime_joins_the_fingerprint_only_in_reduced_precision() -> None:
    digest = "0" * 64
    tf32 = ExtractorSpec(digest, precision="float32")
    ov32 = ExtractorSpec(digest, precision="float32", runtime="openvino")
    tf16 = ExtractorSpec(digest, precision="bf16")
    ov16 = ExtractorSpec(digest, precision="bf16", runtime="openvino")
    assert ov32.fingerprint == tf32.fingerprint  # the same numbers within 1e-5: one cache
    assert ov16.fingerprint != tf16.fingerprint != tf32.fingerprint
    assert ov16.as_dict()["runtime"] == "openvino" and "runtime" not in tf16.as_dict()
    with pytest.raises(ConfigError, match="'fp16' is not available with runtime 'openvino'"):
        ExtractConfig(runtime="openvino", precision="fp16")
    with pytest.raises(ConfigError, match="The 'runtime' must be one of"):
        ExtractConfig(runtime="onnx")


# -- the runtime-model cache of the store (no OpenVINO needed) ---------------------------------


def _publish(files: RuntimeFiles, fingerprint: str = "f" * 64) -> Path:
    return publish_runtime_model(files, fingerprint, kib=16)


def test_runtime_models_are_published_whole_checked_and_collected(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path / "store")
    files = store.runtime_models
    folder = _publish(files)
    assert folder == tmp_path / "store" / "runtimes" / ("f" * 16) / "openvino-fc7-float32"
    model = files.find("f" * 64, "openvino-fc7-float32")
    assert model is not None and model.meta == {"note": "x"} and not files.check(model)
    report = store.verify()
    assert report.ok and report.runtime_models == 1

    data = (folder / "model.bin").read_bytes()
    (folder / "model.bin").write_bytes(data[:100])  # truncated
    problems = store.verify().problems
    assert len(problems) == 1 and "model.bin" in problems[0] and "does not match" in problems[0]
    (folder / "model.bin").write_bytes(data[:-1] + b"\x00")  # same size, one byte changed
    assert not store.verify().ok

    (folder.parent / ".tmp-123-abc-openvino-fc7-bf16").mkdir()  # an interrupted conversion
    assert any("interrupted conversion" in p for p in store.verify().problems)
    assert store.gc(grace_seconds=3600).runtime_models_removed == 0  # too young
    gone = store.gc(grace_seconds=0)  # no vectors for fingerprint f...: stale
    assert gone.runtime_models_removed == 2 and gone.bytes_freed >= 100
    assert not any(files.folders()) and store.verify().ok


def test_unchanged_model_files_are_not_hashed_again_but_verify_always_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from featcache.store import runtime_files

    files = RuntimeFiles.in_store(tmp_path)
    folder = _publish(files)
    model = files.find("f" * 64, "openvino-fc7-float32")
    assert model is not None
    hashed: list[str] = []
    real = runtime_files.file_sha256
    monkeypatch.setattr(runtime_files, "file_sha256", lambda p: hashed.append(p.name) or real(p))
    assert files.check(model) == [] and hashed == []  # hashed when published: trusted as is
    assert files.check(model, rehash=True) == [] and sorted(hashed) == ["model.bin", "model.xml"]

    binary = folder / "model.bin"
    data = binary.read_bytes()
    binary.write_bytes(data[:-1] + b"\x01")  # same size, new mtime: hashed, found
    hashed.clear()
    assert "model.bin" in files.check(model)[0] and hashed == ["model.bin", "model.xml"]
    binary.write_bytes(data)  # put back: sound again, and trusted from then on
    assert files.check(model) == [] and files.check(model) == []
    # An edit that restores size and mtime is caught too: it changed the ctime, which no
    # user can set back (50 ms: past the kernel's coarse clock tick of the last stamp).
    time.sleep(0.05)
    stat = binary.stat()
    with open(binary, "r+b") as f:
        f.write(b"\xff")
    os.utime(binary, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert "does not match" in files.check(model)[0]
    # and so is one whose author also rewrote checked.json with the new stamps: unsigned
    stamps = {
        name: [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        for name in ("model.bin", "model.xml")
        for st in [(folder / name).stat()]
    }
    for forged in ({"stamps": stamps, "mac": "0" * 64}, stamps):  # and the old format
        (folder / "checked.json").write_text(json.dumps(forged))
        hashed.clear()
        assert "does not match" in files.check(model)[0] and "model.bin" in hashed


def test_a_concurrent_publication_keeps_the_first(tmp_path: Path) -> None:
    files = RuntimeFiles.in_store(tmp_path)
    first = _publish(files)
    before = (first / "manifest.json").read_text()
    assert _publish(files) == first and (first / "manifest.json").read_text() == before
    assert [f.name for _, f, _ in files.folders()] == ["openvino-fc7-float32"]


# -- OpenVINO itself (each conversion imports TensorFlow) --------------------------------------

needs_openvino = pytest.mark.skipif(
    importlib.util.find_spec("openvino") is None, reason='pip install "featcache[openvino]"'
)


def _skip_without_bf16() -> None:
    from featcache.extractor.runtime_openvino import has_bf16, require_openvino

    if not has_bf16(require_openvino().Core()):
        pytest.skip("this CPU has no BF16 for OpenVINO")


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory, weights_path: Path) -> Path:
    """A store holding OpenVINO's float32 caffe model for pool5..fc8 (converted once)."""
    root = tmp_path_factory.mktemp("ov")
    write_images(root / "data", 3)
    config = ExtractConfig(runtime="openvino", layers=LAYERS)
    report = extract(root / "data", weights_path, root / "store", config=config)
    assert report.extracted == 3
    return root


def _model_folder(store: Path, weights: Weights) -> Path:
    """The folder of the float32 caffe model for LAYERS (the `converted` fixture's)."""
    from featcache.extractor.runtime_openvino import model_name

    fingerprint = ExtractorSpec(weights.sha256).fingerprint
    return RuntimeFiles.in_store(store).folder(fingerprint, model_name(LAYERS, "float32"))


@pytest.mark.slow
@needs_openvino
@pytest.mark.parametrize("profile", ["caffe", "udacity"])
def test_float32_equals_tensorflow_at_every_layer(
    profile: str, converted: Path, weights: Weights
) -> None:
    from featcache.extractor.alexnet import AlexNet
    from featcache.extractor.runtime_openvino import OpenVINONetwork

    spec = ExtractorSpec(weights.sha256, profile, runtime="openvino")
    network = OpenVINONetwork(spec, weights, FeatureStore(converted / "store").runtime_models)
    batch = _batch(5)  # not a multiple of the request size: the last request is padded
    ours = network.forward(batch, LAYERS)
    assert network.conversions == ([] if profile == "caffe" else [LAYERS])
    reference = AlexNet(weights.layers, profile).forward(batch, LAYERS)
    for layer in LAYERS:
        assert ours[layer].dtype == np.float32 and ours[layer].shape == reference[layer].shape
        assert _relative_error(ours[layer], reference[layer]) < 1e-5, layer
    fc7 = network.forward(batch[:2], ("fc7",))["fc7"]  # a subset: the same model serves it
    assert _relative_error(fc7, reference["fc7"][:2]) < 1e-5
    assert len(network.conversions) <= 1
    network.close()  # a converted model is saved in the background


@pytest.mark.slow
@needs_openvino
def test_cached_model_is_used_without_tensorflow(
    converted: Path, weights_path: Path, weights: Weights
) -> None:
    before = (_model_folder(converted / "store", weights) / "manifest.json").read_text()
    write_images(converted / "more", 2, seed=7)
    code = (
        "import json, sys\n"
        "from featcache.extractor.pipeline import ExtractConfig, extract\n"
        f"config = ExtractConfig(runtime='openvino', layers={LAYERS!r})\n"
        f"r = extract({str(converted / 'more')!r}, {str(weights_path)!r}, "
        f"{str(converted / 'store')!r}, config=config)\n"
        "print(json.dumps({'tensorflow': 'tensorflow' in sys.modules, 'extracted': "
        "r.extracted, 'note': r.weights_note, 'read_weights': r.timings['load_weights']}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["tensorflow"] is False and result["extracted"] == 2
    assert "random" in result["note"]  # the converted model remembers what its weights were
    assert (_model_folder(converted / "store", weights) / "manifest.json").read_text() == before


@pytest.mark.slow
@needs_openvino
@pytest.mark.parametrize("damage", ["truncated", "changed"])
def test_a_damaged_model_is_detected_and_rebuilt(
    damage: str, converted: Path, weights: Weights, tmp_path: Path
) -> None:
    from featcache.extractor.runtime_openvino import OpenVINONetwork

    shutil.copytree(converted / "store", tmp_path / "store")
    store = FeatureStore(tmp_path / "store")
    binary = _model_folder(tmp_path / "store", weights) / "model.bin"
    if damage == "truncated":
        with open(binary, "r+b") as f:
            f.truncate(binary.stat().st_size // 2)
    else:
        with open(binary, "r+b") as f:
            f.seek(binary.stat().st_size // 2)
            f.write(b"\x7f\x7f\x7f\x7f")  # one float of fc6 becomes 3.4e38
    assert any("model.bin" in p for p in store.verify().problems)

    spec = ExtractorSpec(weights.sha256, runtime="openvino")
    network = OpenVINONetwork(spec, weights, store.runtime_models)
    out = network.forward(_batch(2), LAYERS)
    assert network.rebuilt and network.conversions == [LAYERS]
    assert np.isfinite(out["fc7"]).all()
    network.close()
    assert store.verify().ok


@pytest.mark.slow
@needs_openvino
def test_bf16_is_close_to_float32_and_converted_for_itself(
    converted: Path, weights: Weights
) -> None:
    from featcache.extractor.runtime_openvino import OpenVINONetwork

    _skip_without_bf16()
    cache = FeatureStore(converted / "store").runtime_models
    spec32 = ExtractorSpec(weights.sha256, runtime="openvino")
    spec16 = ExtractorSpec(weights.sha256, precision="bf16", runtime="openvino")
    batch = _batch(8, seed=3)
    float32 = OpenVINONetwork(spec32, weights, cache).forward(batch, LAYERS)
    bf16_network = OpenVINONetwork(spec16, weights, cache)
    bf16 = bf16_network.forward(batch, LAYERS)
    bf16_network.close()
    assert bf16_network.conversions == [LAYERS]  # a new fingerprint: its own model
    assert bf16_network.config["INFERENCE_PRECISION_HINT"] == "bf16"
    for layer in LAYERS:
        a, b = float32[layer], bf16[layer]
        cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        assert cosine.mean() >= 0.999, (layer, cosine)
    assert not np.array_equal(float32["fc7"], bf16["fc7"])  # bf16 really ran


@pytest.mark.slow
@needs_openvino
def test_other_weights_get_their_own_model_never_the_cached_one(
    converted: Path, weights: Weights, tmp_path: Path
) -> None:
    """A model is found by fingerprint: weights that differ (here only fc8's biases) and
    another profile each convert their own, and compute their own numbers."""
    from featcache.extractor.runtime_openvino import OpenVINONetwork

    cache = FeatureStore(tmp_path / "store").runtime_models
    fixture_model = _model_folder(converted / "store", weights)  # only the caffe one
    shutil.copytree(fixture_model, cache.root / fixture_model.relative_to(fixture_model.parents[1]))
    layers = dict(weights.layers)
    w8, b8 = layers["fc8"]
    layers["fc8"] = (w8, b8 + 1.0)
    other = Weights(path=weights.path, layers=layers, sha256="b" * 64, demo_note="random")
    batch = _batch(2, seed=5)
    cached = OpenVINONetwork(ExtractorSpec(weights.sha256, runtime="openvino"), weights, cache)
    reference = cached.forward(batch, LAYERS)
    assert cached.conversions == []  # the fixture's model
    for spec, source in (
        (ExtractorSpec(other.sha256, runtime="openvino"), other),
        (ExtractorSpec(weights.sha256, "udacity", runtime="openvino"), weights),
    ):
        network = OpenVINONetwork(spec, source, cache)
        result = network.forward(batch, LAYERS)
        network.close()
        assert network.conversions == [LAYERS], spec
        assert not np.array_equal(result["fc8"], reference["fc8"])
    np.testing.assert_allclose(result["fc8"], _tf_udacity(weights, batch), rtol=1e-4, atol=1e-3)
    assert len(list((tmp_path / "store" / "runtimes").rglob("manifest.json"))) == 3


def _tf_udacity(weights: Weights, batch: np.ndarray) -> np.ndarray:
    from featcache.extractor.alexnet import AlexNet

    return AlexNet(weights.layers, "udacity").forward(batch, ("fc8",))["fc8"]


@pytest.mark.slow
@needs_openvino
def test_bf16_head_accuracy_on_digits_matches_float32(
    converted: Path, weights_path: Path, tmp_path: Path
) -> None:
    from featcache.classifier.heads import SoftmaxHead
    from featcache.data import write_digits_folder

    _skip_without_bf16()
    digits = write_digits_folder(tmp_path / "digits", limit=1000)  # 200 test images
    accuracy, vectors = {}, {}
    store = FeatureStore(converted / "store")  # its models (bf16's too, once converted)
    for precision in ("float32", "bf16"):
        config = ExtractConfig(runtime="openvino", precision=precision, layers=LAYERS)
        report = extract(digits, weights_path, store, config=config, dataset=precision)
        data = store.vectors(precision, "fc7", fingerprint=report.fingerprint)
        train = np.array([s == "train" for s in data.splits])
        head = SoftmaxHead(random_state=0).fit(data.X[train], data.y[train])
        accuracy[precision] = 100 * float((head.predict(data.X[~train]) == data.y[~train]).mean())
        vectors[precision] = data.X
    a, b = vectors["float32"], vectors["bf16"]
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cosine.mean() >= 0.999
    assert abs(accuracy["float32"] - accuracy["bf16"]) <= 0.5, accuracy


@pytest.mark.slow
@needs_openvino
def test_predict_extracts_with_a_model_converted_for_more_layers(
    converted: Path, weights_path: Path
) -> None:
    from featcache.classifier.train import train_head
    from featcache.predictor import Predictor

    write_images(converted / "signs", 12, seed=11, classes=("stop", "yield"))
    store = FeatureStore(converted / "store")
    config = ExtractConfig(runtime="openvino", layers=LAYERS)
    extract(converted / "signs", weights_path, store, config=config, dataset="signs")
    train_head(store, "signs", name="signs", params={"random_state": 0})  # on fc7
    (new,) = write_images(converted / "new", 1, seed=12)
    before = sorted(f.name for _, f, _ in store.runtime_models.folders())
    predictor = Predictor(store, "signs", weights=weights_path, runtime="openvino", top_k=2)
    (result,) = predictor.predict([new])
    assert result.error is None and not result.cached and len(result.predictions) == 2
    # The fc7 head's extraction used the pool5..fc8 model: nothing converted again.
    assert sorted(f.name for _, f, _ in store.runtime_models.folders()) == before


# -- runtime models are bound to this user's key -----------------------------------------------


def _lie(folder: Path) -> None:
    """Change one float of fc6 in model.bin and rewrite the manifest with the new file's
    digest: a self-consistent model that computes wrong numbers for this fingerprint."""
    binary = folder / "model.bin"
    with open(binary, "r+b") as f:
        f.seek(binary.stat().st_size // 2)
        f.write(b"\x00\x00\x80\x7f")  # +inf
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["model.bin"] = file_sha256(binary)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "checked.json").unlink()


@pytest.mark.slow
@needs_openvino
def test_a_self_consistent_lying_model_is_never_used(
    converted: Path, weights: Weights, tmp_path: Path
) -> None:
    """Unsigned manifests are refused the same way (test_hostile_store, stand-in models)."""
    from featcache.extractor.runtime_openvino import OpenVINONetwork

    spec = ExtractorSpec(weights.sha256, runtime="openvino")
    batch = _batch(2, seed=5)
    honest = OpenVINONetwork(spec, weights, FeatureStore(converted / "store").runtime_models)
    expected = honest.forward(batch, LAYERS)
    assert honest.conversions == []
    shutil.copytree(converted / "store", tmp_path / "store")
    store = FeatureStore(tmp_path / "store")
    folder = _model_folder(tmp_path / "store", weights)
    _lie(folder)
    assert not store.runtime_models.check(
        RuntimeModel(folder, spec.fingerprint, folder.name, _files(folder), {})
    )  # the digests alone are consistent: only the signature tells
    whose = "does not match its signature"
    assert any(whose in p and str(folder) in p for p in store.verify().problems)

    network = OpenVINONetwork(spec, weights, store.runtime_models)
    out = network.forward(batch, LAYERS)
    network.close()
    assert network.conversions == [LAYERS] and whose in network.rebuilt[0]
    for layer in LAYERS:
        np.testing.assert_array_equal(out[layer], expected[layer])
    assert store.verify().ok  # converted again here, and signed


def _files(folder: Path) -> dict[str, str]:
    manifest = json.loads((folder / "manifest.json").read_text())
    return dict(manifest["files"])


@pytest.mark.slow
@needs_openvino
def test_a_store_copied_to_another_user_converts_once_for_them(
    converted: Path, weights: Weights, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from featcache.extractor.runtime_openvino import OpenVINONetwork

    spec = ExtractorSpec(weights.sha256, runtime="openvino")
    batch = _batch(3, seed=6)
    mine = OpenVINONetwork(spec, weights, FeatureStore(converted / "store").runtime_models)
    expected = mine.forward(batch, LAYERS)
    shutil.copytree(converted / "store", tmp_path / "store")
    monkeypatch.setenv("FEATCACHE_KEY_FILE", str(tmp_path / "other-user" / "local.key"))
    store = FeatureStore(tmp_path / "store")
    assert any("signed with another key" in p for p in store.verify().problems)
    theirs = OpenVINONetwork(spec, weights, store.runtime_models)
    out = theirs.forward(batch, LAYERS)
    theirs.close()
    assert theirs.conversions == [LAYERS] and "signed with another key" in theirs.rebuilt[0]
    again = OpenVINONetwork(spec, weights, store.runtime_models)  # bound to them now
    assert again.forward(batch, LAYERS)["fc7"].shape == (3, 4096) and again.conversions == []
    for layer in LAYERS:
        np.testing.assert_array_equal(out[layer], expected[layer])
    # the models of the copy this user did not use (other tests' conversions) stay foreign
    problems = store.verify().problems
    assert all("signed with another key" in p for p in problems)
    assert not any(str(_model_folder(tmp_path / "store", weights)) in p for p in problems)
    assert (tmp_path / "other-user" / "local.key").stat().st_mode & 0o777 == 0o600
