"""Weights: both layouts, shape checks, refusal of code in pickles, broken files.

Only the tests about the real file's shapes use full-size (244 MB) weights; the others run
the same checks against small layer shapes (`small_shapes`), as the loader reads the
expected shapes from `LAYER_SHAPES` when it runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import SMALL_SHAPES, Evil, Shapes
from featcache.errors import UnsafePickleError, WeightsError
from featcache.extractor.weights import (
    DEMO_MARKER,
    LAYER_SHAPES,
    load_weights,
    read_weights,
    write_demo_weights,
)


def small_layers(**overrides: Any) -> dict[str, Any]:
    """Zero arrays in `SMALL_SHAPES`, some layers replaced by `overrides`."""
    layers: dict[str, Any] = {}
    for name, shape in SMALL_SHAPES.items():
        layers[name] = [np.zeros(shape, np.float32), np.zeros(shape[-1], np.float32)]
    layers.update(overrides)
    return layers


def save_obj(path: Path, obj: Any) -> Path:
    np.save(path, np.array(obj, dtype=object), allow_pickle=True)
    return path


@pytest.mark.slow  # the real shapes are the point: full-size weights
def test_lists_layout_loads_as_float32_with_checked_shapes(weights_path: Path) -> None:
    layers = load_weights(weights_path)
    assert list(layers) == list(LAYER_SHAPES)
    for name, (w, b) in layers.items():
        assert w.shape == LAYER_SHAPES[name] and b.shape == LAYER_SHAPES[name][-1:]
        assert w.dtype == np.float32 and b.dtype == np.float32


def test_demo_weights_say_they_are_random(tmp_path: Path, small_shapes: Shapes) -> None:
    weights = read_weights(write_demo_weights(tmp_path / "demo.npy", seed=3))
    assert weights.is_demo
    assert "random" in (weights.demo_note or "") and "NOT ImageNet" in (weights.demo_note or "")
    assert len(weights.sha256) == 64


def test_dicts_layout_gives_the_same_arrays(tmp_path: Path, small_shapes: Shapes) -> None:
    rng = np.random.default_rng(1)
    lists = {
        name: [rng.standard_normal(s).astype(np.float32), np.arange(s[-1], dtype=np.float32)]
        for name, s in small_shapes.items()
    }
    dicts = {name: {"weights": w, "biases": b} for name, (w, b) in lists.items()}
    a = load_weights(save_obj(tmp_path / "lists.npy", lists))
    b = load_weights(save_obj(tmp_path / "dicts.npy", dicts))
    assert list(a) == list(small_shapes)
    for name in small_shapes:
        np.testing.assert_array_equal(a[name][0], b[name][0])
        np.testing.assert_array_equal(a[name][1], b[name][1])
        np.testing.assert_array_equal(a[name][0], lists[name][0])


@pytest.mark.slow  # the reference script writes full-size weights
def test_reference_script_layout_loads(tmp_path: Path) -> None:
    from conftest import REFERENCE

    script = REFERENCE / "make_random_weights.py"
    if not script.exists():
        pytest.skip("shared/reference is not beside this checkout")
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_random_weights", script)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.make(tmp_path / "ref.npy", 3, "dicts")
    weights = read_weights(tmp_path / "ref.npy")
    assert not weights.is_demo  # only featcache's own demo files carry the marker
    assert weights.layers["fc7"][0].shape == (4096, 4096)


def test_float64_weights_are_converted(tmp_path: Path, small_shapes: Shapes) -> None:
    layers = {n: [w.astype(np.float64), b] for n, (w, b) in small_layers().items()}
    loaded = load_weights(save_obj(tmp_path / "f64.npy", layers))
    assert loaded["conv1"][0].dtype == np.float32


def test_wrong_shape_names_layer_expected_and_found(tmp_path: Path, small_shapes: Shapes) -> None:
    bad = small_layers(conv3=[np.zeros((3, 3, 6, 7), np.float32), np.zeros(7, np.float32)])
    with pytest.raises(
        WeightsError,
        match=r"w\.npy: layer 'conv3' weights has shape \(3, 3, 6, 7\), expected \(3, 3, 6, 8\)",
    ):
        load_weights(save_obj(tmp_path / "w.npy", bad))


def test_wrong_bias_shape(tmp_path: Path, small_shapes: Shapes) -> None:
    bad = small_layers(fc8=[np.zeros((10, 5), np.float32), np.zeros(4, np.float32)])
    with pytest.raises(WeightsError, match=r"'fc8' biases has shape \(4,\), expected \(5,\)"):
        load_weights(save_obj(tmp_path / "w.npy", bad))


def test_missing_layer_is_named(tmp_path: Path, small_shapes: Shapes) -> None:
    layers = small_layers()
    del layers["conv4"]
    with pytest.raises(WeightsError, match=r"missing layer\(s\) \['conv4'\]"):
        load_weights(save_obj(tmp_path / "w.npy", layers))


def test_nan_weights_refused(tmp_path: Path, small_shapes: Shapes) -> None:
    b = np.zeros(4, np.float32)
    b[3] = np.nan
    bad = small_layers(conv1=[np.zeros((3, 3, 3, 4), np.float32), b])
    with pytest.raises(WeightsError, match="'conv1' biases contains NaN"):
        load_weights(save_obj(tmp_path / "w.npy", bad))


def test_pickle_that_runs_code_is_refused_before_it_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = save_obj(tmp_path / "evil.npy", {"conv1": Evil(marker)})
    with pytest.raises(UnsafePickleError, match=r"evil\.npy: refused to load '(posix|os)\.system'"):
        load_weights(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"this is not numpy", "not a .npy file"),
        (None, "plain float32 array"),
    ],
)
def test_not_a_weights_file(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "w.npy"
    if content is None:
        np.save(path, np.zeros((3, 3), np.float32))
    else:
        path.write_bytes(content)
    with pytest.raises(WeightsError, match=message):
        load_weights(path)


def test_truncated_file(tmp_path: Path, small_shapes: Shapes) -> None:
    full = save_obj(tmp_path / "full.npy", small_layers())
    cut = tmp_path / "cut.npy"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(WeightsError, match=r"cut\.npy: the pickled data is truncated or corrupt"):
        load_weights(cut)


def test_missing_file_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="no such weights file.*weights fetch"):
        load_weights(tmp_path / "nope.npy")


def test_not_a_dict(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="expected a dict of layers"):
        load_weights(save_obj(tmp_path / "w.npy", [1, 2]))


def test_demo_weights_are_seeded(tmp_path: Path, small_shapes: Shapes) -> None:
    a = write_demo_weights(tmp_path / "a.npy", seed=5)
    b = write_demo_weights(tmp_path / "b.npy", seed=5, layout="dicts")
    c = write_demo_weights(tmp_path / "c.npy", seed=6)
    wa, wb, wc = read_weights(a), read_weights(b), read_weights(c)
    for name in small_shapes:
        np.testing.assert_array_equal(wa.layers[name][0], wb.layers[name][0])
        np.testing.assert_array_equal(wa.layers[name][1], wb.layers[name][1])
    assert not np.array_equal(wa.layers["conv2"][0], wc.layers["conv2"][0])
    assert wa.sha256 != wc.sha256 and wa.is_demo and "seed=5" in (wa.demo_note or "")
    assert DEMO_MARKER not in wa.layers
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", "b.npy", "c.npy"]  # no temp
