"""advise names the cut a large set should fine-tune from, and the commands to get there."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from featcache.analysis.advise import advise
from featcache.analysis.cut import recommend_cut
from test_advise import FP, make_store


def test_the_cut_deepens_with_distance_and_each_sign_the_features_do_not_fit() -> None:
    assert recommend_cut(True, earlier_layer=False, flattened=False) == "pool5"
    assert recommend_cut(True, earlier_layer=True, flattened=False) == "conv4"
    assert recommend_cut(True, earlier_layer=True, flattened=True) == "conv3"
    assert recommend_cut(False, earlier_layer=False, flattened=False) == "conv3"
    assert recommend_cut(False, earlier_layer=True, flattened=True) == "pool2"  # the deepest


def test_a_large_similar_set_gets_the_extract_and_train_commands(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s", per_class=1100, classes=3, separation={"fc7": 2.5})
    report = advise(store, "d", layers=["fc7"])
    assert report.case == 1 and report.cut == "conv4"  # the curve is flat: one cut deeper
    extract, train = report.commands
    assert extract.startswith("featcache extract ") and "--layers conv4 --append" in extract
    assert f"--store {store.path} --weights WEIGHTS --dataset d" in extract
    assert train == report.next_command
    assert train.endswith("--kind finetune --from conv4 --weights WEIGHTS")
    assert any("fine-tune conv5, fc6, fc7, fc8 from the cached conv4" in r for r in report.reasons)
    assert report.as_json()["commands"] == [extract, train]
    assert report.summary()[-2:] == [f"next: {extract}", f"next: {train}"]

    keys = store.vectors("d", "fc7").keys
    store.put_batch(keys, {"conv4": np.ones((len(keys), 4), np.float32)}, FP)
    again = advise(store, "d", layers=["fc7"])
    assert again.commands == [train]  # conv4 is cached now: no extract


def test_a_large_dissimilar_set_retrains_from_a_deeper_cut(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s", per_class=1100, classes=3, separation={"fc7": 0.05})
    report = advise(store, "d", layers=["fc7"])
    assert report.case == 2 and report.cut in {"conv3", "pool2"}
    assert report.next_command.endswith(f"--from {report.cut} --weights WEIGHTS")
    assert any("case 2 (large, not similar): retrain the top" in r for r in report.reasons)
