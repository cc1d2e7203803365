"""round_to_float16 equals NumPy's float16 rounding bit for bit in TensorFlow and after
conversion to ONNX (onnxruntime) and OpenVINO, ties and subnormals included."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def _values() -> np.ndarray:
    finite = np.arange(0, 0x7C00, dtype=np.uint16).view(np.float16).astype(np.float32)
    ties = (finite[:-1] + finite[1:]) / 2  # exact in float32: float16 has 11 bits
    rng = np.random.default_rng(0)
    spread = np.exp(rng.uniform(np.log(1e-9), np.log(65000.0), 20000)).astype(np.float32)
    near = np.concatenate(
        [np.nextafter(ties, np.float32(np.inf)), np.nextafter(ties, np.float32(0)), finite]
    )
    values = np.concatenate([ties, near, spread, np.float32([0.0, 65504.0, 65519.0, 65520.0])])
    return np.concatenate([values, -values[::7]]).astype(np.float32)


def _tensorflow() -> Callable[[np.ndarray], np.ndarray]:
    import tensorflow as tf

    from featcache.export.float16 import round_to_float16

    return lambda x: round_to_float16(tf, tf.constant(x)).numpy()


def _frozen() -> Any:
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    from featcache.export.float16 import round_to_float16

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def rounded(x: Any) -> Any:
        return round_to_float16(tf, x)

    return convert_variables_to_constants_v2(rounded.get_concrete_function())


def _onnx() -> Callable[[np.ndarray], np.ndarray]:
    import onnxruntime as ort
    import tf2onnx

    frozen = _frozen()
    model, _ = tf2onnx.convert.from_graph_def(
        frozen.graph.as_graph_def(),
        input_names=[frozen.inputs[0].name],
        output_names=[frozen.outputs[0].name],
        opset=17,
    )
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def _openvino() -> Callable[[np.ndarray], np.ndarray]:
    from featcache._openvino import import_openvino

    ov = import_openvino("this test", "export")
    graph = _frozen().graph.as_graph_def()
    compiled = ov.Core().compile_model(
        ov.convert_model(graph), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    return lambda x: np.asarray(compiled(x)[0])


@pytest.mark.parametrize("runtime", [_tensorflow, _onnx, _openvino], ids=lambda f: f.__name__[1:])
def test_round_to_float16_is_numpys(
    runtime: Callable[[], Callable[[np.ndarray], np.ndarray]],
) -> None:
    values = _values()
    with np.errstate(over="ignore"):  # 65520 rounds to float16's infinity
        expected = values.astype(np.float16).astype(np.float32)
    got = runtime()(values)
    assert got.dtype == np.float32 and got.shape == values.shape
    finite = np.abs(values) < 65520  # rounds to at most 65504
    wrong = np.flatnonzero(got[finite].view(np.uint32) != expected[finite].view(np.uint32))
    assert wrong.size == 0, [
        (values[finite][i], got[finite][i], expected[finite][i]) for i in wrong[:5]
    ]
    # Past float16's largest value, float16 has infinity; the graph keeps a finite 65536.
    assert got[values == 65520.0][0] == 65536.0 and np.isinf(expected[values == 65520.0][0])
