"""`advise`: which of the seed's four transfer-learning cases is this dataset in?

Measured from the cached vectors in seconds (no TensorFlow): cross-validated accuracy of a
linear head (`SoftmaxHead`) on each cached layer of every backbone the store holds for the
dataset (`featcache.analysis.backbones`), a learning curve on the best layer at 1/8,
1/4, 1/2 and all of the training rows, and the rows per class. `decide` maps them to a case
and the next command by the rule below (README, "advise"):

- **similar** to ImageNet when the best layer's accuracy closes at least half of the gap
  between chance (the majority class) and perfect: ``(acc - chance) / (1 - chance) >= 0.5``.
  Every layer poorer than that: the task is far from ImageNet (Yosinski et al. 2014: features
  transfer less as tasks grow apart, and poorly to distant tasks).
- **the backbone and layer** to use: the most accurate; on a tie the backbone with the
  fewest multiply-adds an image (AlexNet 0.72 G, ResNet50 3.9 G, VGG16 15.5 G), then its
  deepest layer.
- **an earlier layer** (pool5, fc6; VGG16's block5_pool, fc1; ResNet50's
  conv4_block6_out, conv5_block3_out) is recommended when it beats the backbone's default
  layer (fc7, fc2, avg_pool) by at least 3 points
  and by more than twice their fold spreads combined: ImageNet's top features, the most
  specific to its classes (Yosinski et al. 2014), do not fit this task.
- **large** when the median class has at least 1,000 training rows (about what ImageNet's
  classes have, and what Yosinski et al. fine-tuned on), **small** under 200; in between,
  large if the learning curve has flattened (all rows gain under 1 point over half of them:
  the frozen features, not the data, limit the head), small if it still rises.

Case 1 (large, similar): fine-tune (AlexNet's cuts; on another backbone, whose fine-tuning
featcache does not offer, a new last layer meanwhile). Case 2 (large, dissimilar): retrain
the network. Case 3
(small, similar): train only the last layer. Case 4 (small, dissimilar): transfer does not
help; design a model. These are the seed's four cases, with its remedies.

**Too few rows to decide** (case 0): under 100 labelled non-test rows or 10 in the median
class (there a cross-validated accuracy's 95% interval is ±10 points or wider, and the
learning curve's first point fits on a dozen rows), or when the 95% Wilson interval of the
best layer's accuracy spans the similarity threshold, so that two cases fit the numbers.
The next command is then the cheapest step that can work (a new last layer), never one
that leads back here.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from featcache.analysis.backbones import BackboneSummary, plan_comparison
from featcache.analysis.cut import LADDER, cut_commands, recommend_cut
from featcache.analysis.folds import cross_validate, fold_ids, subset_fraction
from featcache.architecture import cuts_of, describe_cuts, stages_above
from featcache.classifier.splits import effective_splits
from featcache.errors import ConfigError, DataError, NotFoundError
from featcache.extractor.registry import DEFAULT_BACKBONE, backbone_named, backbone_names
from featcache.store import FeatureStore, LazyVectors
from featcache.store.commands import source_path, store_command

__all__ = [
    "SAMPLE_ROWS",
    "UNDECIDED",
    "AdviseReport",
    "CurvePoint",
    "LayerScore",
    "Rule",
    "accuracy_interval",
    "advise",
    "decide",
    "sample_rows",
    "write_advise",
]

FRACTIONS = (0.125, 0.25, 0.5, 1.0)
UNDECIDED = "too few rows to decide"
#: Labelled non-test rows advise measures at most; a larger dataset is sampled (`sample_rows`).
SAMPLE_ROWS = 20_000


@dataclass(frozen=True)
class Rule:
    """The decision's thresholds (module docstring and README say where they come from)."""

    similar_kappa: float = 0.5
    earlier_margin: float = 0.03
    large_per_class: int = 1000
    small_per_class: int = 200
    flat_gain: float = 0.01
    min_rows: int = 100
    min_per_class: int = 10
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if self.min_rows < 1 or self.min_per_class < 1:
            raise ConfigError(
                f"The 'min_rows' and 'min_per_class' must be >= 1. Got {self.min_rows} and "
                f"{self.min_per_class}."
            )
        if not 0.0 < self.confidence < 1.0:
            raise ConfigError(f"The 'confidence' must be in (0, 1). Got {self.confidence}.")
        if not 0.0 < self.similar_kappa < 1.0:
            raise ConfigError(f"The 'similar_kappa' must be in (0, 1). Got {self.similar_kappa}.")
        if self.earlier_margin < 0 or self.flat_gain < 0:
            raise ConfigError("The 'earlier_margin' and 'flat_gain' must be >= 0.")
        if not 1 <= self.small_per_class <= self.large_per_class:
            raise ConfigError(
                "The per-class thresholds must satisfy 1 <= small_per_class <= large_per_class. "
                f"Got {self.small_per_class} and {self.large_per_class}."
            )


@dataclass(frozen=True)
class LayerScore:
    """A layer's k-fold accuracy, measured on `scored` out-of-fold predictions."""

    layer: str
    cv_accuracy: float
    cv_std: float
    rows: int
    scored: int = 0
    backbone: str = DEFAULT_BACKBONE
    fingerprint: str = ""

    @property
    def label(self) -> str:
        """``backbone layer``, as reports name it."""
        return f"{self.backbone} {self.layer}"


@dataclass(frozen=True)
class CurvePoint:
    fraction: float
    rows: int
    accuracy: float
    std: float


@dataclass
class AdviseReport:
    """The signals, the case they decide (1-4), the reasons and the next command."""

    dataset: str
    case: int
    reasons: list[str]
    next_command: str
    layers: dict[str, LayerScore]
    learning_curve: list[CurvePoint]
    best_layer: str
    rows: int
    classes: int
    per_class_min: int
    per_class_median: float
    chance: float
    missing_layers: list[str]
    weights_note: str | None
    timings: dict[str, float] = field(default_factory=dict)
    cut: str | None = None  # cases 1 and 2: the cached layer to fine-tune from
    commands: list[str] = field(default_factory=list)  # the next commands, in order
    sampled: int = 0  # rows the folds ran on when the dataset was larger (0: all of them)
    best_backbone: str = DEFAULT_BACKBONE
    use: tuple[str, str] = (DEFAULT_BACKBONE, "fc7")  # (backbone, layer) the next step uses
    backbones: dict[str, BackboneSummary] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """advise.json: the keys the issue fixes, then extras."""
        return {
            "case": self.case,
            "reasons": self.reasons,
            "layers": {
                name: {
                    "cv_accuracy": round(s.cv_accuracy, 6),
                    "cv_std": round(s.cv_std, 6),
                    **(
                        {
                            "interval95": [
                                round(v, 6) for v in accuracy_interval(s.cv_accuracy, s.scored)
                            ]
                        }
                        if self.sampled
                        else {}
                    ),
                }
                for name, s in self.layers.items()
            },
            "learning_curve": [
                {
                    "fraction": p.fraction,
                    "rows": p.rows,
                    "accuracy": round(p.accuracy, 6),
                    "std": round(p.std, 6),
                }
                for p in self.learning_curve
            ],
            "next_command": self.next_command,
            "dataset": self.dataset,
            "best_layer": self.best_layer,
            "best_backbone": self.best_backbone,
            "use": {"backbone": self.use[0], "layer": self.use[1]},
            "backbones": {
                name: {
                    "measured": b.measured,
                    "fingerprints": list(b.fingerprints),
                    "layers": {
                        s.layer: {
                            "cv_accuracy": round(s.cv_accuracy, 6),
                            "cv_std": round(s.cv_std, 6),
                        }
                        for s in self.layers.values()
                        if s.backbone == name
                    },
                    "missing_layers": list(b.missing_layers),
                    "extract_command": b.extract_command,
                }
                for name, b in self.backbones.items()
            },
            "rows": self.rows,
            "classes": self.classes,
            "rows_per_class": {"min": self.per_class_min, "median": self.per_class_median},
            "chance": round(self.chance, 6),
            "missing_layers": self.missing_layers,
            "sampled_rows": self.sampled or None,
            "weights_note": self.weights_note,
            "cut": self.cut,
            "commands": self.commands,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }

    @property
    def verdict(self) -> str:
        """``case N``, or ``too few rows to decide``."""
        return f"case {self.case}" if self.case else UNDECIDED

    @property
    def several(self) -> bool:
        """Whether more than one backbone was measured (then each layer is named with it)."""
        return len({s.backbone for s in self.layers.values()}) > 1

    def summary(self) -> list[str]:
        lines = [
            f"advise: dataset '{self.dataset}': {self.verdict}; use {self.use[0]} {self.use[1]}"
        ]
        if self.sampled:
            lines.append(
                f"  measured on a fixed sample of {self.sampled} of its {self.rows} labelled "
                "non-test rows (95% intervals below)"
            )
        for name, s in self.layers.items():
            low, high = accuracy_interval(s.cv_accuracy, s.scored)
            interval = f" (95% interval {low:.4f} to {high:.4f})" if self.sampled else ""
            shown = f"{s.backbone} {name}" if self.several else name
            lines.append(
                f"  {shown}: cross-validated accuracy {s.cv_accuracy:.4f} ± {s.cv_std:.4f}"
                f"{interval}"
            )
        curve = ", ".join(f"{p.rows}: {p.accuracy:.4f}" for p in self.learning_curve)
        on = f"{self.best_backbone} {self.best_layer}" if self.several else self.best_layer
        lines.append(f"  learning curve on {on} (training rows: accuracy): {curve}")
        lines += [f"  - {reason}" for reason in self.reasons]
        lines += [f"next: {command}" for command in self.commands or [self.next_command]]
        return lines


def decide(
    layers: dict[str, LayerScore],
    curve: Sequence[CurvePoint],
    per_class_median: float,
    chance: float,
    *,
    rule: Rule | None = None,
    store: str = "STORE",
    dataset: str = "DATASET",
    rows: int | None = None,
) -> tuple[int, list[str], str]:
    """The rule: (case, reasons, next command) from the measured signals; case 0 when the
    rows are too few to decide (see the module docstring).

    `rows` is the number of labelled rows cross-validated (each predicted once, out of
    fold) [default: the best layer's `rows`].
    """
    rule = rule or Rule()
    if not layers:
        raise DataError("advise needs at least one cached layer")
    best = _best(layers)
    rows = best.rows if rows is None else rows
    kappa = (best.cv_accuracy - chance) / max(1e-9, 1.0 - chance)
    similar = kappa >= rule.similar_kappa
    low, high = accuracy_interval(best.cv_accuracy, rows, rule.confidence)
    threshold = chance + rule.similar_kappa * (1.0 - chance)
    several = len({s.backbone for s in layers.values()}) > 1
    if best.cv_accuracy <= chance:  # a negative share of the gap says nothing to a reader
        gap = (
            f"{'no better than' if best.cv_accuracy == chance else 'below'} chance: the "
            f"features tell these classes apart no better than guessing; similar to ImageNet "
            f"from {threshold:.1%}"
        )
    else:
        gap = (
            f"closes {kappa:.0%} of the gap to 100%; similar to ImageNet from "
            f"{rule.similar_kappa:.0%}, i.e. {threshold:.1%}"
        )
    reasons = [
        f"best layer {best.label if several else best.layer}: {best.cv_accuracy:.1%} against "
        f"{chance:.1%} by chance ({gap}); {rule.confidence:.0%} interval "
        f"{low:.1%} to {high:.1%} on {rows} rows"
    ]
    earlier: LayerScore | None = None
    default = _default_layer(best.backbone)
    top = next(
        (
            s
            for s in layers.values()
            if (s.backbone, s.fingerprint, s.layer) == (best.backbone, best.fingerprint, default)
        ),
        None,
    )
    if top is not None and best.layer != default:
        margin = best.cv_accuracy - top.cv_accuracy
        if margin >= rule.earlier_margin and margin > 2 * (best.cv_std + top.cv_std):
            earlier = best
            reasons.append(
                f"{best.layer} beats {default} by {margin:.1%} (fold spreads {best.cv_std:.1%}, "
                f"{top.cv_std:.1%}): ImageNet's top features do not fit this task; an earlier "
                "layer does (Yosinski et al. 2014)"
            )
    gain = curve[-1].accuracy - curve[-2].accuracy if len(curve) >= 2 else float("nan")
    rising = not gain <= rule.flat_gain  # nan (no curve) counts as rising
    if per_class_median >= rule.large_per_class:
        large = True
        size = f"large: median class has {per_class_median:g} rows (≥ {rule.large_per_class})"
    elif per_class_median < rule.small_per_class:
        large = False
        size = f"small: median class has {per_class_median:g} rows (< {rule.small_per_class})"
    else:
        large = not rising
        size = (
            f"median class has {per_class_median:g} rows (between {rule.small_per_class} and "
            f"{rule.large_per_class}), and the learning curve "
            + ("has flattened: large enough to adapt the features" if large else "still rises")
        )
    reasons.append(size)
    if len(curve) >= 2:
        reasons.append(
            f"learning curve: {curve[-2].rows} → {curve[-1].rows} rows gains {gain:+.1%} "
            + ("(still rising: more labelled rows would help)" if rising else "(flattened)")
        )
    base = store_command("train", store, "--dataset", dataset) + _choose(best, layers)
    doubt = _doubt(rule, rows, per_class_median, low <= threshold < high, large)
    if doubt:
        reasons += doubt
        return 0, reasons, f"{base} --kind softmax"
    if large and best.backbone != DEFAULT_BACKBONE and cuts_of(best.backbone):
        # another backbone's own cut (VGG16: block5_pool, its only one): fine-tune above it
        case = 1 if similar else 2
        cut = cuts_of(best.backbone)[-1]
        trains = ", ".join(s.name for s in stages_above(cut) if s.has_weights)
        command = f"{base} --kind finetune --from {cut} --weights WEIGHTS"
        reasons.append(
            f"case {case} (large, {'similar' if similar else 'not similar'}): fine-tune "
            f"{best.backbone}'s {trains} from {cut} (its only cut in featcache; "
            "deeper cuts are AlexNet's)"
        )
    elif large and best.backbone != DEFAULT_BACKBONE:
        # a backbone featcache does not fine-tune: the cheapest step that works is a new
        # last layer on its best layer
        case = 1 if similar else 2
        used = earlier.layer if earlier is not None else default
        command = f"{base} --layer {used}" if earlier is not None else f"{base} --kind softmax"
        reasons.append(
            f"case {case} (large, {'similar' if similar else 'not similar'}): fine-tuning "
            f"{best.backbone} is not in featcache (fine-tune cuts: {describe_cuts()}); "
            f"meanwhile train a new last layer on {best.backbone} {used}"
        )
    elif large:
        case = 1 if similar else 2
        cut = recommend_cut(similar, earlier_layer=earlier is not None, flattened=not rising)
        command = cut_commands(cut, store=store, dataset=dataset, source=None, cached=True)[0]
        what = "similar): fine-tune" if similar else "not similar): retrain the top of the network:"
        reasons.append(
            f"case {case} (large, {what} {LADDER[cut]} from the cached {cut}"
            + (f", one cut deeper as an earlier layer beats {default}" if earlier else "")
            + (", one cut deeper as the learning curve has flattened" if not rising else "")
            + " (featcache.analysis.cut)"
        )
    elif similar:
        case = 3
        if earlier is not None:
            command = f"{base} --layer {earlier.layer}"
            reasons.append(
                f"case 3 (small, similar): train only a new last layer, on {earlier.layer}"
            )
        else:
            command = f"{base} --kind softmax"
            reasons.append(
                "case 3 (small, similar): freeze everything, train only a new last layer"
            )
    else:
        case = 4
        command = (
            "outside featcache: design a model for this task and collect more labelled data; "
            "transfer from ImageNet does not help here"
        )
        reasons.append("case 4 (small, not similar): neither transfer nor fine-tuning will do")
        reasons.append(
            "wrong labels also make every layer look poor: "
            f"'{store_command('doctor', store, '--dataset', dataset)}' lists the label issues "
            "it finds"
        )
    return case, reasons, command


def accuracy_interval(accuracy: float, rows: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of an accuracy measured on `rows` out-of-fold predictions."""
    from scipy.stats import binomtest

    if rows < 1:
        return 0.0, 1.0
    hits = round(accuracy * rows)
    found = binomtest(hits, rows).proportion_ci(confidence_level=confidence, method="wilson")
    return float(found.low), float(found.high)


def _doubt(
    rule: Rule, rows: int, per_class_median: float, spans_threshold: bool, large: bool
) -> list[str]:
    """Why the numbers cannot decide the case (nothing when they can)."""
    said = []
    if rows < rule.min_rows or per_class_median < rule.min_per_class:
        said.append(
            f"{UNDECIDED}: {rows} labelled rows, {per_class_median:g} in the median class "
            f"(advise decides from {rule.min_rows} rows and {rule.min_per_class} per class: "
            "below that an accuracy's interval is too wide to tell the cases apart)"
        )
    if spans_threshold:
        cases = "1 and 2" if large else "3 and 4"
        said.append(
            f"{UNDECIDED}: the accuracy's {rule.confidence:.0%} interval spans the similarity "
            f"threshold, so cases {cases} both fit these numbers"
        )
    if said:
        said.append(
            "meanwhile the cheapest step that can work is a new last layer on the cached "
            "vectors; label more images, extract them and run advise again to decide"
        )
    return said


def _layer_data(
    store: FeatureStore, dataset: str, layer: str, fingerprint: str | None
) -> LazyVectors | None:
    try:
        return store.lazy_vectors(dataset, layer, fingerprint)
    except NotFoundError:
        return None


def sample_rows(keys: Sequence[str], mask: np.ndarray, size: int) -> np.ndarray:
    """The row numbers advise measures: every `mask` row, or, when there are more than
    `size`, the `size` whose keys hash lowest (a third stable number per key, independent
    of the fold and of the learning curve's subsets: the same images for every layer)."""
    rows = np.flatnonzero(mask)
    if len(rows) <= size:
        return rows
    rank = np.array([int(keys[int(i)][24:36], 16) for i in rows])
    return np.sort(rows[np.argsort(rank, kind="stable")[:size]])


def advise(
    store: FeatureStore | str | Path,
    dataset: str,
    *,
    layers: Sequence[str] | None = None,
    backbones: Sequence[str] | None = None,
    folds: int = 5,
    fingerprint: str | None = None,
    rule: Rule | None = None,
    out: str | Path | None = None,
    on_stage: Callable[[str], None] | None = None,
    max_rows: int = SAMPLE_ROWS,
) -> AdviseReport:
    """Measure the signals on `dataset`'s cached layers, of every backbone, and decide the
    case.

    Compared: each of `backbones` (default: every registered one) on `layers` (default:
    each backbone's feature layers, `featcache.analysis.backbones.feature_layers`; given,
    the ones each backbone has), for every extractor whose vectors cover the dataset (one
    `fingerprint` only, if given). A backbone without vectors is named in the reasons with
    the extract command that adds it. Rows of the ``test`` split are never used. Folds
    follow the image key's hash, and keep near-duplicate groups together when `featcache
    doctor` has recorded them. Past `max_rows` labelled non-test rows (default
    `SAMPLE_ROWS`), the cross-validation and the learning curve run on a fixed sample of
    that many (`sample_rows`), the same images for every layer, read from the store row
    by row; the report says so and gives each accuracy's 95% Wilson interval on the sample
    (`accuracy_interval`), which the decision uses too. Rows per class always count the
    whole dataset. `on_stage` hears the name of each stage as it starts (progress).
    """
    if max_rows < 2 * folds:
        raise ConfigError(f"The 'max_rows' must be >= {2 * folds} (2 per fold). Got {max_rows}.")
    stage = on_stage or (lambda _: None)
    if not isinstance(store, FeatureStore):
        store = FeatureStore(store, create=False)
    plan = plan_comparison(
        store, dataset, layers=layers, backbones=backbones, fingerprint=fingerprint
    )
    several = len(plan.measured_backbones) > 1
    timings: dict[str, float] = {}
    groups = store.groups(dataset)
    scores: dict[str, LayerScore] = {}
    kept_best: tuple[np.ndarray, np.ndarray, np.ndarray, list[str]] | None = None
    for name, stored in plan.measure.items():
        shown = f"{stored.backbone} {name}" if several else name
        stage(f"{shown}: reading the vectors, {folds}-fold cross-validation")
        t = time.perf_counter()
        found = _layer_data(store, dataset, stored.layer, stored.fingerprint)
        if found is None:  # rewritten since the plan: as if it were missing
            continue
        named = effective_splits(found.keys, found.splits, 0.0)
        use = (found.y >= 0) & (named != "test")
        if use.sum() < 2 * folds:
            raise DataError(
                f"dataset '{dataset}' has {int(use.sum())} labelled non-test rows; advise needs "
                f"at least {2 * folds}"
            )
        all_labels = found.y[use]
        rows = sample_rows(found.keys, use, max_rows)
        sampled = len(rows) if len(rows) < use.sum() else 0
        kept = [found.keys[i] for i in rows]
        X, y = found.X.read_rows(rows), found.y[rows]
        fold = fold_ids(kept, folds, groups)
        timings[f"read_{name}"] = time.perf_counter() - t
        t = time.perf_counter()
        (result,) = cross_validate(X, y, fold)
        timings[f"cv_{name}"] = time.perf_counter() - t
        scores[name] = LayerScore(
            stored.layer,
            result.mean,
            result.std,
            result.rows,
            len(y),
            backbone=stored.backbone,
            fingerprint=stored.fingerprint,
        )
        if _best(scores) is scores[name]:  # only the best so far keeps its vectors
            kept_best = (X, y, fold, kept)
    if not scores or kept_best is None:
        raise NotFoundError(f"dataset '{dataset}': its vectors changed while advise read them")
    best_score = _best(scores)
    best = next(name for name, s in scores.items() if s is best_score)
    X, y, fold, kept = kept_best
    stage(f"learning curve on {best} ({len(FRACTIONS) - 1} more fractions)")
    t = time.perf_counter()
    subset = subset_fraction(kept)
    # The full fraction is the layer's cross-validation itself: not fitted again.
    # on very few rows the smallest fractions hold one class only: the curve starts later
    small = FRACTIONS[:-1]
    partial = cross_validate(X, y, fold, fractions=small, subset=subset, skip_small=True)
    fitted = small[len(small) - len(partial) :]  # the fractions left out are the smallest
    curve = [CurvePoint(f, p.rows, p.mean, p.std) for f, p in zip(fitted, partial, strict=True)]
    curve.append(CurvePoint(1.0, best_score.rows, best_score.cv_accuracy, best_score.cv_std))
    timings["learning_curve"] = time.perf_counter() - t
    counts = np.bincount(all_labels)  # the whole dataset's rows per class, not the sample's
    counts = counts[counts > 0]
    chance = float(counts.max() / counts.sum())
    median = float(np.median(counts))
    store_name = store.location
    case, reasons, command = decide(
        scores, curve, median, chance, rule=rule, store=store_name, dataset=dataset, rows=len(y)
    )
    source = source_path(store.dataset(dataset).source)
    from_cut = re.search(r"--from (\S+)", command)
    cut = from_cut.group(1) if from_cut else None
    commands = [command]
    if cut is not None:
        # the cut of the extractor measured here, for every row of the dataset
        keys = [row.key for row in store.dataset_rows(dataset)]
        have_cut = len(store.has(keys, best_score.fingerprint, cut)) == len(set(keys))
        commands = cut_commands(
            cut, store=store_name, dataset=dataset, source=source, cached=have_cut
        )
    reasons += _missing_reasons(plan.backbones)
    specs = store.extractors()
    notes = dict.fromkeys(
        note for s in scores.values() if (note := specs.get(s.fingerprint, {}).get("weights_note"))
    )
    trained = re.search(r"--(?:layer|from) (\S+)", command)
    report = AdviseReport(
        dataset=dataset,
        case=case,
        reasons=reasons,
        next_command=command,
        layers=scores,
        learning_curve=curve,
        best_layer=best_score.layer,
        rows=len(all_labels),
        classes=len(counts),
        per_class_min=int(counts.min()),
        per_class_median=median,
        chance=chance,
        missing_layers=[
            layer for b in plan.backbones.values() if b.measured for layer in b.missing_layers
        ],
        weights_note="; ".join(notes) or None,
        timings=timings,
        cut=cut,
        commands=commands,
        sampled=sampled,
        best_backbone=best_score.backbone,
        use=(
            best_score.backbone,
            trained.group(1) if trained else _default_layer(best_score.backbone),
        ),
        backbones=dict(plan.backbones),
    )
    if out is not None:
        write_advise(report, out)
    timings["total"] = sum(timings.values())
    return report


def _missing_reasons(backbones: dict[str, BackboneSummary]) -> list[str]:
    """A line per backbone with something to add: its missing layers, or the whole backbone."""
    said = []
    for b in backbones.values():
        if b.extract_command is None:
            continue
        if b.measured:
            what = f"{', '.join(b.missing_layers)} {'is' if len(b.missing_layers) == 1 else 'are'}"
            said.append(
                f"{what} not cached ({b.name}); to measure: {b.extract_command} (use the "
                "sources and splits of the original extraction)"
            )
        else:
            said.append(
                f"{b.name} has no vectors for this dataset; to compare it: {b.extract_command} "
                f"(the weights file `featcache weights fetch --backbone {b.name}` downloads)"
            )
    return said


def _best(layers: dict[str, LayerScore]) -> LayerScore:
    """The most accurate layer; on a tie the cheapest backbone (fewest multiply-adds an
    image), then its deepest layer (the default, e.g. fc7, is deepest of those compared)."""
    return max(
        layers.values(),
        key=lambda s: (round(s.cv_accuracy, 9), -_cost(s.backbone), _depth(s.backbone, s.layer)),
    )


def _registered(backbone: str) -> bool:
    return backbone in backbone_names()


def _cost(backbone: str) -> float:
    return backbone_named(backbone).gmacs if _registered(backbone) else float("inf")


def _depth(backbone: str, layer: str) -> int:
    names = list(backbone_named(backbone).layers) if _registered(backbone) else []
    return names.index(layer) if layer in names else len(names)


def _default_layer(backbone: str) -> str:
    return backbone_named(backbone).default_layer if _registered(backbone) else ""


def _choose(best: LayerScore, layers: dict[str, LayerScore]) -> str:
    """train's options that pick `best`'s extractor: ``--backbone`` unless it is the only
    or default one, ``--fingerprint`` when its backbone has several."""
    backbones = {s.backbone for s in layers.values()}
    flags = ""
    if best.backbone != DEFAULT_BACKBONE or len(backbones) > 1:
        flags += f" --backbone {best.backbone}"
    if len({s.fingerprint for s in layers.values() if s.backbone == best.backbone}) > 1:
        flags += f" --fingerprint {best.fingerprint}"
    return flags


def write_advise(report: AdviseReport, out: str | Path) -> list[Path]:
    """Write advise.json and advise.png (per-layer accuracies and the learning curve)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "advise.json", folder / "advise.png"]
    paths[0].write_text(json.dumps(report.as_json(), indent=2) + "\n")
    fig = Figure(figsize=(11, 4.6), dpi=110)
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    scores = list(report.layers.values())
    names = [f"{s.backbone}\n{key}" if report.several else key for key, s in report.layers.items()]
    means = [s.cv_accuracy for s in scores]
    stds = [s.cv_std for s in scores]
    best = (report.best_backbone, report.best_layer)
    colours = ["tab:orange" if (s.backbone, s.layer) == best else "tab:blue" for s in scores]
    left.bar(names, means, yerr=stds, capsize=6, color=colours)
    left.axhline(report.chance, color="grey", linestyle="--", label=f"chance {report.chance:.2f}")
    for i, m in enumerate(means):
        left.text(i, m + 0.02, f"{m:.3f}", ha="center", fontsize=9)
    left.set_ylim(0, 1.08)
    left.set_ylabel("cross-validated accuracy (linear head)")
    left.set_title(
        "per backbone and layer (best in orange)"
        if report.several
        else "per layer (best in orange)"
    )
    left.legend(loc="lower right", fontsize=8)
    rows = [p.rows for p in report.learning_curve]
    acc = [p.accuracy for p in report.learning_curve]
    err = [p.std for p in report.learning_curve]
    right.errorbar(rows, acc, yerr=err, marker="o", capsize=4)
    right.set_xscale("log", base=2)
    right.set_xticks(
        rows, [f"{r}\n({p.fraction:g})" for r, p in zip(rows, report.learning_curve, strict=True)]
    )
    right.axhline(report.chance, color="grey", linestyle="--")
    right.set_ylim(0, 1.08)
    right.set_xlabel("training rows per fit (fraction)")
    right.set_title(f"learning curve on {report.best_backbone} {report.best_layer}")
    note = f"  [{report.weights_note}]" if report.weights_note else ""
    fig.suptitle(
        f"advise '{report.dataset}': {report.verdict}, use {report.use[0]} {report.use[1]} → "
        f"{report.next_command[:90]}{note}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(paths[1], metadata={"Description": report.weights_note or ""})
    return paths
