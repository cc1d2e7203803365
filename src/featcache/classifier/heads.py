"""Heads: scikit-learn classifiers that replace AlexNet's last layer, fitted on cached vectors.

- `SoftmaxHead`: our own multinomial softmax layer (the seed's new fc8): float32, mini-batch
  Adam, inputs standardised inside without copying X, optional early stopping. It also fits
  out of core: X may be a row source (`featcache.store.StoredRows`, anything with ``shape``
  and ``read_rows``), read one mini-batch at a time, so memory does not grow with the rows.
- `LogRegHead`: scikit-learn's `LogisticRegression` on standardised inputs.

Both follow the estimator contract (keyword-only hyperparameters stored as given, ``fit``
returns ``self``, learned attributes end in ``_``) and pass ``parametrize_with_checks``.
"""

from __future__ import annotations

from collections.abc import Iterator
from numbers import Integral, Real
from typing import Any, TypeVar

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, check_random_state, validate_data

from featcache.classifier.headstate import StatefulHead

__all__ = [
    "HEADS",
    "LogRegHead",
    "SoftmaxHead",
    "build_estimator",
    "make_head",
    "predict_top_k",
    "row_blocks",
    "top_k",
]

_MIN_STEPS = 16  # optimizer steps per epoch, at least


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def predict_top_k(estimator: Any, X: Any, k: int) -> np.ndarray:
    """Column indices (into ``estimator.classes_``) of each row's `k` most likely classes,
    best first, scored a block of rows at a time: (n, k) integers, never (n, n_classes)."""
    parts = [top_k(estimator.predict_proba(block), k)[0] for _, block in row_blocks(X)]
    if parts:
        return np.concatenate(parts)
    return np.zeros((0, max(1, min(k, len(estimator.classes_)))), np.intp)


def top_k(proba: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Column indices and probabilities of the `k` most likely classes per row, best first."""
    k = max(1, min(k, proba.shape[1]))
    idx = np.argsort(-proba, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(proba, idx, axis=1)


#: Rows read or scored at once when streaming (4096 fc7 rows are 64 MiB of float32).
_BLOCK_ROWS = 4096


def _is_source(X: Any) -> bool:
    """True for a row source read on demand (``read_rows``), not an in-memory array."""
    return hasattr(X, "read_rows") and hasattr(X, "shape")


def _read(X: Any, rows: np.ndarray) -> np.ndarray:
    """Rows `rows` (sorted row numbers) of an array or a row source."""
    if _is_source(X):
        block: np.ndarray = X.read_rows(rows)
        return block
    return np.asarray(X[rows])


def row_blocks(X: Any, block_rows: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, block) over the rows of an array or a row source (`StoredRows`), in
    order, at most `block_rows` rows a block: how large inputs are scored."""
    block_rows = block_rows or _BLOCK_ROWS
    for start in range(0, X.shape[0], block_rows):
        stop = min(start + block_rows, X.shape[0])
        if _is_source(X):
            yield start, X.read_rows(np.arange(start, stop))
        else:
            yield start, X[start:stop]


def _column_stats(X: Any, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and standard deviation (1 where constant), accumulated in float64
    chunk by chunk in one pass, so no full-size temporary of X is made (X may be a row
    source read a chunk at a time)."""
    total = np.zeros(X.shape[1])
    squares = np.zeros(X.shape[1])
    for _, block in row_blocks(X, chunk):
        total += block.sum(axis=0, dtype=np.float64)
        squares += np.einsum("ij,ij->j", block, block, dtype=np.float64)
    mean = total / X.shape[0]
    var = np.maximum(squares / X.shape[0] - mean * mean, 0.0)
    scale = np.where(var > 1e-12 * np.maximum(1.0, mean * mean), np.sqrt(var), 1.0)
    return mean.astype(np.float32), scale.astype(np.float32)


class _HeadMixin:
    """What both heads share: binary-aware decision_function, predict, predict_proba.

    Each scores `_BLOCK_ROWS` rows at a time, so the float64 logits of a large X are never
    held whole (only `predict_proba` and `decision_function` return one row per input)."""

    classes_: np.ndarray

    def _logits(self, X: Any) -> np.ndarray:
        raise NotImplementedError

    def _scored(self, X: Any, score: Any) -> np.ndarray:
        if not _is_source(X) and (not hasattr(X, "shape") or X.shape[0] <= _BLOCK_ROWS):
            out: np.ndarray = score(self._logits(X))  # checks fitted first
            return out
        parts = [score(self._logits(block)) for _, block in row_blocks(X)]
        return np.concatenate(parts) if parts else score(self._logits(_read(X, np.arange(0))))

    def decision_function(self, X: Any) -> np.ndarray:
        """Logits (n_samples, n_classes); for two classes, the second minus the first."""
        two = len(getattr(self, "classes_", ())) == 2
        return self._scored(X, lambda z: z[:, 1] - z[:, 0] if two else z)

    def predict_proba(self, X: Any) -> np.ndarray:
        return self._scored(X, lambda z: _softmax(z.astype(np.float64)))

    def predict(self, X: Any) -> np.ndarray:
        best = self._scored(X, lambda z: np.argmax(z, axis=1))
        labels: np.ndarray = self.classes_[best]
        return labels


def _check_linear(head: Any) -> None:
    """The shapes a linear head's learned arrays must have (a crafted file may lie)."""
    n_classes, width = len(head.classes_), int(head.n_features_in_)
    coef, intercept = head.coef_, head.intercept_
    if head.classes_.ndim != 1 or n_classes < 2:
        raise ValueError(f"classes_ must list 2 or more classes; got shape {head.classes_.shape}")
    rows = 1 if n_classes == 2 and coef.shape[:1] == (1,) else n_classes
    if coef.shape != (rows, width) or intercept.shape != (rows,):
        raise ValueError(
            f"coef_ {coef.shape} and intercept_ {intercept.shape} do not fit {n_classes} "
            f"classes of {width} features"
        )
    if head.mean_.shape != (width,) or head.scale_.shape != (width,):
        raise ValueError(f"mean_ and scale_ must have shape ({width},)")
    for name in ("coef_", "intercept_", "mean_", "scale_"):
        array = getattr(head, name)
        if array.dtype.kind != "f" or not np.isfinite(array).all():
            raise ValueError(f"{name} must hold finite floats")


class SoftmaxHead(StatefulHead, _HeadMixin, ClassifierMixin, BaseEstimator):
    """A multinomial softmax layer trained with mini-batch Adam on standardised inputs.

    Parameters (keyword-only): ``l2`` weight decay on the standardised weights; ``epochs``
    passes at most; ``batch_size`` rows per step (smaller on small sets, so that an epoch
    makes at least 16 steps); ``learning_rate`` (Adam); ``early_stopping`` stops when
    the loss on a held-out ``validation_fraction`` of the training rows has not improved
    for ``patience`` epochs and keeps the best weights; ``class_weight`` None or "balanced";
    ``random_state`` (0: the same rows give the same head, bit for bit, as the fine-tune;
    None draws a fresh shuffle and split each fit).

    Learned: ``classes_``, ``coef_`` (n_classes, n_features) and ``intercept_`` in the input's
    own units, ``mean_`` and ``scale_`` of the standardisation, ``n_iter_`` epochs run,
    ``loss_curve_`` and ``validation_scores_`` (held-out accuracy per epoch, if any).
    """

    head_kind = "softmax"
    _state_arrays = ("classes_", "coef_", "intercept_", "mean_", "scale_")
    _state_values = (
        "n_features_in_",
        "n_iter_",
        "best_epoch_",
        "loss_curve_",
        "validation_scores_",
    )

    _parameter_constraints: dict[str, list[Any]] = {  # noqa: RUF012 (sklearn's convention)
        "l2": [Interval(Real, 0, None, closed="left")],
        "epochs": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "patience": [Interval(Integral, 1, None, closed="left")],
        "class_weight": [StrOptions({"balanced"}), dict, None],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        *,
        l2: float = 1e-3,
        epochs: int = 20,
        batch_size: int = 512,
        learning_rate: float = 1e-3,
        early_stopping: bool = True,
        validation_fraction: float = 0.1,
        patience: int = 2,
        class_weight: str | dict[Any, float] | None = None,
        random_state: int | np.random.RandomState | None = 0,
    ) -> None:
        self.l2 = l2
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.class_weight = class_weight
        self.random_state = random_state

    def fit(self, X: Any, y: Any) -> SoftmaxHead:
        """Fit on (n_samples, n_features) vectors and labels; return self."""
        self._validate_params()
        if _is_source(X):  # read on demand: validate the labels and the shape only
            y = np.asarray(y)
            if y.ndim != 1 or len(y) != X.shape[0]:
                raise ValueError(f"y has shape {y.shape}; expected ({X.shape[0]},) for X's rows")
            self.n_features_in_ = int(X.shape[1])
        else:
            X, y = validate_data(self, X, y, dtype=[np.float32, np.float64], order="C")
        check_classification_targets(y)
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        n_classes = len(self.classes_)
        if n_classes < 2:
            raise ValueError(
                f"SoftmaxHead needs samples of at least 2 classes; got 1 class ({self.classes_[0]})"
            )
        rng = check_random_state(self.random_state)
        n, d = X.shape
        self.mean_, self.scale_ = _column_stats(X)
        sample_w = self._class_weights(y_idx, n_classes)[y_idx]

        order = rng.permutation(n)
        n_val = int(n * self.validation_fraction) if self.early_stopping else 0
        if n_val < 1 or n - n_val < 1:
            n_val = 0
        val_idx, train_idx = np.sort(order[:n_val]), order[n_val:]

        inv_scale = (1.0 / self.scale_).astype(np.float32)
        W = np.zeros((d, n_classes), np.float32)
        b = np.zeros(n_classes, np.float32)
        m_w, v_w = np.zeros_like(W), np.zeros_like(W)
        m_b, v_b = np.zeros_like(b), np.zeros_like(b)
        beta1, beta2, eps, lr = 0.9, 0.999, 1e-8, np.float32(self.learning_rate)
        l2 = np.float32(self.l2)
        step = 0
        best = (np.inf, W.copy(), b.copy(), 0)
        self.loss_curve_: list[float] = []
        self.validation_scores_: list[float] = []
        # Small sets get smaller batches, so that every epoch makes at least _MIN_STEPS steps.
        batch = max(1, min(self.batch_size, len(train_idx) // _MIN_STEPS))
        stale = 0
        for epoch in range(self.epochs):
            shuffled = train_idx[rng.permutation(len(train_idx))]
            total = 0.0
            for start in range(0, len(shuffled), batch):
                rows = np.sort(shuffled[start : start + batch])  # sorted: sequential reads
                xb = _read(X, rows)
                # W lives in standardised units; fold (x - mean) / scale into it instead of
                # standardising the batch: logits = x @ (W / scale) + (b - mean @ (W / scale)).
                w_in = W * inv_scale[:, None]
                p = _softmax(xb @ w_in + (b - self.mean_ @ w_in))
                wb = sample_w[rows]
                picked = np.arange(len(rows)), y_idx[rows]
                total -= float(np.sum(wb * np.log(p[picked] + 1e-12)))
                p[picked] -= 1.0
                p *= (wb / len(rows))[:, None]
                g_b = p.sum(axis=0)
                g_w = (xb.T @ p - np.outer(self.mean_, g_b)) * inv_scale[:, None] + l2 * W
                step += 1
                corr1, corr2 = 1 - beta1**step, 1 - beta2**step
                for param, grad, m, v in ((W, g_w, m_w, v_w), (b, g_b, m_b, v_b)):
                    m *= beta1
                    m += (1 - beta1) * grad
                    v *= beta2
                    v += (1 - beta2) * grad * grad
                    param -= lr * (m / corr1) / (np.sqrt(v / corr2) + eps)
            self.loss_curve_.append(total / len(train_idx))
            if n_val:
                val_loss, val_score = self._held_out(X, val_idx, y_idx[val_idx], W, b, inv_scale)
                self.validation_scores_.append(val_score)
                if val_loss < best[0] - 1e-4:
                    best, stale = (val_loss, W.copy(), b.copy(), epoch + 1), 0
                else:
                    stale += 1
                    if stale >= self.patience:
                        break
        self.n_iter_ = len(self.loss_curve_)
        if n_val and best[3]:
            W, b = best[1], best[2]
            self.best_epoch_ = best[3]
        else:
            self.best_epoch_ = self.n_iter_
        # Fold the standardisation into the weights: logits = X @ coef_.T + intercept_.
        self.coef_ = np.ascontiguousarray((W / self.scale_[:, None]).T)
        self.intercept_ = (b - self.mean_ @ (W / self.scale_[:, None])).astype(np.float32)
        return self

    def _held_out(
        self,
        X: Any,
        rows: np.ndarray,
        truth: np.ndarray,
        W: np.ndarray,
        b: np.ndarray,
        inv_scale: np.ndarray,
    ) -> tuple[float, float]:
        """(mean log loss, accuracy) on held-out `rows`, scored `_BLOCK_ROWS` at a time."""
        w_in = W * inv_scale[:, None]
        shift = b - self.mean_ @ w_in
        loss = hits = 0.0
        for start in range(0, len(rows), _BLOCK_ROWS):
            part = slice(start, start + _BLOCK_ROWS)
            p = _softmax(_read(X, rows[part]) @ w_in + shift)
            yv = truth[part]
            loss -= float(np.sum(np.log(p[np.arange(len(yv)), yv] + 1e-12)))
            hits += float(np.sum(p.argmax(axis=1) == yv))
        return loss / len(rows), hits / len(rows)

    def _class_weights(self, y_idx: np.ndarray, n_classes: int) -> np.ndarray:
        if self.class_weight is None:
            return np.ones(n_classes, np.float32)
        if self.class_weight == "balanced":
            counts = np.bincount(y_idx, minlength=n_classes)
            return (len(y_idx) / (n_classes * counts)).astype(np.float32)
        given: dict[Any, float] = dict(self.class_weight)  # type: ignore[arg-type]
        return np.array([given.get(c, 1.0) for c in self.classes_], np.float32)

    def _check_state(self) -> None:
        _check_linear(self)

    def _logits(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float32, np.float64], reset=False)
        z: np.ndarray = X.astype(np.float64, copy=False) @ self.coef_.T.astype(np.float64)
        z += self.intercept_
        return z


class LogRegHead(StatefulHead, _HeadMixin, ClassifierMixin, BaseEstimator):
    """scikit-learn's `LogisticRegression` (lbfgs) on standardised vectors.

    Standardising first makes lbfgs converge in far fewer iterations on fc7's wide range
    of feature scales; float32 input stays float32. Parameters are LogisticRegression's,
    declared here too, so a bad value is reported as LogRegHead's before any work.

    Learned: ``classes_``, ``coef_`` and ``intercept_`` (LogisticRegression's, on the
    standardised inputs), ``mean_`` and ``scale_``, ``n_iter_``. The fitted
    LogisticRegression is not kept: its arrays are the whole model, and a saved head is
    only arrays.
    """

    head_kind = "logreg"
    _state_arrays = ("classes_", "coef_", "intercept_", "mean_", "scale_")
    _state_values = ("n_features_in_", "n_iter_")

    _parameter_constraints: dict[str, list[Any]] = {  # noqa: RUF012 (sklearn's convention)
        "C": [Interval(Real, 0, None, closed="neither")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "class_weight": [StrOptions({"balanced"}), dict, None],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        *,
        C: float = 1.0,
        max_iter: int = 200,
        tol: float = 1e-4,
        class_weight: str | dict[Any, float] | None = None,
        random_state: int | None = 0,
    ) -> None:
        self.C = C
        self.max_iter = max_iter
        self.tol = tol
        self.class_weight = class_weight
        self.random_state = random_state

    def fit(self, X: Any, y: Any) -> LogRegHead:
        """Fit on (n_samples, n_features) vectors and labels; return self."""
        self._validate_params()
        X, y = validate_data(self, X, y, dtype=[np.float32, np.float64])
        check_classification_targets(y)
        self.mean_, self.scale_ = _column_stats(X)
        model = LogisticRegression(
            C=self.C,
            max_iter=self.max_iter,
            tol=self.tol,
            class_weight=self.class_weight,
            random_state=self.random_state,
        ).fit(self._standardise(X), y)
        self.classes_ = model.classes_
        self.coef_, self.intercept_ = model.coef_, model.intercept_
        self.n_iter_ = int(np.max(model.n_iter_))
        return self

    def _check_state(self) -> None:
        _check_linear(self)

    def _standardise(self, X: np.ndarray) -> np.ndarray:
        out: np.ndarray = np.subtract(X, self.mean_, dtype=X.dtype)  # the one copy of X
        out /= self.scale_
        return out

    def _logits(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float32, np.float64], reset=False)
        # LogisticRegression.decision_function's own arithmetic, on its saved arrays
        z: np.ndarray = self._standardise(X) @ self.coef_.T + self.intercept_
        if z.shape[1] == 1:
            z = z[:, 0]
        return np.column_stack([-z / 2, z / 2]) if z.ndim == 1 else z


HEADS: dict[str, type[SoftmaxHead] | type[LogRegHead]] = {
    "softmax": SoftmaxHead,
    "logreg": LogRegHead,
}


def make_head(kind: str, params: dict[str, Any] | None = None) -> SoftmaxHead | LogRegHead:
    """Build a head by name with keyword parameters; errors name the parameter."""
    from featcache.errors import ConfigError

    if kind not in HEADS:
        raise ConfigError(f"The 'head' must be one of {list(HEADS)}. Got {kind!r}.")
    return build_estimator(HEADS[kind], params)


Estimator = TypeVar("Estimator", bound=BaseEstimator)


def build_estimator(cls: type[Estimator], params: dict[str, Any] | None = None) -> Estimator:
    """``cls(**params)`` validated as `fit` would, so a bad or unknown parameter is a
    `ConfigError` naming it and the class, before any data is read."""
    from featcache.errors import ConfigError

    params = dict(params or {})
    allowed = cls().get_params()
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ConfigError(
            f"Unknown parameter(s) {unknown} for {cls.__name__}; allowed: {sorted(allowed)}."
        )
    head: Estimator = cls(**params)
    try:
        head._validate_params()
    except ValueError as exc:  # sklearn's InvalidParameterError
        raise ConfigError(str(exc)) from exc
    return head
