"""The extractor fingerprint: a digest of everything that changes the numbers.

Network, profile, resize policy, weights SHA-256 and precision. Change any of them and the
vectors stored under the old fingerprint are simply not found.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from featcache.errors import ConfigError
from featcache.extractor.alexnet import PRECISIONS
from featcache.extractor.preprocess import check_profile

__all__ = ["FINGERPRINT_VERSION", "ExtractorSpec"]

FINGERPRINT_VERSION = 1


@dataclass(frozen=True)
class ExtractorSpec:
    """What an extractor is; `fingerprint` names its vectors in the store."""

    weights_sha256: str
    profile: str = "caffe"
    resize: str = "squash"
    precision: str = "float32"
    network: str = "alexnet"

    def __post_init__(self) -> None:
        check_profile(self.profile, self.resize)
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"The 'precision' must be one of {list(PRECISIONS)}. Got {self.precision!r}."
            )

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": FINGERPRINT_VERSION,
            "network": self.network,
            "profile": self.profile,
            "resize": self.resize,
            "precision": self.precision,
            "weights_sha256": self.weights_sha256,
        }

    @property
    def fingerprint(self) -> str:
        canonical = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()
