"""Rounding to float16 inside an exported graph, in float32 arithmetic every runtime keeps.

A head trained on vectors stored as float16 is answered by predict from those rounded
vectors, so the exported graph rounds them too. The obvious ``cast(cast(x, float16),
float32)`` does not survive export: tf2onnx's optimizer merges the two casts as if float16
lost nothing, and OpenVINO's CPU plugin, running in f32, turns every f16 into f32 when it
compiles the model; both then answered from unrounded vectors and differed from predict by up
to 1.7e-4 (a fine-tuned udacity head on pool5, seeded random weights). Here the rounding is
written as the ops it is, each exact in float32: the value's binary exponent (a float32
estimate from the logarithm, corrected against exact powers of two), float16's spacing at
that exponent, and ``round(|x| / spacing) * spacing`` with round-half-to-even (TensorFlow's
``Round``, ONNX ``Round``, OpenVINO ``Round`` half-to-even), the sign put back. The result
equals NumPy's ``x.astype(float16)`` bit for bit for ``|x| < 65520`` (what rounds to at most
float16's largest value, 65504), subnormals and zero included; from 65520 on float16 has
infinity where this has 65536 or more.
"""

from __future__ import annotations

import math
from typing import Any, Final

__all__ = ["round_to_float16"]

_MIN_EXPONENT: Final = -14  # float16's smallest normal exponent; subnormals share its spacing
_MAX_EXPONENT: Final = 15
_MANTISSA_BITS: Final = 10


def round_to_float16(tf: Any, x: Any) -> Any:
    """The float32 tensor `x` rounded to the nearest float16 values (ties to even), as
    float32 (TensorFlow ops)."""
    magnitude = tf.abs(x)
    powers = tf.constant(
        [2.0**k for k in range(_MIN_EXPONENT, _MAX_EXPONENT + 1)], tf.float32
    )  # index: exponent - _MIN_EXPONENT
    # log(0) is -inf: clipped to the smallest exponent, whose spacing zero rounds to zero on.
    estimate = tf.floor(tf.math.log(magnitude) * (1.0 / math.log(2.0)))
    exponent = tf.cast(tf.clip_by_value(estimate, _MIN_EXPONENT, _MAX_EXPONENT), tf.int32)
    # The logarithm may be off by one next to a power of two: compare with the exact powers.
    power = tf.gather(powers, exponent - _MIN_EXPONENT)
    exponent = exponent - tf.cast(magnitude < power, tf.int32)
    exponent = exponent + tf.cast(magnitude >= 2.0 * power, tf.int32)
    exponent = tf.clip_by_value(exponent, _MIN_EXPONENT, _MAX_EXPONENT)
    spacing = tf.gather(powers, exponent - _MIN_EXPONENT) * 2.0**-_MANTISSA_BITS
    return tf.sign(x) * (tf.round(magnitude / spacing) * spacing)
