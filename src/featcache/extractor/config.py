"""`ExtractConfig`: how to extract, every field checked before any file is touched."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from featcache.data.decode import DEFAULT_MAX_PIXELS
from featcache.data.source import DEFAULT_MAX_FILE_BYTES
from featcache.errors import ConfigError
from featcache.extractor.alexnet import PRECISIONS
from featcache.extractor.fingerprint import ExtractorSpec, check_runtime
from featcache.extractor.preprocess import check_profile
from featcache.extractor.ray_connect import check_address
from featcache.extractor.registry import DEFAULT_BACKBONE, Backbone, backbone_named, backbone_names
from featcache.store import STORAGE_DTYPES

__all__ = ["AUTO_BATCH_SIZE", "ENGINES", "OPENVINO_BATCH_SIZE", "ExtractConfig", "storage_dtype"]

ENGINES: Final = ("local", "ray")
#: Measured on the CPU (2 cores, AMX): bf16 gains 8% from 64 to 128, float32 nothing.
AUTO_BATCH_SIZE: Final = {"float32": 64, "bf16": 128, "fp16": 128}
#: OpenVINO: two requests of 32 per batch, one per stream (runtime_openvino.REQUEST_BATCH).
OPENVINO_BATCH_SIZE: Final = 64


def storage_dtype(dtype: str, layer: str) -> str:
    """How `layer`'s vectors are stored: `dtype`, or with "auto" float16 for the large maps
    a backbone names (AlexNet's pool5: 18 KB an image instead of 37, for fine-tuning) and
    float32 for the rest."""
    if dtype != "auto":
        return dtype
    large = {name for b in map(backbone_named, backbone_names()) for name in b.storage_float16}
    return "float16" if layer in large else "float32"


def _positive_int(name: str, value: object, *, allow_zero: bool = False) -> None:
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        auto = " (or 0: auto)" if allow_zero else ""
        raise ConfigError(f"The '{name}' must be an integer >= 1{auto}. Got {value!r}.")


def _one_of(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"The '{name}' must be one of {list(allowed)}. Got {value!r}.")


@dataclass(frozen=True)
class ExtractConfig:
    """How to extract: backbone, profile and wiring, layers, batching, storage dtype, limits,
    engine.

    `backbone` names a network of the registry (`featcache.extractor.registry`: "alexnet",
    "vgg16", "resnet50"); `layers` are its layer names, () meaning its default layer.

    `runtime` is "tensorflow" (the reference) or "openvino" (``pip install
    "featcache[openvino]"``). `batch_size` 0 picks what suits the runtime and precision
    (`AUTO_BATCH_SIZE`, `OPENVINO_BATCH_SIZE`). `workers` is the
    number of decoding threads (local engine) or actors (Ray). With ``engine="ray"``:
    `ray_address` names the cluster (``"auto"``, ``"HOST:PORT"``, or None to start Ray
    here; ``ray://`` is refused, see `featcache.extractor.ray_connect`), `ray_max_retries`
    bounds the retries of a batch whose worker died, `ray_timeout` the seconds allowed for
    connecting, and `ray_verbose` puts Ray's own messages on the terminal instead of the
    store's run log. `rehash` hashes every input file again instead of trusting the store's
    record of files unchanged since they were hashed (`featcache.extractor.keys`).
    """

    profile: str = "caffe"
    resize: str = "squash"
    precision: str = "float32"
    layers: tuple[str, ...] = ()  # (): the backbone's default layer (AlexNet's fc7)
    batch_size: int = 0
    dtype: str = "auto"
    workers: int = 2
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    engine: str = "local"
    ray_address: str | None = None
    ray_max_retries: int = 3
    ray_timeout: float = 30.0
    ray_verbose: bool = False
    runtime: str = "tensorflow"
    backbone: str = DEFAULT_BACKBONE
    rehash: bool = False

    def __post_init__(self) -> None:
        network = backbone_named(self.backbone)
        check_profile(self.profile, self.resize)
        network.check_profile(self.profile)
        _one_of("precision", self.precision, PRECISIONS)
        check_runtime(self.runtime, self.precision)
        if isinstance(self.layers, str):  # ("fc7") is a string, not a tuple: say so
            raise ConfigError(
                f"The 'layers' must be a sequence of layer names, e.g. ('fc7',). "
                f"Got the string {self.layers!r}."
            )
        layers = self.layers or (network.default_layer,)
        object.__setattr__(self, "layers", network.check_layers(layers))
        cuts = [name for name in self.layers if name in network.cuts]
        if cuts and self.runtime != "tensorflow":
            raise ConfigError(
                f"The layers {cuts} are extracted by the 'tensorflow' runtime only (the "
                f"{self.runtime!r} model ends at pool5 and above); extract them with "
                "--runtime tensorflow."
            )
        _positive_int("batch_size", self.batch_size, allow_zero=True)
        if self.batch_size == 0:
            auto = AUTO_BATCH_SIZE[self.precision]
            object.__setattr__(
                self, "batch_size", OPENVINO_BATCH_SIZE if self.runtime == "openvino" else auto
            )
        _one_of("dtype", self.dtype, ("auto", *STORAGE_DTYPES))
        _positive_int("workers", self.workers)
        _positive_int("max_pixels", self.max_pixels)
        _positive_int("max_file_bytes", self.max_file_bytes)
        _one_of("engine", self.engine, ENGINES)
        if self.ray_address is not None and self.engine != "ray":
            raise ConfigError(
                f"The 'ray_address' ({self.ray_address!r}) is only used with engine='ray'; "
                f"set engine='ray' or drop it. Got engine={self.engine!r}."
            )
        object.__setattr__(self, "ray_address", check_address(self.ray_address))
        retries = self.ray_max_retries
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ConfigError(f"The 'ray_max_retries' must be an integer >= 0. Got {retries!r}.")
        if isinstance(self.ray_timeout, bool) or not (
            isinstance(self.ray_timeout, int | float) and self.ray_timeout > 0
        ):
            raise ConfigError(f"The 'ray_timeout' must be > 0 seconds. Got {self.ray_timeout!r}.")

    @property
    def network(self) -> Backbone:
        """The registry entry of `backbone` (layers, input size, preprocessing, weights)."""
        return backbone_named(self.backbone)

    @property
    def input_size(self) -> int:
        return self.network.input_size

    def storage_dtype(self, layer: str) -> str:
        """How `layer`'s vectors are stored (`dtype`; "auto": float16 for the cuts)."""
        return storage_dtype(self.dtype, layer)

    def spec(self, weights_sha256: str) -> ExtractorSpec:
        """The extractor these settings and weights make (its fingerprint keys the vectors)."""
        return ExtractorSpec(
            weights_sha256,
            self.profile,
            self.resize,
            self.precision,
            network=self.backbone,
            runtime=self.runtime,
        )
