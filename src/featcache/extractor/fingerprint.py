"""The extractor fingerprint: a digest of everything that changes the numbers.

Network (the backbone's registry name), profile, resize policy, weights SHA-256 and
precision. AlexNet's specs hash exactly as before the registry existed. Change any of them and the
vectors stored under the old fingerprint are simply not found.

The runtime counts only in reduced precision. In float32, OpenVINO's vectors equal
TensorFlow's within 1e-5 relative at every layer (tests/test_openvino.py), ten times closer
than each profile is held to its reference (1e-4): they are the same numbers, so both
runtimes share one cache and a head trained on either serves both. In bf16 each runtime
rounds where it likes (OpenVINO runs LRN in bf16, TensorFlow keeps it in float32): their
fc7 agree to a cosine of 0.99999, about 0.5% relative, far from the 1e-5 that lets float32
share, so there ``runtime`` joins the fingerprint.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from featcache.errors import ConfigError
from featcache.extractor.alexnet import PRECISIONS
from featcache.extractor.preprocess import check_profile
from featcache.extractor.registry import backbone_named

__all__ = ["FINGERPRINT_VERSION", "RUNTIMES", "ExtractorSpec", "check_runtime"]

FINGERPRINT_VERSION = 1
#: TensorFlow builds the network and is the reference; OpenVINO runs it converted.
RUNTIMES = ("tensorflow", "openvino")
_OPENVINO_PRECISIONS = ("float32", "bf16")


def check_runtime(runtime: str, precision: str = "float32") -> None:
    """Raise `ConfigError` for an unknown runtime, or a precision the runtime cannot run."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"The 'runtime' must be one of {list(RUNTIMES)}. Got {runtime!r}.")
    if runtime == "openvino" and precision not in _OPENVINO_PRECISIONS:
        raise ConfigError(
            f"The 'precision' {precision!r} is not available with runtime 'openvino' (CPU): "
            f"use one of {list(_OPENVINO_PRECISIONS)}, or runtime 'tensorflow' on a GPU."
        )


@dataclass(frozen=True)
class ExtractorSpec:
    """What an extractor is; `fingerprint` names its vectors in the store."""

    weights_sha256: str
    profile: str = "caffe"
    resize: str = "squash"
    precision: str = "float32"
    network: str = "alexnet"
    runtime: str = "tensorflow"

    def __post_init__(self) -> None:
        check_profile(self.profile, self.resize)
        backbone_named(self.network).check_profile(self.profile)
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"The 'precision' must be one of {list(PRECISIONS)}. Got {self.precision!r}."
            )
        check_runtime(self.runtime, self.precision)

    @property
    def runtime_in_fingerprint(self) -> bool:
        """Whether the runtime changes the numbers: a non-reference runtime, reduced precision."""
        return self.runtime != "tensorflow" and self.precision != "float32"

    def as_dict(self) -> dict[str, Any]:
        spec = {
            "version": FINGERPRINT_VERSION,
            "network": self.network,
            "profile": self.profile,
            "resize": self.resize,
            "precision": self.precision,
            "weights_sha256": self.weights_sha256,
        }
        if self.runtime_in_fingerprint:
            spec["runtime"] = self.runtime
        return spec

    @property
    def fingerprint(self) -> str:
        canonical = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()
