"""The backbone registry: every network featcache can extract with, one entry each.

Modelled on timm's ``@register_model``: a backbone is one `Backbone` value (its layers and
their vector lengths, input size, preprocessing, weights file and reader, TensorFlow builder,
OpenVINO graph), registered by the module that defines it; `backbone_named` and
`backbone_names` are the whole public face. Nothing else in featcache branches on a
network's name: a new network is one new module and one line in `_ENTRY_MODULES`.

An entry's module is imported on its first lookup, never when this module is imported,
and none of them imports TensorFlow until a network is built.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from featcache.errors import ConfigError

if TYPE_CHECKING:
    from featcache.extractor.weights import Weights

__all__ = [
    "DEFAULT_BACKBONE",
    "Backbone",
    "backbone_named",
    "backbone_names",
    "check_backbone",
    "read_backbone_weights",
    "recognise_weights",
    "register_backbone",
]

DEFAULT_BACKBONE: Final = "alexnet"
#: The built-in backbones, in the order they are listed, and the module registering each.
_ENTRY_MODULES: Final = {
    "alexnet": "featcache.extractor.alexnet_entry",
    "vgg16": "featcache.extractor.vgg16",
    "resnet50": "featcache.extractor.resnet50",
}
_REGISTRY: dict[str, Backbone] = {}

#: (layers {name: (W, b)}, profile, precision) → a TensorFlow network with ``forward``
TensorFlowBuilder = Callable[[Mapping[str, tuple[Any, Any]], str, str], Any]


@dataclass(frozen=True)
class Backbone:
    """One network: what it computes and how its weights and inputs are made.

    - `layers`: the layers `forward` can return and each one's vector length, shallow to
      deep (names as in the weights' own framework, e.g. ``keras.applications``).
    - `input_size`: the side of the square network input; `mean_bgr`: the per-channel mean
      the ``caffe`` profile subtracts (B, G, R; values 0-255, no scaling); `profiles`: the
      preprocessing profiles it accepts (the first is the default).
    - `weights_file`, `weights_url`, `weights_mb`: the real weights file, where it is
      published and its size; `read_weights` reads and checks one (every layer's shape),
      `write_demo_weights(path, seed)` writes seeded random weights in the same layout.
    - `build_tensorflow(layers, profile, precision)`: the TensorFlow network (imports
      TensorFlow when called); `weight_shapes()`: each loaded layer's W shape (its b has
      the last dimension's length), enough to trace the graph; `graph_stem`: the name of
      its traced graphs shipped for OpenVINO (`featcache.extractor.graphdef`).
    - `gmacs`: billions of multiply-adds for one image through the whole network.
    - `storage_float16`: layers stored as float16 by ``dtype="auto"`` (large maps).
    - `cuts`: deeper layers a fine-tune can start from and their vector lengths, extracted
      by the TensorFlow network only (the OpenVINO graph outputs `layers`).
    """

    name: str
    layers: Mapping[str, int]
    default_layer: str
    input_size: int
    mean_bgr: tuple[float, float, float]
    profiles: tuple[str, ...]
    weights_file: str
    weights_url: str
    weights_mb: float
    read_weights: Callable[[Path], Weights]
    write_demo_weights: Callable[[Path, int], Path]
    build_tensorflow: TensorFlowBuilder
    weight_shapes: Callable[[], Mapping[str, tuple[int, ...]]]
    graph_stem: str
    gmacs: float
    description: str
    storage_float16: tuple[str, ...] = field(default=())
    cuts: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.default_layer not in self.layers:
            raise ConfigError(f"backbone {self.name!r}: default layer {self.default_layer!r}")
        if not self.profiles:
            raise ConfigError(f"backbone {self.name!r} accepts no profile")

    @property
    def layer_names(self) -> tuple[str, ...]:
        return tuple(self.layers)

    def check_layers(self, layers: Sequence[str]) -> tuple[str, ...]:
        """`layers` as a tuple without repeats, or `ConfigError` naming the unknown ones."""
        unknown = [name for name in layers if name not in self.layers and name not in self.cuts]
        if unknown or not layers:
            cuts = f", or the fine-tune cuts {list(self.cuts)}" if self.cuts else ""
            raise ConfigError(
                f"The 'layers' must be a non-empty subset of {list(self.layers)}{cuts} "
                f"(backbone '{self.name}'). Got {list(layers)}."
            )
        return tuple(dict.fromkeys(layers))

    def canonical(self, layers: Sequence[str]) -> tuple[str, ...]:
        """`layers` checked, in the network's order (shallow to deep)."""
        wanted = set(self.check_layers(layers))
        return tuple(name for name in self.layers if name in wanted)

    def check_profile(self, profile: str) -> None:
        if profile not in self.profiles:
            raise ConfigError(
                f"The 'profile' must be one of {list(self.profiles)} for backbone "
                f"'{self.name}'. Got {profile!r}."
            )


def register_backbone(backbone: Backbone) -> Backbone:
    """Add `backbone` to the registry (its name must be new); return it."""
    if backbone.name in _REGISTRY and _REGISTRY[backbone.name] is not backbone:
        raise ConfigError(f"a backbone named {backbone.name!r} is already registered")
    _REGISTRY[backbone.name] = backbone
    return backbone


def backbone_names() -> tuple[str, ...]:
    """The backbones: the built-in ones (the default, alexnet, first), then any other
    registered. Imports nothing."""
    return (*_ENTRY_MODULES, *(name for name in _REGISTRY if name not in _ENTRY_MODULES))


def check_backbone(name: str) -> None:
    """Raise `ConfigError` naming the choices unless `name` is a registered backbone."""
    if not isinstance(name, str) or name not in backbone_names():
        raise ConfigError(f"The 'backbone' must be one of {list(backbone_names())}. Got {name!r}.")


def backbone_named(name: str) -> Backbone:
    """The backbone called `name` (its module imported on first use); `ConfigError` listing
    the registered ones otherwise."""
    check_backbone(name)
    if name not in _REGISTRY:
        importlib.import_module(_ENTRY_MODULES[name])
    return _REGISTRY[name]


def read_backbone_weights(path: str | Path, backbone: str = DEFAULT_BACKBONE) -> Weights:
    """Read and check `backbone`'s weights file (`WeightsError` naming the layer if unusable)."""
    return backbone_named(backbone).read_weights(Path(path))


def recognise_weights(path: str | Path) -> Weights:
    """Read `path` as the first backbone whose weights file has its suffix and whose reader
    accepts it (a wrong layout fails on its first missing layer, before reading arrays);
    raise the first reader's `WeightsError` if none does."""
    from featcache.errors import WeightsError

    path = Path(path)
    first: WeightsError | None = None
    for name in backbone_names():
        backbone = backbone_named(name)
        if Path(backbone.weights_file).suffix != path.suffix.lower():
            continue
        try:
            return backbone.read_weights(path)
        except WeightsError as exc:
            first = first or exc
    if first is not None:
        raise first
    suffixes = sorted({Path(backbone_named(n).weights_file).suffix for n in backbone_names()})
    raise WeightsError(f"{path}: not a weights file of any backbone (expected {suffixes})")
