"""Which backbones and layers a store holds for a dataset, and the command that adds one.

Read from the catalog alone (no vectors, no TensorFlow): every extractor (fingerprint) with
vectors for the dataset's images, its backbone (the spec's ``network``; stores made before
the registry are AlexNet's) and how many of the images each layer covers. `train` picks its
default layer from here, `advise` the backbones it compares, and both print the same
`extract_command` when something is missing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from featcache.errors import ConfigError, NotFoundError
from featcache.extractor.registry import DEFAULT_BACKBONE, backbone_named, backbone_names
from featcache.store import FeatureStore, commands
from featcache.store.commands import source_path

__all__ = [
    "Holdings",
    "StoredLayer",
    "backbone_of",
    "extract_command",
    "resolve_vectors",
    "stored_layers",
]


def backbone_of(spec: Mapping[str, Any]) -> str:
    """The backbone an extractor spec names (stores made before the registry: AlexNet)."""
    return str(spec.get("network", DEFAULT_BACKBONE))


@dataclass(frozen=True)
class StoredLayer:
    """One (extractor, layer) with vectors for some of a dataset's images."""

    fingerprint: str
    backbone: str
    layer: str
    keys: int  # the dataset's distinct images with a vector
    complete: bool  # every one of them has a vector

    @property
    def label(self) -> str:
        """``backbone/layer``, how reports name it."""
        return f"{self.backbone}/{self.layer}"


@dataclass(frozen=True)
class Holdings:
    """What a store holds for `dataset`: its distinct images and every stored layer, in
    registry order (backbones as `backbone_names` lists them, layers shallow to deep)."""

    dataset: str
    keys: int
    layers: tuple[StoredLayer, ...]

    @property
    def backbones(self) -> tuple[str, ...]:
        """The backbones with a vector for at least one of the images."""
        return tuple(dict.fromkeys(s.backbone for s in self.layers))

    def of(
        self, backbone: str | None = None, layer: str | None = None, *, complete: bool = False
    ) -> list[StoredLayer]:
        """The stored layers of `backbone` named `layer` (None: any), only complete ones if
        `complete`."""
        return [
            s
            for s in self.layers
            if (backbone is None or s.backbone == backbone)
            and (layer is None or s.layer == layer)
            and (s.complete or not complete)
        ]


def _order(backbone: str, layer: str) -> tuple[int, int]:
    """Sort key: the registry's backbone order, then the layer's depth (cuts first)."""
    names = backbone_names()
    if backbone not in names:
        return (len(names), 0)
    depth = _all_layers(backbone)
    return (names.index(backbone), depth.index(layer) if layer in depth else len(depth))


def stored_layers(store: FeatureStore, dataset: str) -> Holdings:
    """Every (extractor, layer) with vectors for `dataset`'s images (`NotFoundError` naming
    the known datasets if there is none called so)."""
    keys, found = store.dataset_layers(dataset)
    specs = store.extractors()
    layers = [
        StoredLayer(fp, backbone_of(specs.get(fp, {})), layer, count, count >= keys)
        for (fp, layer), count in found.items()
    ]
    layers.sort(key=lambda s: (*_order(s.backbone, s.layer), s.fingerprint))
    return Holdings(dataset, keys, tuple(layers))


def extract_command(
    *,
    store: str,
    dataset: str,
    backbone: str,
    layers: Sequence[str] = (),
    source: str | None = None,
) -> str:
    """The `featcache extract` command that adds `backbone`'s `layers` (default: its default
    layer) to `dataset`'s rows from the path `source` (``--append`` keeps the others), with
    the weights file as ``featcache weights fetch --backbone ...`` names it."""
    network = backbone_named(backbone)
    return commands.extract_command(
        store,
        dataset,
        ",".join(layers or (network.default_layer,)),
        source=source,
        network=backbone,
        weights=network.weights_file,
    )


def resolve_vectors(
    store: FeatureStore,
    dataset: str,
    *,
    backbone: str | None = None,
    layer: str | None = None,
    fingerprint: str | None = None,
) -> StoredLayer:
    """The extractor and layer a head on `dataset` trains on.

    `layer` defaults to the backbone's default layer (AlexNet fc7, VGG16 fc2, ResNet50
    avg_pool). Without `backbone` or `fingerprint`: the only backbone with vectors for the
    dataset, or AlexNet (the default) when several have some. Raises `ConfigError` when
    the choice is ambiguous or the layer is not the backbone's, `NotFoundError` naming the
    extract command when the store has no such vectors. Partial coverage is returned as
    such (reading the vectors then names the first image without one).
    """
    holdings = stored_layers(store, dataset)
    specs = store.extractors()
    if fingerprint is not None:
        if fingerprint not in specs:
            raise NotFoundError(f"{store.path}: no extractor with fingerprint {fingerprint}")
        named = backbone_of(specs[fingerprint])
        if backbone is not None and backbone != named:
            raise ConfigError(
                f"The fingerprint {fingerprint[:12]} is a {named} extractor; --backbone says "
                f"{backbone}. Give one of them."
            )
        backbone = named
    elif backbone is None:
        backbone = _only_backbone(holdings, layer, str(store.path))
    network = backbone_named(backbone)
    layer = layer or network.default_layer
    network.check_layers([layer])
    found = [s for s in holdings.of(backbone, layer) if fingerprint in (None, s.fingerprint)]
    if not found:
        others = ", ".join(s.label for s in holdings.layers if s.complete) or "none"
        source = source_path(store.dataset(dataset).source)
        raise NotFoundError(
            f"dataset '{dataset}' has no {backbone} '{layer}' vectors in {store.location} (it "
            f"has: {others}); extract them: "
            + extract_command(
                store=store.location,
                dataset=dataset,
                backbone=backbone,
                layers=(layer,),
                source=source,
            )
        )
    if len(found) > 1:
        raise ConfigError(
            f"dataset '{dataset}' has {backbone} '{layer}' vectors from {len(found)} "
            f"extractors ({', '.join(s.fingerprint[:12] for s in found)}); pass "
            "fingerprint= (--fingerprint)"
        )
    return found[0]


def _only_backbone(holdings: Holdings, layer: str | None, store: str) -> str:
    """The backbone meant when none is named: the one holding `layer` (or any vector)."""
    if layer is not None:
        holding = list(dict.fromkeys(s.backbone for s in holdings.of(layer=layer)))
        if len(holding) == 1:
            return holding[0]
        known = [name for name in backbone_names() if layer in _all_layers(name)]
        if not holding and len(known) == 1:
            return known[0]
    held = holdings.backbones
    if len(held) == 1:
        return held[0]
    if not held or DEFAULT_BACKBONE in held:
        return DEFAULT_BACKBONE
    raise ConfigError(
        f"dataset '{holdings.dataset}' has vectors of {len(held)} backbones ({', '.join(held)}) "
        f"in {store}; choose one with --backbone (featcache advise --dataset "
        f"{holdings.dataset} compares them)"
    )


def _all_layers(backbone: str) -> tuple[str, ...]:
    network = backbone_named(backbone)
    return (*network.cuts, *network.layers)
