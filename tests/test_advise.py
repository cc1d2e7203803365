"""featcache advise: constructed vectors whose case is known by construction, the rule itself,
agreement with scikit-learn's cross-validation, and the report files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from featcache.analysis.advise import (
    CurvePoint,
    LayerScore,
    Rule,
    accuracy_interval,
    advise,
    decide,
)
from featcache.analysis.folds import fold_ids
from featcache.cli import app
from featcache.errors import ConfigError
from featcache.store import DatasetRow, FeatureStore

FP = "c" * 64
ADVISE_KEYS = {"case", "reasons", "layers", "learning_curve", "next_command"}


def make_store(
    path: Path,
    *,
    per_class: int,
    classes: int,
    separation: dict[str, float],
    dims: int = 24,
    seed: int = 0,
) -> FeatureStore:
    """Dataset 'd': `per_class` rows of each class (plus a test tenth), one layer per entry
    of `separation` (the class centres' scale: 0 is pure noise)."""
    rng = np.random.default_rng(seed)
    n = per_class * classes
    y = np.repeat(np.arange(classes), per_class)
    keys = [hashlib.sha256(f"{seed}-{i}".encode()).hexdigest() for i in range(n)]
    store = FeatureStore(path)
    store.register_extractor(FP, {"profile": "caffe", "weights_note": "RANDOM test vectors"})
    for layer, scale in separation.items():
        centres = rng.standard_normal((classes, dims)) * scale
        X = centres[y] + rng.standard_normal((n, dims))
        store.put_batch(keys, {layer: np.maximum(X + 2, 0).astype(np.float32)}, FP)
    rows = [
        DatasetRow(key, f"img{i}.png", int(y[i]), "test" if i % 10 == 0 else "train")
        for i, key in enumerate(keys)
    ]
    store.add_dataset("d", rows, [f"class {c}" for c in range(classes)])
    return store


def test_small_set_separated_by_fc7_is_case_3(tmp_path: Path) -> None:
    store = make_store(
        tmp_path / "s", per_class=40, classes=5, separation={"pool5": 0.3, "fc6": 0.4, "fc7": 3.0}
    )
    report = advise(store, "d", out=tmp_path / "out")
    assert report.case == 3
    assert report.best_layer == "fc7"
    assert report.next_command.endswith("--kind softmax")
    data = json.loads((tmp_path / "out" / "advise.json").read_text())
    assert set(data) >= ADVISE_KEYS and data["case"] == 3
    assert set(data["layers"]) == {"pool5", "fc6", "fc7"}
    assert set(data["layers"]["fc7"]) == {"cv_accuracy", "cv_std"}
    assert [p["fraction"] for p in data["learning_curve"]] == [0.125, 0.25, 0.5, 1.0]
    assert set(data["learning_curve"][0]) == {"fraction", "rows", "accuracy", "std"}
    rows = [p["rows"] for p in data["learning_curve"]]
    assert rows == sorted(rows) and rows[-1] < report.rows
    assert (tmp_path / "out" / "advise.png").read_bytes()[:4] == b"\x89PNG"
    assert report.rows == 180  # the test tenth is never used


def test_large_set_with_a_flat_learning_curve_is_case_1(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s", per_class=1100, classes=3, separation={"fc7": 2.5})
    report = advise(store, "d", layers=["fc7"])
    assert report.case == 1
    assert "--kind finetune" in report.next_command
    gain = report.learning_curve[-1].accuracy - report.learning_curve[-2].accuracy
    assert gain < 0.01
    assert report.missing_layers == []


def test_only_pool5_separating_recommends_the_earlier_layer(tmp_path: Path) -> None:
    store = make_store(
        tmp_path / "s", per_class=40, classes=5, separation={"pool5": 3.0, "fc6": 0.0, "fc7": 0.0}
    )
    report = advise(store, "d")
    assert report.best_layer == "pool5"
    assert report.next_command.endswith("--layer pool5")
    assert any("pool5 beats fc7" in reason for reason in report.reasons)


def test_pure_noise_is_case_4(tmp_path: Path) -> None:
    store = make_store(
        tmp_path / "s", per_class=40, classes=5, separation={"pool5": 0.0, "fc6": 0.0, "fc7": 0.0}
    )
    report = advise(store, "d")
    assert report.case == 4
    assert report.next_command.startswith("outside featcache")


def test_per_layer_figures_agree_with_plain_scikit_learn(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import PredefinedSplit, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    store = make_store(
        tmp_path / "s", per_class=400, classes=4, separation={"fc6": 0.5, "fc7": 0.8}
    )
    report = advise(store, "d", layers=["fc6", "fc7"])
    for layer in ("fc6", "fc7"):
        data = store.vectors("d", layer)
        use = np.array([s != "test" for s in data.splits])
        keys = [k for k, u in zip(data.keys, use, strict=True) if u]
        plain = cross_val_score(
            make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
            data.X[use],
            data.y[use],
            cv=PredefinedSplit(fold_ids(keys, 5)),
        ).mean()
        ours = report.layers[layer].cv_accuracy
        assert abs(ours - plain) <= 0.02, (layer, ours, plain)
        assert 0.5 < ours < 0.98  # neither trivial nor hopeless: the comparison means something


def test_missing_layers_are_named_with_the_extract_command(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s", per_class=40, classes=3, separation={"fc7": 3.0})
    report = advise(store, "d")
    assert report.missing_layers == ["pool5", "fc6"]
    assert any("--layers pool5" in r and "featcache extract" in r for r in report.reasons)
    result = CliRunner().invoke(
        app, ["advise", "--store", str(store.path), "--dataset", "d", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 0, result.output
    assert "case 3" in result.output and "next: featcache train" in result.output
    assert "RANDOM test vectors" in result.output


def point(fraction: float, accuracy: float) -> CurvePoint:
    return CurvePoint(fraction, int(1000 * fraction), accuracy, 0.01)


def test_the_rule_in_the_middle_band_follows_the_learning_curve() -> None:
    layers = {"fc7": LayerScore("fc7", 0.9, 0.01, 1000)}
    flat = [point(0.5, 0.895), point(1.0, 0.9)]
    rising = [point(0.5, 0.85), point(1.0, 0.9)]
    assert decide(layers, flat, 500, 0.1)[0] == 1
    assert decide(layers, rising, 500, 0.1)[0] == 3
    assert decide(layers, rising, 5000, 0.1)[0] == 1  # large by count
    assert decide(layers, flat, 50, 0.1)[0] == 3  # small by count
    poor = {"fc7": LayerScore("fc7", 0.3, 0.01, 1000)}
    assert decide(poor, flat, 5000, 0.1)[0] == 2
    assert decide(poor, flat, 50, 0.1)[0] == 4
    close = {"fc7": LayerScore("fc7", 0.9, 0.02, 1000), "pool5": LayerScore("pool5", 0.93, 0.02, 1)}
    assert "--layer" not in decide(close, flat, 50, 0.1)[2]  # 3 points, but within the spread


def test_accuracy_at_or_below_chance_is_said_plainly() -> None:
    flat = [point(0.5, 0.2), point(1.0, 0.2)]
    below = decide({"fc7": LayerScore("fc7", 0.2, 0.01, 1000)}, flat, 50, 0.25)[1][0]
    assert "20.0% against 25.0% by chance (below chance: the features tell" in below
    assert "similar to ImageNet from 62.5%" in below
    assert "gap" not in below and "-" not in below.split(";")[0]
    at = decide({"fc7": LayerScore("fc7", 0.25, 0.01, 1000)}, flat, 50, 0.25)[1][0]
    assert "(no better than chance:" in at
    above = decide({"fc7": LayerScore("fc7", 0.7, 0.01, 1000)}, flat, 50, 0.25)[1][0]
    assert "(closes 60% of the gap to 100%; similar to ImageNet from 50%, i.e. 62.5%)" in above


def test_rule_and_arguments_are_checked() -> None:
    with pytest.raises(ConfigError, match="similar_kappa"):
        Rule(similar_kappa=1.5)
    with pytest.raises(ConfigError, match="per-class"):
        Rule(small_per_class=2000)


def test_fifteen_rows_are_too_few_to_decide_and_the_next_step_works(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s", per_class=5, classes=3, separation={"fc7": 0.5})
    path = str(store.path)
    store.close()
    runner = CliRunner()
    result = runner.invoke(app, ["advise", "--store", path, "--dataset", "d", "--layers", "fc7"])
    assert result.exit_code == 0, result.output
    text = result.output
    assert "advise: dataset 'd': too few rows to decide" in text and "case 4" not in text
    assert "too few rows to decide: 13 labelled rows, 4 in the median class" in text
    assert "advise decides from 100 rows and 10 per class" in text
    data = json.loads((Path(path) / "reports" / "advise-d" / "advise.json").read_text())
    assert data["case"] == 0
    command = next(line for line in text.splitlines() if line.startswith("next: "))[6:]
    assert command == f"featcache train --store {path} --dataset d --kind softmax"
    followed = runner.invoke(app, command.split()[1:])  # the suggestion works as printed
    assert followed.exit_code == 0, followed.output
    assert "head 'd-softmax' v1 (softmax)" in followed.output


def test_an_interval_across_the_threshold_is_not_a_verdict() -> None:
    curve = [point(0.5, 0.6), point(1.0, 0.62)]
    # chance 0.25: similar from 62.5%; 62% on 400 rows spans it, on 40,000 rows it does not
    unsure = decide({"fc7": LayerScore("fc7", 0.62, 0.02, 400)}, curve, 100, 0.25)
    assert unsure[0] == 0
    assert any("interval spans the similarity threshold, so cases 3 and 4" in r for r in unsure[1])
    assert unsure[2] == "featcache train --store STORE --dataset DATASET --kind softmax"
    assert decide({"fc7": LayerScore("fc7", 0.62, 0.02, 40_000)}, curve, 100, 0.25)[0] == 4
    low, high = accuracy_interval(0.62, 400)
    assert 0.57 < low < 0.62 < high < 0.67  # Wilson, 95%
    assert accuracy_interval(0.5, 100) == pytest.approx((0.4038, 0.5962), abs=1e-3)


def test_advise_never_sends_back_to_doctor(tmp_path: Path) -> None:
    store = make_store(
        tmp_path / "s", per_class=40, classes=5, separation={"pool5": 0.0, "fc6": 0.0, "fc7": 0.0}
    )
    report = advise(store, "d")
    assert report.case == 4 and "doctor" not in report.next_command
