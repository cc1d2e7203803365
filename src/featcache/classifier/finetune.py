"""`FineTuneHead`: keep training AlexNet's fc6 and fc7, and a new fc8, on cached pool5 vectors.

The seed's case 1 (a large set, a similar task): start from the trained network and keep
training its top. conv1 to conv5 do not change when only the top trains, so their output
(pool5: 6x6x256 flattened in H, W, C order, 9,216 values) is read from the store instead of
being recomputed in every epoch::

    pool5 (9216) → fc6 (4096, ReLU, dropout) → fc7 (4096, ReLU, dropout) → fc8 (classes)

``layers="fc7,fc8"`` starts one layer higher, from cached fc6 vectors. fc6 and fc7 start
from the extractor's own weights (`fit(..., pretrained=weights)`); fc8 is new.

Training runs in TensorFlow (imported by `fit` only): AdamW, a smaller learning rate for the
pretrained layers, dropout, early stopping on held-out rows keeping the best epoch, float32
or bf16 (bf16 products, float32 master weights and loss). X may be a `StoredRows`, read
batch by batch from the store's memory-mapped shards. Prediction is NumPy float32 and never
imports TensorFlow.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, Protocol

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, check_random_state, validate_data

from featcache.classifier.headstate import StatefulHead

__all__ = ["LAYER_SETS", "Epoch", "FineTuneHead", "PretrainedWeights", "RowSource"]

#: What `layers` may say: the layers trained, and the cached layer they start from.
LAYER_SETS: dict[str, tuple[tuple[str, ...], str]] = {
    "fc6,fc7,fc8": (("fc6", "fc7", "fc8"), "pool5"),
    "fc7,fc8": (("fc7", "fc8"), "fc6"),
}
_MIN_STEPS = 8  # optimizer steps per epoch, at least (small sets get smaller batches)
_PREDICT_BATCH = 1024
_ROW_BLOCK = 32
_STANDARDISE_ROWS = 1024  # rows sampled to measure the scale of each layer's input


@dataclass(frozen=True)
class Epoch:
    """One finished epoch of `FineTuneHead.fit`, as Keras's ``fit`` reports it: the mean
    training loss, the held-out accuracy (None without early stopping's held-out rows) and
    the epoch's training seconds."""

    epoch: int  # 1-based
    epochs: int  # at most this many
    loss: float
    val_accuracy: float | None
    seconds: float


class PretrainedWeights(Protocol):
    """What `fit` needs of a weights file (`featcache.extractor.weights.Weights` is one)."""

    @property
    def layers(self) -> Mapping[str, tuple[np.ndarray, np.ndarray]]: ...

    @property
    def sha256(self) -> str: ...


class RowSource(Protocol):
    """A 2-D matrix read by rows (`featcache.classifier.rows.StoredRows` is one)."""

    @property
    def shape(self) -> tuple[int, int]: ...

    def read_rows(self, rows: np.ndarray) -> np.ndarray: ...


class _ArrayRows:
    """An in-memory array as a `RowSource`."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array
        self.shape = (int(array.shape[0]), int(array.shape[1]))

    def read_rows(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.array[rows], dtype=np.float32)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def _prefetched(
    source: RowSource, batches: list[np.ndarray], pool: ThreadPoolExecutor
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(rows, vectors) per batch; the next batch is read while the current one trains."""
    if not batches:
        return
    pending = pool.submit(source.read_rows, batches[0])
    for i, rows in enumerate(batches):
        current = pending.result()
        if i + 1 < len(batches):
            pending = pool.submit(source.read_rows, batches[i + 1])
        yield rows, current


class FineTuneHead(StatefulHead, ClassifierMixin, BaseEstimator):
    """AlexNet's fc6, fc7 and a new fc8, fine-tuned on cached pool5 (or fc7, fc8 on fc6).

    Parameters (keyword-only): ``layers`` "fc6,fc7,fc8" (X is pool5, 9,216 wide) or
    "fc7,fc8" (X is fc6, 4,096 wide); ``init`` "pretrained" (fc6/fc7 from the weights given
    to `fit`) or "random" (He-initialised hidden layers ``hidden_units`` wide, trained from
    scratch: the seed's case 2); ``epochs`` passes at most (0: only the starting point);
    ``batch_size`` rows per step; ``learning_rate`` (AdamW) of new layers and
    ``pretrained_learning_rate`` of the pretrained ones (None: a hundredth of it; a tenth
    measured 1.2 points worse on the digits);
    ``weight_decay`` (decoupled, on weight matrices); ``dropout`` rate after fc6 and fc7
    (AlexNet trained with 0.5; 0 measured better fine-tuning the digits from the cache);
    ``early_stopping`` on a held-out ``validation_fraction`` of the rows, stopping after
    ``patience`` epochs without a better loss and keeping the best epoch; ``precision``
    "float32" or "bf16" (CPUs with AVX512-BF16/AMX, GPUs); ``random_state`` makes the fit
    repeatable.

    Learned: ``classes_``, ``coefs_`` and ``intercepts_`` (one per layer, (in, out); float16
    when trained in bf16, halving the head file), ``layers_``, ``weights_sha256_`` (the
    pretrained file's digest, or None), ``n_iter_``, ``best_epoch_``, ``loss_curve_``,
    ``validation_scores_`` (held-out accuracy per epoch), ``epoch_seconds_`` (training time
    per epoch, the held-out pass excluded).
    """

    head_kind = "finetune"
    _state_arrays = ("classes_",)
    _state_array_lists = ("coefs_", "intercepts_")
    _state_values = (
        "n_features_in_",
        "layers_",
        "weights_sha256_",
        "n_iter_",
        "best_epoch_",
        "loss_curve_",
        "validation_scores_",
        "epoch_seconds_",
    )

    _parameter_constraints: dict[str, list[Any]] = {  # noqa: RUF012 (sklearn's convention)
        "layers": [StrOptions(set(LAYER_SETS))],
        "init": [StrOptions({"pretrained", "random"})],
        "hidden_units": [Interval(Integral, 1, None, closed="left")],
        "epochs": [Interval(Integral, 0, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "pretrained_learning_rate": [Interval(Real, 0, None, closed="left"), None],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "patience": [Interval(Integral, 1, None, closed="left")],
        "precision": [StrOptions({"float32", "bf16"})],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        *,
        layers: str = "fc6,fc7,fc8",
        init: str = "pretrained",
        hidden_units: int = 4096,
        epochs: int = 10,
        batch_size: int = 128,
        learning_rate: float = 1e-3,
        pretrained_learning_rate: float | None = None,
        weight_decay: float = 5e-4,
        dropout: float = 0.0,
        early_stopping: bool = True,
        validation_fraction: float = 0.1,
        patience: int = 2,
        precision: str = "float32",
        random_state: int | np.random.RandomState | None = None,
    ) -> None:
        self.layers = layers
        self.init = init
        self.hidden_units = hidden_units
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.pretrained_learning_rate = pretrained_learning_rate
        self.weight_decay = weight_decay
        self.dropout = dropout
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.precision = precision
        self.random_state = random_state

    # -- input ------------------------------------------------------------------------------

    def _rows(self, X: Any, *, reset: bool, y: Any = None) -> tuple[RowSource, Any]:
        """X as a `RowSource`: a lazy one is kept as it is, anything else validated."""
        if hasattr(X, "read_rows") and hasattr(X, "shape"):
            if len(X.shape) != 2 or X.shape[0] < 1:
                raise ValueError(f"Expected a non-empty 2-D row source, got shape {X.shape}.")
            if reset:
                self.n_features_in_ = int(X.shape[1])
            elif X.shape[1] != self.n_features_in_:
                raise ValueError(
                    f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                    f"{self.n_features_in_} features as input."
                )
            if y is not None:
                y = np.asarray(y)
                if y.ndim != 1 or len(y) != X.shape[0]:
                    raise ValueError(f"y has shape {y.shape}, expected ({X.shape[0]},).")
            return X, y
        if y is None:
            array = validate_data(self, X, dtype=[np.float32, np.float64], reset=reset)
        else:
            array, y = validate_data(self, X, y, dtype=[np.float32, np.float64], reset=reset)
        return _ArrayRows(array), y

    # -- fit --------------------------------------------------------------------------------

    def fit(
        self,
        X: Any,
        y: Any,
        pretrained: PretrainedWeights | None = None,
        *,
        on_epoch: Callable[[Epoch], None] | None = None,
    ) -> FineTuneHead:
        """Fit on (n_samples, n_features) vectors and labels; return self.

        `pretrained` holds fc6 and fc7 as the extractor's weights file has them; it is
        required with ``init="pretrained"`` and ignored with ``init="random"``. `on_epoch`
        hears of every finished epoch (loss, held-out accuracy, seconds): progress.
        """
        self._validate_params()
        rows, y = self._rows(X, reset=True, y=y)
        check_classification_targets(y)
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        y_idx = y_idx.astype(np.int32)
        if len(self.classes_) < 2:
            raise ValueError(
                f"FineTuneHead needs samples of at least 2 classes; got 1 class "
                f"({self.classes_[0]})"
            )
        rng = check_random_state(self.random_state)
        self.layers_, _ = LAYER_SETS[self.layers]
        start = self._start(rows.shape[1], len(self.classes_), pretrained, rng)

        n = rows.shape[0]
        order = rng.permutation(n)
        n_val = int(n * self.validation_fraction) if self.early_stopping else 0
        if n_val < 1 or n - n_val < 1:
            n_val = 0
        val_idx, train_idx = np.sort(order[:n_val]), order[n_val:]
        batch = max(1, min(self.batch_size, len(train_idx) // _MIN_STEPS))
        seed = int(rng.randint(2**31 - 1))

        sample = np.sort(rng.permutation(train_idx)[:_STANDARDISE_ROWS])
        trainer = _Trainer(self, start, rows.read_rows(sample), seed)
        del start
        self.loss_curve_: list[float] = []
        self.validation_scores_: list[float] = []
        self.epoch_seconds_: list[float] = []
        best: tuple[float, list[np.ndarray] | None, int] = (np.inf, None, 0)
        stale = 0
        with ThreadPoolExecutor(1, thread_name_prefix="featcache-rows") as pool:
            for epoch in range(self.epochs):
                started = time.perf_counter()
                shuffled = train_idx[rng.permutation(len(train_idx))]
                # sorted within a batch: reads go through the shards in order
                batches = [np.sort(shuffled[i : i + batch]) for i in range(0, len(shuffled), batch)]
                total = 0.0
                for picked, xb in _prefetched(rows, batches, pool):
                    _check_finite(xb)
                    total += trainer.step(xb, y_idx[picked]) * len(picked)
                self.loss_curve_.append(total / len(train_idx))
                self.epoch_seconds_.append(time.perf_counter() - started)
                if not n_val:
                    if on_epoch is not None:
                        on_epoch(
                            Epoch(
                                epoch + 1,
                                self.epochs,
                                self.loss_curve_[-1],
                                None,
                                self.epoch_seconds_[-1],
                            )
                        )
                    continue
                val_batches = [
                    val_idx[i : i + _PREDICT_BATCH] for i in range(0, n_val, _PREDICT_BATCH)
                ]
                losses, hits = 0.0, 0
                for picked, xb in _prefetched(rows, val_batches, pool):
                    logits = trainer.logits(xb)
                    yv = y_idx[picked]
                    p = _softmax(logits.astype(np.float64))
                    losses -= float(np.sum(np.log(p[np.arange(len(yv)), yv] + 1e-12)))
                    hits += int(np.sum(p.argmax(axis=1) == yv))
                self.validation_scores_.append(hits / n_val)
                if on_epoch is not None:
                    on_epoch(
                        Epoch(
                            epoch + 1,
                            self.epochs,
                            self.loss_curve_[-1],
                            hits / n_val,
                            self.epoch_seconds_[-1],
                        )
                    )
                if losses / n_val < best[0] - 1e-4:
                    best, stale = (losses / n_val, trainer.weights(), epoch + 1), 0
                else:
                    stale += 1
                    if stale >= self.patience:
                        break
        self.n_iter_ = len(self.loss_curve_)
        final = best[1] if best[1] is not None else trainer.weights()
        self.best_epoch_ = best[2] if best[1] is not None else self.n_iter_
        del trainer
        dtype = np.float16 if self.precision == "bf16" else np.float32
        self.coefs_ = [w.astype(dtype, copy=False) for w in final[0::2]]
        self.intercepts_ = [b.astype(np.float32, copy=False) for b in final[1::2]]
        del final
        self._cast_for_prediction()
        return self

    def _start(
        self,
        n_features: int,
        n_classes: int,
        pretrained: PretrainedWeights | None,
        rng: np.random.RandomState,
    ) -> list[tuple[np.ndarray, np.ndarray, bool]]:
        """(W, b, pretrained?) per layer at the start of training."""
        hidden = self.layers_[:-1]
        start: list[tuple[np.ndarray, np.ndarray, bool]] = []
        if self.init == "pretrained":
            if pretrained is None:
                raise ValueError(
                    "FineTuneHead(init='pretrained') starts "
                    f"{' and '.join(hidden)} from the extractor's weights: pass "
                    "fit(X, y, pretrained=read_weights(path)) or set init='random'."
                )
            width = n_features
            for name in hidden:
                if name not in pretrained.layers:
                    raise ValueError(f"The pretrained weights have no layer '{name}'.")
                w, b = pretrained.layers[name]
                if w.shape[0] != width:
                    raise ValueError(
                        f"Layer '{name}' takes {w.shape[0]} inputs but X has {width} features; "
                        f"layers='{self.layers}' trains on "
                        f"'{LAYER_SETS[self.layers][1]}' vectors."
                    )
                start.append((np.asarray(w, np.float32), np.asarray(b, np.float32), True))
                width = w.shape[1]
            self.weights_sha256_: str | None = pretrained.sha256
        else:
            generator = np.random.default_rng(rng.randint(2**31 - 1))
            width = n_features
            for _ in hidden:
                scale = np.float32(np.sqrt(2.0 / width))
                w = generator.standard_normal((width, self.hidden_units), dtype=np.float32)
                start.append((w * scale, np.zeros(self.hidden_units, np.float32), False))
                width = self.hidden_units
            self.weights_sha256_ = None
        # fc8 starts at zero: uniform answers whatever the scale of fc7's activations.
        start.append(
            (np.zeros((width, n_classes), np.float32), np.zeros(n_classes, np.float32), False)
        )
        return start

    # -- predict ----------------------------------------------------------------------------

    def _cast_for_prediction(self) -> None:
        """float32 copies of float16-stored weights: NumPy has no fast float16 product."""
        if any(w.dtype != np.float32 for w in self.coefs_):
            self._coefs32: list[np.ndarray] = [w.astype(np.float32) for w in self.coefs_]
        else:
            self._coefs32 = list(self.coefs_)

    def _check_state(self) -> None:
        """The layers chain from n_features_in_ to the classes (a crafted file may lie)."""
        self.layers_ = tuple(self.layers_)
        if self.layers_ not in [trained for trained, _ in LAYER_SETS.values()]:
            raise ValueError(f"layers_ {list(self.layers_)} is not one of {list(LAYER_SETS)}")
        if not len(self.coefs_) == len(self.intercepts_) == len(self.layers_):
            raise ValueError(f"{len(self.coefs_)} weight matrices for layers {self.layers_}")
        width = int(self.n_features_in_)
        for layer, w, b in zip(self.layers_, self.coefs_, self.intercepts_, strict=True):
            if w.ndim != 2 or w.shape[0] != width or b.shape != (w.shape[1],):
                raise ValueError(
                    f"{layer}: weights {w.shape} and biases {b.shape} do not follow a "
                    f"{width}-wide input"
                )
            if w.dtype.kind != "f" or b.dtype.kind != "f" or not np.isfinite(w).all():
                raise ValueError(f"{layer}: weights must be finite floats")
            width = w.shape[1]
        if self.classes_.ndim != 1 or width != len(self.classes_):
            raise ValueError(f"the last layer has {width} outputs for {len(self.classes_)} classes")
        self._cast_for_prediction()

    def __getstate__(self) -> dict[str, Any]:
        state: dict[str, Any] = super().__getstate__()
        state = dict(state)
        state.pop("_coefs32", None)  # rebuilt on load; the file keeps only coefs_
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        if "coefs_" in state:
            self._cast_for_prediction()

    def _forward(self, x: np.ndarray, stop: int | None = None) -> np.ndarray:
        """Inference (no dropout) through the first `stop` layers (all by default)."""
        coefs = self._coefs32[:stop]
        h = x
        for i, (w, b) in enumerate(zip(coefs, self.intercepts_, strict=False)):
            h = h @ w
            h += b
            if i < len(self.coefs_) - 1:
                np.maximum(h, 0, out=h)
        return h

    def _batched(self, X: Any, stop: int | None = None) -> np.ndarray:
        """`_forward` over blocks of exactly `_ROW_BLOCK` rows (the last one zero-padded):
        BLAS sums a row the same way in every block of one size, so an image gets the same
        answer alone or in any batch, to the last bit."""
        check_is_fitted(self)
        rows, _ = self._rows(X, reset=False)
        parts = []
        for start in range(0, rows.shape[0], _PREDICT_BATCH):
            chunk = rows.read_rows(np.arange(start, min(start + _PREDICT_BATCH, rows.shape[0])))
            n = len(chunk)
            padded = np.zeros((-(-n // _ROW_BLOCK) * _ROW_BLOCK, chunk.shape[1]), np.float32)
            padded[:n] = chunk
            parts += [
                self._forward(padded[i : i + _ROW_BLOCK], stop)
                for i in range(0, len(padded), _ROW_BLOCK)
            ]
        return np.concatenate(parts)[: rows.shape[0]]

    def activations(self, X: Any, layer: str = "fc7") -> np.ndarray:
        """The (n_samples, width) output of hidden `layer` (after its ReLU), without dropout."""
        check_is_fitted(self)
        if layer not in self.layers_[:-1]:
            raise ValueError(
                f"The 'layer' must be one of {list(self.layers_[:-1])}. Got {layer!r}."
            )
        return self._batched(X, self.layers_.index(layer) + 1)

    def decision_function(self, X: Any) -> np.ndarray:
        """Logits (n_samples, n_classes); for two classes, the second minus the first."""
        z = self._batched(X).astype(np.float64)
        return z[:, 1] - z[:, 0] if len(self.classes_) == 2 else z

    def predict_proba(self, X: Any) -> np.ndarray:
        return _softmax(self._batched(X).astype(np.float64))

    def predict(self, X: Any) -> np.ndarray:
        best = np.argmax(self._batched(X), axis=1)  # checks fitted first
        labels: np.ndarray = self.classes_[best]
        return labels


def _check_finite(x: np.ndarray) -> None:
    if not np.isfinite(x).all():
        raise ValueError("Input X contains NaN or infinity.")


def _input_stats(h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and standard deviation (1 where constant) of a sample."""
    mean = h.mean(axis=0, dtype=np.float64)
    std = h.std(axis=0, dtype=np.float64)
    scale = np.where(std > 1e-6 * np.maximum(1.0, np.abs(mean)), std, 1.0)
    return mean.astype(np.float32), scale.astype(np.float32)


class _Trainer:
    """The TensorFlow side of one fit: variables, AdamW slots, the compiled step.

    Every layer sees its input standardised by constants measured on a sample at the start,
    and its weights are kept in those units (W * scale, b + mean @ W: the same function).
    Adam then moves each layer by the same relative amount whatever the scale of the
    activations, which for pretrained weights differs by orders of magnitude between files.
    `weights` folds the constants back, so the head is plain AlexNet arithmetic.
    """

    def __init__(
        self,
        head: FineTuneHead,
        start: list[tuple[np.ndarray, np.ndarray, bool]],
        sample: np.ndarray,
        seed: int,
    ) -> None:
        from featcache._tf import import_tensorflow

        tf = import_tensorflow()  # its start-up lines (oneDNN, cuInit) captured, not shown

        compute = tf.bfloat16 if head.precision == "bf16" else tf.float32
        new_lr = float(head.learning_rate)
        old_lr = (
            new_lr / 100
            if head.pretrained_learning_rate is None
            else float(head.pretrained_learning_rate)
        )
        self.stats: list[tuple[np.ndarray, np.ndarray]] = []
        h = sample
        for i, (w, b, _) in enumerate(start):
            self.stats.append(_input_stats(h))
            if i < len(start) - 1:
                h = np.maximum(h @ w + b, 0)
        del h
        self.variables: list[Any] = []
        slots = []
        for (w, b, was_pretrained), (mean, scale) in zip(start, self.stats, strict=True):
            lr = old_lr if was_pretrained else new_lr
            w_std = w * scale[:, None]
            b_std = b + mean @ w
            for array, decay in ((w_std, head.weight_decay), (b_std, 0.0)):
                var = tf.Variable(array, trainable=True)
                self.variables.append(var)
                zeros = tf.zeros_like(array)
                slots.append((var, tf.Variable(zeros), tf.Variable(zeros), lr, decay))
            del w_std, b_std
        count = tf.Variable(0, dtype=tf.int64)
        dropout = float(head.dropout)
        n_layers = len(start)
        variables = self.variables
        shifts = [tf.constant(mean) for mean, _ in self.stats]
        inv_scales = [tf.constant(1.0 / scale) for _, scale in self.stats]

        def forward(x: Any, seeds: Any) -> Any:
            h = x
            for i in range(n_layers):
                w, b = variables[2 * i], variables[2 * i + 1]
                h = (tf.cast(h, tf.float32) - shifts[i]) * inv_scales[i]
                if i > 0 and seeds is not None and dropout > 0:
                    # on the centred activations: a dropped unit takes its mean value
                    h = tf.nn.experimental.stateless_dropout(
                        h, dropout, seed=seeds + tf.constant([0, i], tf.int64)
                    )
                h = tf.matmul(tf.cast(h, compute), tf.cast(w, compute)) + tf.cast(b, compute)
                if i < n_layers - 1:
                    h = tf.nn.relu(h)
            return tf.cast(h, tf.float32)

        def train_step(x: Any, y: Any) -> Any:
            step = count.assign_add(1)
            seeds = tf.stack([tf.constant(seed, tf.int64), step * 16])
            with tf.GradientTape() as tape:
                logits = forward(x, seeds)
                loss = tf.reduce_mean(
                    tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
                )
            grads = tape.gradient(loss, variables)
            t = tf.cast(step, tf.float32)
            b1, b2 = 0.9, 0.999
            for (var, m, v, lr, decay), grad in zip(slots, grads, strict=True):
                if decay:
                    var.assign_sub(var * (lr * decay))  # decoupled weight decay (AdamW)
                tf.raw_ops.ResourceApplyAdam(
                    var=var.handle,
                    m=m.handle,
                    v=v.handle,
                    beta1_power=tf.pow(b1, t),
                    beta2_power=tf.pow(b2, t),
                    lr=tf.constant(lr, tf.float32),
                    beta1=tf.constant(b1, tf.float32),
                    beta2=tf.constant(b2, tf.float32),
                    epsilon=tf.constant(1e-8, tf.float32),
                    grad=grad,
                )
            return loss

        x_spec = tf.TensorSpec([None, int(variables[0].shape[0])], tf.float32)
        self._step = tf.function(
            train_step,
            input_signature=[x_spec, tf.TensorSpec([None], tf.int32)],
            autograph=False,
        )
        self._logits = tf.function(
            lambda x: forward(x, None), input_signature=[x_spec], autograph=False
        )

    def step(self, x: np.ndarray, y: np.ndarray) -> float:
        return float(self._step(x, y))

    def logits(self, x: np.ndarray) -> np.ndarray:
        out: np.ndarray = self._logits(x).numpy()
        return out

    def weights(self) -> list[np.ndarray]:
        """W, b, W, b, ... as NumPy arrays in the units of the raw inputs."""
        out: list[np.ndarray] = []
        for i, (mean, scale) in enumerate(self.stats):
            w = self.variables[2 * i].numpy() / scale[:, None]
            out += [w, (self.variables[2 * i + 1].numpy() - mean @ w).astype(np.float32)]
        return out
