"""Heads: scikit-learn's estimator checks, determinism, learning, parameters, top-k."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from featcache.classifier.heads import LogRegHead, SoftmaxHead, make_head, top_k
from featcache.errors import ConfigError


@parametrize_with_checks([SoftmaxHead(random_state=0), LogRegHead()])
def test_sklearn_estimator_contract(estimator, check) -> None:  # type: ignore[no-untyped-def]
    check(estimator)


def blobs(n: int = 600, d: int = 40, k: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    centres = rng.standard_normal((k, d)) * 2
    scales = np.exp(rng.normal(0, 1, d))  # features on very different scales, like fc7
    X = np.maximum(centres[y] + rng.standard_normal((n, d)), 0) * scales
    return X.astype(np.float32), y


@pytest.mark.parametrize("head", [SoftmaxHead(random_state=0), LogRegHead()])
def test_heads_learn_and_agree_on_probabilities(head: SoftmaxHead | LogRegHead) -> None:
    X, y = blobs()
    head.fit(X[:500], y[:500])
    assert (head.predict(X[500:]) == y[500:]).mean() > 0.9
    proba = head.predict_proba(X[500:])
    assert proba.shape == (100, 4)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(head.classes_[proba.argmax(axis=1)], head.predict(X[500:]))
    assert head.decision_function(X[:3]).shape == (3, 4)


def test_softmax_is_deterministic_for_a_random_state() -> None:
    X, y = blobs()
    a = SoftmaxHead(random_state=3).fit(X, y)
    b = SoftmaxHead(random_state=3).fit(X, y)
    c = SoftmaxHead(random_state=4).fit(X, y)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    assert not np.array_equal(a.coef_, c.coef_)


@pytest.mark.parametrize("kind", [SoftmaxHead, LogRegHead])
def test_heads_are_seeded_by_default(kind: type[SoftmaxHead] | type[LogRegHead]) -> None:
    # The same `train` command gives the same head, as the fine-tune does: random_state 0.
    X, y = blobs()
    assert kind().random_state == 0
    a, b = kind().fit(X, y), kind().fit(X, y)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    np.testing.assert_array_equal(a.intercept_, b.intercept_)
    if kind is SoftmaxHead:
        unseeded = [SoftmaxHead(random_state=None).fit(X, y).coef_ for _ in range(2)]
        assert not np.array_equal(*unseeded)  # the default is what makes them equal


def test_softmax_folds_standardisation_into_coef() -> None:
    X, y = blobs()
    head = SoftmaxHead(random_state=0, early_stopping=False, epochs=3).fit(X, y)
    assert head.coef_.shape == (4, 40) and head.coef_.dtype == np.float32
    np.testing.assert_allclose(head.mean_, X.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(head.scale_, X.std(axis=0), rtol=1e-4)
    assert head.n_iter_ == 3 and len(head.loss_curve_) == 3
    assert head.loss_curve_[-1] < head.loss_curve_[0]


def test_early_stopping_keeps_the_best_epoch() -> None:
    # More features than samples and weak signal: the held-out loss turns up early.
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    X = (rng.standard_normal((600, 500)) + 0.3 * y[:, None]).astype(np.float32)
    head = SoftmaxHead(random_state=0, epochs=50, patience=2).fit(X, y)
    assert head.n_iter_ < 50
    assert head.best_epoch_ == head.n_iter_ - 2  # stopped `patience` epochs after the best
    assert len(head.validation_scores_) == head.n_iter_


def test_balanced_class_weight_lifts_the_rare_class() -> None:
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(950, int), np.ones(50, int)]
    X = (rng.standard_normal((1000, 10)) + y[:, None] * 0.8).astype(np.float32)
    plain = SoftmaxHead(random_state=0).fit(X, y)
    balanced = SoftmaxHead(random_state=0, class_weight="balanced").fit(X, y)
    assert (balanced.predict(X) == 1).sum() > (plain.predict(X) == 1).sum()


def test_string_labels() -> None:
    X, y = blobs(k=3)
    names = np.array(["stop", "yield", "priority"])[y]
    head = SoftmaxHead(random_state=0).fit(X, names)
    assert set(head.predict(X[:20])) <= {"stop", "yield", "priority"}


def test_bad_parameters_are_named() -> None:
    with pytest.raises(ValueError, match="'l2' parameter of SoftmaxHead must be"):
        SoftmaxHead(l2=-1).fit(*blobs())
    with pytest.raises(ConfigError, match="'learning_rate' parameter of SoftmaxHead"):
        make_head("softmax", {"learning_rate": 0})
    with pytest.raises(ConfigError, match=r"Unknown parameter\(s\) \['lr'\] for SoftmaxHead"):
        make_head("softmax", {"lr": 0.1})
    with pytest.raises(ConfigError, match="'head' must be one of"):
        make_head("svm")
    assert make_head("logreg", {"C": 0.5}).C == 0.5


def test_top_k() -> None:
    proba = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]])
    idx, p = top_k(proba, 2)
    np.testing.assert_array_equal(idx, [[1, 2], [0, 2]])
    np.testing.assert_allclose(p, [[0.6, 0.3], [0.5, 0.3]])
    assert top_k(proba, 10)[0].shape == (2, 3)
