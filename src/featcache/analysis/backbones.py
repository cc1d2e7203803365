"""What `advise` compares: every backbone and layer a store holds for a dataset.

Each backbone is compared on its feature layers, the ones up to and including its default
layer (AlexNet pool5, fc6, fc7; VGG16 block5_pool, fc1, fc2; ResNet50 conv4_block6_out,
conv5_block3_out, avg_pool): the ImageNet class outputs above them (fc8, prob, predictions)
are left out. A backbone the store has no vectors of for the dataset is *lacking*, and
advise prints the `featcache extract` command that adds its default layer; a backbone it
has but without some of its feature layers gets the command for those.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from featcache.errors import ConfigError, NotFoundError
from featcache.extractor.registry import backbone_named, backbone_names
from featcache.extractor.stored import StoredLayer, extract_command, stored_layers
from featcache.store import FeatureStore
from featcache.store.commands import source_path

__all__ = ["BackboneSummary", "ComparePlan", "feature_layers", "plan_comparison"]


def feature_layers(backbone: str) -> tuple[str, ...]:
    """`backbone`'s layers up to and including its default one (shallow to deep)."""
    network = backbone_named(backbone)
    names = list(network.layers)
    return tuple(names[: names.index(network.default_layer) + 1])


@dataclass(frozen=True)
class BackboneSummary:
    """One backbone as advise found it: its extractors measured, its feature layers not
    cached, and the command that adds what is missing (None when nothing is)."""

    name: str
    fingerprints: tuple[str, ...]
    missing_layers: tuple[str, ...]
    extract_command: str | None

    @property
    def measured(self) -> bool:
        return bool(self.fingerprints)


@dataclass(frozen=True)
class ComparePlan:
    """The (extractor, layer) pairs to measure, each under its report key, and every
    backbone considered."""

    measure: dict[str, StoredLayer]
    backbones: dict[str, BackboneSummary]

    @property
    def measured_backbones(self) -> tuple[str, ...]:
        return tuple(name for name, b in self.backbones.items() if b.measured)


def _wanted(
    layers: Sequence[str] | None, backbones: Sequence[str] | None
) -> dict[str, tuple[str, ...]]:
    """backbone → the layers to compare (checked against the registry)."""
    names = tuple(backbones) if backbones is not None else backbone_names()
    if not names:
        raise ConfigError("The 'backbones' must name at least one backbone.")
    for name in names:
        backbone_named(name)  # ConfigError listing the registered ones
    if layers is None:
        return {name: feature_layers(name) for name in names}
    if not layers:
        raise ConfigError("The 'layers' must name at least one layer (e.g. fc7, fc2, avg_pool).")
    found = {
        name: tuple(
            layer for layer in dict.fromkeys(layers) if layer in backbone_named(name).layers
        )
        for name in names
    }
    unknown = [layer for layer in layers if not any(layer in got for got in found.values())]
    if unknown:
        raise ConfigError(
            f"The 'layers' {unknown} are not layers of {list(names)}: "
            + "; ".join(f"{n}: {', '.join(backbone_named(n).layers)}" for n in names)
        )
    return {name: got for name, got in found.items() if got}


def plan_comparison(
    store: FeatureStore,
    dataset: str,
    *,
    layers: Sequence[str] | None = None,
    backbones: Sequence[str] | None = None,
    fingerprint: str | None = None,
) -> ComparePlan:
    """What to measure for `dataset`: each of `backbones` (default: every registered one)
    on `layers` (default: each one's `feature_layers`; given, the ones each backbone has),
    every extractor whose vectors cover all the dataset's images (one `fingerprint` only,
    if given). `NotFoundError` with the extract commands when nothing can be measured."""
    wanted = _wanted(layers, backbones)
    holdings = stored_layers(store, dataset)
    if fingerprint is not None:
        own = [s.backbone for s in holdings.layers if s.fingerprint == fingerprint]
        if not own:
            raise NotFoundError(
                f"dataset '{dataset}' has no vectors of extractor {fingerprint[:12]} in "
                f"{store.path}"
            )
        wanted = {own[0]: wanted.get(own[0], ())}
    source = source_path(store.dataset(dataset).source)
    measure: dict[str, StoredLayer] = {}
    summaries: dict[str, BackboneSummary] = {}
    for name, compared in wanted.items():
        held = [
            s
            for s in holdings.of(name, complete=True)
            if s.layer in compared and fingerprint in (None, s.fingerprint)
        ]
        missing = tuple(layer for layer in compared if layer not in {s.layer for s in held})
        if not holdings.of(name):  # lacking: its default layer is the one to add first
            default = backbone_named(name).default_layer
            missing = (default,) if default in compared else compared
        command = (
            extract_command(
                store=store.location, dataset=dataset, backbone=name, layers=missing, source=source
            )
            if missing
            else None
        )
        fingerprints = tuple(dict.fromkeys(s.fingerprint for s in held))
        summaries[name] = BackboneSummary(name, fingerprints, missing, command)
        for s in held:
            measure[s.layer if len(fingerprints) == 1 else f"{s.layer}@{s.fingerprint[:8]}"] = s
    plan = ComparePlan(_unique_keys(measure), summaries)
    if not plan.measure:
        commands = [b.extract_command for b in summaries.values() if b.extract_command]
        asked = [layer for compared in wanted.values() for layer in compared]
        raise NotFoundError(
            f"dataset '{dataset}' has none of the layers {asked} cached for all its images; "
            f"extract them: {' or '.join(commands)}"
        )
    return plan


def _unique_keys(measure: dict[str, StoredLayer]) -> dict[str, StoredLayer]:
    """Report keys: the layer name, ``backbone/layer`` where two backbones share a name."""
    names = [s.layer for s in measure.values()]
    return {
        (f"{s.backbone}/{key}" if names.count(s.layer) > 1 and "@" not in key else key): s
        for key, s in measure.items()
    }
