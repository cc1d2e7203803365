"""doctor's scalable path finds what its exact path finds: on a small store with planted
copies, flipped labels, an exact duplicate and outliers, the cell index (instead of the exact
search), fold heads fitted on one fixed sample, and Datalab's kNN checks on a fixed sample
give the same groups, leakage, duplicates and planted findings as the exact path."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest

from featcache.analysis.doctor import DoctorConfig, DoctorReport, doctor
from featcache.analysis.duplicates import NearDuplicateConfig, near_duplicate_pairs
from featcache.analysis.labels import burst_aware_folds
from featcache.errors import ConfigError
from planted import recall_at
from test_doctor import make_store

SCALED = DoctorConfig(
    folds=4,
    fold_fit_rows=120,  # of ~250 labelled rows: one sample of 160 for the 4 fold heads
    knn_check_rows=100,  # Datalab's kNN checks on a fixed sample of 100 rows
    # 8 cells, 3 probed (not the exact search); 20 candidates re-scored besides groupable ones
    near=NearDuplicateConfig(cell_rows=32, rescore_pairs=20),
)


def _partition(report: DoctorReport) -> set[frozenset[str]]:
    members: dict[int, set[str]] = {}
    for key, group in report.groups.items():
        members.setdefault(group, set()).add(key)
    return {frozenset(keys) for keys in members.values() if len(keys) > 1}


def _grouped_pairs(report: DoctorReport) -> set[frozenset[str]]:
    near = report.near_duplicates
    near = near[near.grouped]
    return {frozenset(p) for p in zip(near.path_a, near.path_b, strict=True)}


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> tuple[DoctorReport, DoctorReport, dict]:
    store, planted = make_store(tmp_path_factory.mktemp("scale"))
    exact = doctor(store, "toy", config=DoctorConfig(folds=4))
    scaled = doctor(store, "toy", config=SCALED)
    return exact, scaled, planted


def test_groups_duplicates_and_leakage_are_the_same(reports: tuple) -> None:
    exact, scaled, planted = reports
    assert exact.search_exact and not scaled.search_exact
    assert _partition(scaled) == _partition(exact) and _partition(exact)
    assert _grouped_pairs(scaled) == _grouped_pairs(exact)
    assert {frozenset(p) for p in planted["pairs"]} <= _grouped_pairs(scaled)
    assert scaled.leaked_rows == exact.leaked_rows and scaled.split_rows == exact.split_rows
    assert scaled.leakage["test"] == pytest.approx(exact.leakage["test"])
    assert math.isnan(scaled.leakage["val"]) == math.isnan(exact.leakage["val"])
    assert scaled.exact_duplicates["keys"].tolist() == exact.exact_duplicates["keys"].tolist()
    assert len(scaled.exact_duplicates) == 1


def test_planted_label_issues_and_outliers_are_found_by_both(reports: tuple) -> None:
    exact, scaled, planted = reports
    for report in (exact, scaled):
        issues = list(report.label_issues.path)
        assert len(issues) == report.labelled_rows  # every labelled row is still scored
        assert recall_at(issues, planted["flipped"], 2 * len(planted["flipped"])) >= 0.7
        assert recall_at(list(report.outliers.path), planted["outliers"], 6) == 1.0
    top = 2 * len(planted["flipped"])
    found_exact = set(exact.label_issues.path[:top]) & set(planted["flipped"])
    found_scaled = set(scaled.label_issues.path[:top]) & set(planted["flipped"])
    assert found_scaled == found_exact


def test_the_sampled_knn_checks_say_how_many_rows_they_read(reports: tuple) -> None:
    exact, scaled, _ = reports
    assert "knn_checks" not in exact.datalab
    sample = scaled.datalab["knn_checks"]
    assert sample == {
        "checks": ["outlier", "non_iid", "underperforming_group"],
        "rows": 100,
        "of": scaled.labelled_rows,
        "sampled": True,
    }
    scored = scaled.outliers["datalab_score"].notna()
    assert int(scored.sum()) == 100  # Datalab's outlier score: the sampled rows only
    assert exact.outliers["datalab_score"].notna().all()
    assert set(scaled.datalab) >= {"class_imbalance", "non_iid", "underperforming_group"}
    assert {"label", "class_imbalance", "outlier", "non_iid"} <= set(scaled.datalab["summary"])
    text = "\n".join(scaled.summary())
    assert f"a fixed random sample of 100 of the {scaled.labelled_rows} labelled rows" in text


def test_burst_folds_count_per_class_and_group() -> None:
    """The vectorised counts split the same groups as a loop over the classes would."""
    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(40)]
    y = np.array([0] * 20 + [1] * 12 + [2] * 8)
    # group 7: 15 of class 0's 20 rows (a burst); group 8: 2 rows of class 1 (not)
    groups = {keys[i]: 7 for i in range(15)} | {keys[20]: 8, keys[21]: 8}
    folds, split = burst_aware_folds(keys, y, groups, 3)
    assert split == 1
    assert len(set(folds[:15].tolist())) > 1  # the burst's rows spread over folds
    assert folds[20] == folds[21]  # a small group stays whole
    for c in range(3):
        assert len(set(folds[y == c].tolist())) > 1


def test_knn_check_rows_is_validated() -> None:
    with pytest.raises(ConfigError, match=r"'knn_check_rows' must be >= 3\. Got 2"):
        DoctorConfig(knn_check_rows=2)


def test_rescoring_keeps_the_closest_candidates() -> None:
    """Past `rescore_pairs` candidates, the closest by the search are re-scored: the top
    of the list is the same as with every candidate re-scored."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((300, 16)).astype(np.float32)
    X[1::2] = X[0::2] + 0.05 * rng.standard_normal((150, 16)).astype(np.float32)
    every = near_duplicate_pairs(X, None, None, NearDuplicateConfig(list_similarity=-1.0))
    some = near_duplicate_pairs(
        X, None, None, NearDuplicateConfig(list_similarity=-1.0, rescore_pairs=200)
    )
    assert len(every.a) > 1000 and len(some.a) == 200
    np.testing.assert_array_equal(some.a[:150], every.a[:150])
    np.testing.assert_array_equal(some.b[:150], every.b[:150])
    assert {(int(a), int(b)) for a, b in zip(some.a[:150], some.b[:150], strict=True)} == {
        (i, i + 1) for i in range(0, 300, 2)
    }
    with pytest.raises(ConfigError, match=r"'rescore_pairs' must be >= 1\. Got 0"):
        NearDuplicateConfig(rescore_pairs=0)
