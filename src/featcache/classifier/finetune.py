"""`FineTuneHead`: keep training AlexNet above a cached cut, and never end worse than frozen.

The seed's case 1 (a large set, a similar task): start from the trained network and keep
training its top. The layers below the cut do not change, so their output (the cut: pool5,
or conv5, conv4, conv3, pool2 for deeper fine-tunes, or fc6) is read from the store instead
of being recomputed in every epoch (`featcache.architecture` lists the cuts)::

    pool5 (9216) → fc6 (4096, ReLU) → fc7 (4096, ReLU) → fc8 (classes)      cut="pool5"
    conv4 (13x13x384) → conv5 → pool5 → fc6 → fc7 → fc8                      cut="conv4"

Linear probing, then fine-tuning (Kumar et al. 2022): the new fc8 is first fitted on the
frozen network's fc7 by a `SoftmaxHead` (the frozen head's solution), and only then does
every layer train, the pretrained ones at a lower learning rate. How many epochs is chosen
on held-out rows, epoch 0 (the frozen network with its probe) a candidate that wins ties,
and fine-tuning is kept only when it classifies those rows significantly better than the
frozen start (McNemar's test: `featcache.classifier.epochs`); then the head is refitted on
every training row: the probe on all of them, then that many epochs. Zero epochs chosen
thus gives exactly the frozen softmax head's solution (same rows, hyperparameters and seed),
not a probe that saw fewer rows. ``random_state`` defaults to 0, so the same command gives
the same head.

Training runs in TensorFlow (`featcache.classifier._finetune_tf`, imported by `fit` only). X
may be a `StoredRows`, read batch by batch from the store's memory-mapped shards. Prediction
is NumPy float32 and never imports TensorFlow.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import astuple, dataclass
from numbers import Integral, Real
from typing import Any, Protocol

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, check_random_state, validate_data

from featcache.classifier.cuts import (
    CUTS,
    Stage,
    conv2d,
    max_pool,
    pretrained_params,
    run_stages,
    spatial_shape,
    stages_above,
)
from featcache.classifier.epochs import EpochChoice, select_epochs
from featcache.classifier.heads import SoftmaxHead
from featcache.classifier.headstate import HeadState, StatefulHead
from featcache.classifier.spill import SPILL_BYTES, ComputedRows
from featcache.errors import HeadError

__all__ = ["CUTS", "Epoch", "FineTuneHead", "PretrainedWeights", "RowSource"]

_MIN_STEPS = 8  # optimizer steps per epoch, at least (small sets get smaller batches)
_PREDICT_BATCH = 1024
_ROW_BLOCK = 32
# rows sampled to measure the scale of each layer's input (fewer when convolutions run)
_STANDARDISE_ROWS = 1024
_STANDARDISE_ROWS_CONV = 256


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


@dataclass(frozen=True)
class Epoch:
    """One epoch of `FineTuneHead.fit`, as Keras's ``fit`` reports it, plus what choosing
    by held-out loss needs. Epoch 0 is the frozen start (the pretrained layers and the
    linear probes): no training loss, its seconds are the probes'. Held-out figures are None
    without held-out rows and in the refit; `kept` says this epoch has the lowest held-out
    loss so far; `refit` marks the epochs of the refit on all training rows (`epochs` is
    then the number chosen)."""

    epoch: int  # 0: the frozen start
    epochs: int  # at most this many
    loss: float | None  # mean training loss (None at epoch 0)
    val_accuracy: float | None
    seconds: float
    val_loss: float | None = None
    kept: bool = False
    refit: bool = False


class _RowsAt:
    """Rows `at` (sorted row numbers) of a `RowSource`, as a `RowSource`."""

    def __init__(self, source: RowSource, at: np.ndarray) -> None:
        self.source = source
        self.at = at
        self.shape = (len(at), source.shape[1])

    def read_rows(self, rows: np.ndarray) -> np.ndarray:
        return self.source.read_rows(self.at[rows])


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


def _chunks(rows: np.ndarray, size: int) -> list[np.ndarray]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


class FineTuneHead(StatefulHead, ClassifierMixin, BaseEstimator):
    """AlexNet (or VGG16) above a cached cut (pool5 by default), fine-tuned after a linear
    probe.

    Parameters (keyword-only): ``cut`` the cached layer X holds (`CUTS`: AlexNet's pool2,
    conv3, conv4, conv5, pool5, fc6, VGG16's block5_pool; every layer above it trains);
    ``init`` "pretrained" (from the weights given to `fit`) or "random" (He-initialised
    layers, dense ones ``hidden_units`` wide, trained from scratch: the seed's case 2);
    ``epochs`` of fine-tuning at most (0:
    only the frozen start); ``batch_size`` rows per step; ``learning_rate`` (AdamW) of fc8
    and ``pretrained_learning_rate`` of the pretrained layers (None: a hundredth of it);
    ``weight_decay`` (decoupled, on weights); ``dropout`` rate on the inputs of fc7 and fc8
    (AlexNet trained with 0.5; 0 measured better fine-tuning the digits from the cache);
    ``early_stopping``: choose the number of epochs on a held-out ``validation_fraction``
    of the rows (a run stopped after ``patience`` epochs without a lower held-out loss; the
    fewest epochs within ``selection_se`` standard errors of the lowest loss, 0 being the
    frozen start, kept only if McNemar's exact one-sided test finds it classifies the
    held-out rows better than the frozen start at ``selection_significance``, 1 turning the
    test off: `featcache.classifier.epochs`), then refit on every row for that many epochs
    (without it: ``epochs`` epochs on every row); ``precision`` "float32" or "bf16"
    (CPUs with AVX512-BF16/AMX, GPUs); ``random_state`` (0: the same data gives the same
    head).

    Learned: ``classes_``, ``coefs_`` and ``intercepts_`` (one per layer with weights:
    convolution kernels HWIO, dense (in, out); float16 when trained in bf16), ``layers_``
    (their names), ``input_shape_`` ((H, W, C) of a spatial cut, or None),
    ``weights_sha256_`` (the pretrained file's digest, or None), ``best_epoch_`` (the
    epochs the head was trained on every row; 0: the frozen start, the frozen head's own
    solution), ``selection_`` (the `EpochChoice` behind it: the loss rule's epochs, the
    held-out rows they fixed and broke, McNemar's p-value; None without held-out rows),
    ``n_iter_`` epochs of the choosing run (without held-out rows, of the only
    run), ``loss_curve_`` (its training loss per epoch), ``validation_losses_`` and
    ``validation_scores_`` (held-out loss and accuracy at its epochs 0 .. n_iter_),
    ``epoch_seconds_`` (its training time per epoch, the held-out pass excluded),
    ``refit_loss_curve_`` and ``refit_seconds_`` (the refit on every row: best_epoch_
    epochs), ``probe_seconds_`` (fc7 of every row and the linear probes).
    """

    head_kind = "finetune"
    #: the probes' fc7 rows stay in memory up to this size, else go to a temporary file
    _probe_memory_bytes = SPILL_BYTES
    _state_arrays = ("classes_",)
    _state_array_lists = ("coefs_", "intercepts_")
    _state_values = (
        "n_features_in_",
        "layers_",
        "input_shape_",
        "weights_sha256_",
        "n_iter_",
        "best_epoch_",
        "loss_curve_",
        "refit_loss_curve_",
        "validation_losses_",
        "validation_scores_",
        "epoch_seconds_",
        "refit_seconds_",
        "probe_seconds_",
    )

    _parameter_constraints: dict[str, list[Any]] = {  # noqa: RUF012 (sklearn's convention)
        "cut": [StrOptions(set(CUTS))],
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
        "selection_se": [Interval(Real, 0, None, closed="left")],
        "selection_significance": [Interval(Real, 0, 1, closed="right")],
        "precision": [StrOptions({"float32", "bf16"})],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        *,
        cut: str = "pool5",
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
        selection_se: float = 1.0,
        selection_significance: float = 0.05,
        precision: str = "float32",
        random_state: int | np.random.RandomState | None = 0,
    ) -> None:
        self.cut = cut
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
        self.selection_se = selection_se
        self.selection_significance = selection_significance
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
        """Fit on (n_samples, n_features) vectors of the cut and labels; return self.

        `pretrained` holds the layers above the cut as the extractor's weights file has
        them; it is required with ``init="pretrained"`` and ignored with ``init="random"``.
        `on_epoch` hears of the frozen start (epoch 0), of every epoch of the run that
        chooses the number of epochs, and of every epoch of the refit on all rows.
        """
        from featcache.classifier._finetune_tf import Trainer, TrainerConfig

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
        stages = stages_above(self.cut)
        self.layers_ = tuple(s.name for s in stages if s.has_weights)
        start, self.input_shape_ = self._start(stages, rows.shape[1], pretrained, rng)

        n = rows.shape[0]
        order = rng.permutation(n)
        n_val = int(n * self.validation_fraction) if self.early_stopping and self.epochs else 0
        if n_val < 1 or n - n_val < 1:
            n_val = 0
        val_idx, fit_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
        seed = int(rng.randint(2**31 - 1))
        # the probes are SoftmaxHead(random_state=random_state): the frozen head's own fit
        probe_seed = (
            int(self.random_state)
            if isinstance(self.random_state, Integral)
            else int(rng.randint(2**31 - 1))
        )

        conv = self.input_shape_ is not None
        size = _STANDARDISE_ROWS_CONV if conv else _STANDARDISE_ROWS
        sample = np.sort(rng.permutation(n)[:size])
        # batch orders: the refit's are drawn as a run without held-out rows draws them, so
        # choosing k epochs gives the head `early_stopping=False, epochs=k` gives
        final_rng = np.random.RandomState(rng.randint(2**31 - 1))
        choose_rng = np.random.RandomState(rng.randint(2**31 - 1))
        stats = _stage_input_stats(
            rows.read_rows(sample), stages, [(w, b) for w, b, _ in start], self.input_shape_
        )
        new_lr = float(self.learning_rate)
        old_lr = (
            new_lr / 100
            if self.pretrained_learning_rate is None
            else float(self.pretrained_learning_rate)
        )
        config = TrainerConfig(
            new_lr, old_lr, float(self.weight_decay), float(self.dropout), self.precision, seed
        )
        trainer = Trainer(stages, start, stats, self.input_shape_, config)
        self.loss_curve_: list[float] = []
        self.refit_loss_curve_: list[float] = []
        self.validation_losses_: list[float] = []
        self.validation_scores_: list[float] = []
        self.epoch_seconds_: list[float] = []
        self.refit_seconds_ = 0.0
        with ThreadPoolExecutor(1, thread_name_prefix="featcache-rows") as pool:
            started = time.perf_counter()
            frozen, chooser = self._probes(
                trainer, rows, fit_idx if n_val else None, y_idx, probe_seed, pool
            )
            self.probe_seconds_ = time.perf_counter() - started
            if n_val:  # choose the number of epochs on held-out rows, then refit on all
                trainer.set_last(*chooser)
                choice = self._choose(trainer, rows, fit_idx, val_idx, y_idx, choose_rng,
                                      pool, on_epoch)  # fmt: skip
                self.selection_: EpochChoice | None = choice
                self.best_epoch_ = choice.epochs
                epochs, curve = self.best_epoch_, self.refit_loss_curve_
            else:  # nothing held out to choose by: every epoch, on every row
                self._report(on_epoch, Epoch(0, int(self.epochs), None, None,
                                             self.probe_seconds_, kept=True))  # fmt: skip
                epochs = self.best_epoch_ = int(self.epochs)
                self.selection_ = None
                curve = self.loss_curve_
            self.n_iter_ = len(self.loss_curve_) if n_val else epochs
            start[-1] = (*frozen, False)
            if epochs == 0:
                # the frozen start exactly as given (the trainer's copy went through float32
                # standardisation and back)
                final = [a for w, b, _ in start for a in (w, b)]
            else:
                trainer.restart(start)
                del start
                started = time.perf_counter()
                self._train(trainer, rows, np.arange(n), y_idx, epochs, final_rng, pool,
                            on_epoch, curve, refit=bool(n_val))  # fmt: skip
                if n_val:
                    self.refit_seconds_ = time.perf_counter() - started
                final = trainer.weights()
        del trainer
        dtype = np.float16 if self.precision == "bf16" else np.float32
        self.coefs_ = [w.astype(dtype, copy=False) for w in final[0::2]]
        self.intercepts_ = [b.astype(np.float32, copy=False) for b in final[1::2]]
        del final
        self._cast_for_prediction()
        return self

    def _choose(
        self,
        trainer: Any,
        rows: RowSource,
        fit_idx: np.ndarray,
        val_idx: np.ndarray,
        y_idx: np.ndarray,
        rng: np.random.RandomState,
        pool: ThreadPoolExecutor,
        on_epoch: Callable[[Epoch], None] | None,
    ) -> EpochChoice:
        """Fine-tune on the `fit_idx` rows (the probe fitted on them already in the trainer),
        scoring the `val_idx` rows after the frozen start and every epoch, until `patience`
        epochs pass without a lower held-out loss; return the number of epochs to keep and
        why (`select_epochs`: 0 is the frozen start)."""
        losses, correct = [], []
        scored = self._held_out(trainer, rows, val_idx, y_idx, pool)
        losses.append(scored[0])
        correct.append(scored[1])
        self._report(on_epoch, self._scored(0, None, self.probe_seconds_, True))
        lowest, stale = 0, 0
        for epoch in range(1, self.epochs + 1):
            self._train(trainer, rows, fit_idx, y_idx, 1, rng, pool, None, self.loss_curve_)
            scored = self._held_out(trainer, rows, val_idx, y_idx, pool)
            losses.append(scored[0])
            correct.append(scored[1])
            kept = self.validation_losses_[-1] < self.validation_losses_[lowest] - 1e-4
            if kept:
                lowest, stale = epoch, 0
            else:
                stale += 1
            self._report(on_epoch, self._scored(epoch, self.loss_curve_[-1],
                                                self.epoch_seconds_[-1], kept))  # fmt: skip
            if stale >= self.patience:
                break
        return select_epochs(
            losses,
            correct,
            se=float(self.selection_se),
            significance=float(self.selection_significance),
        )

    def _train(
        self,
        trainer: Any,
        rows: RowSource,
        idx: np.ndarray,
        y_idx: np.ndarray,
        epochs: int,
        rng: np.random.RandomState,
        pool: ThreadPoolExecutor,
        on_epoch: Callable[[Epoch], None] | None,
        curve: list[float],
        *,
        refit: bool = False,
    ) -> None:
        """`epochs` epochs on the rows `idx` in a shuffled order; the mean training loss of
        each goes to `curve` (and its seconds to ``epoch_seconds_`` unless `refit`)."""
        batch = max(1, min(self.batch_size, len(idx) // _MIN_STEPS))
        for epoch in range(1, epochs + 1):
            started = time.perf_counter()
            shuffled = idx[rng.permutation(len(idx))]
            # sorted within a batch: reads go through the shards in order
            batches = [np.sort(b) for b in _chunks(shuffled, batch)]
            total = 0.0
            for picked, xb in _prefetched(rows, batches, pool):
                _check_finite(xb)
                total += trainer.step(xb, y_idx[picked]) * len(picked)
            curve.append(total / len(idx))
            seconds = time.perf_counter() - started
            if not refit:
                self.epoch_seconds_.append(seconds)
            self._report(
                on_epoch,
                Epoch(epoch, epochs, curve[-1], None, seconds, kept=not refit, refit=refit),
            )

    def _scored(self, epoch: int, loss: float | None, seconds: float, kept: bool) -> Epoch:
        """The report of an epoch of the choosing run, with its held-out figures."""
        return Epoch(
            epoch,
            int(self.epochs),
            loss,
            self.validation_scores_[-1],
            seconds,
            val_loss=self.validation_losses_[-1],
            kept=kept,
        )

    @staticmethod
    def _report(on_epoch: Callable[[Epoch], None] | None, epoch: Epoch) -> None:
        if on_epoch is not None:
            on_epoch(epoch)

    def _probes(
        self,
        trainer: Any,
        rows: RowSource,
        fit_idx: np.ndarray | None,
        y_idx: np.ndarray,
        seed: int,
        pool: ThreadPoolExecutor,
    ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """Linear probing: fc8 fitted by a `SoftmaxHead` on the frozen fc7 of every training
        row (the frozen head's solution: the start of the refit), and on the `fit_idx` rows
        only (the start of the run that chooses the epochs; the same without `fit_idx`).
        Returns both as (W, b)."""
        n = rows.shape[0]
        # fc7 of every training row is computed once, then read by the probes a mini-batch
        # at a time: in memory when small, else from a temporary file (bounded memory)
        with ComputedRows(n, max_memory_bytes=self._probe_memory_bytes) as feats:
            for _, xb in _prefetched(rows, _chunks(np.arange(n), 256), pool):
                feats.append(trainer.features(xb))
            frozen = self._last_layer(SoftmaxHead(random_state=seed).fit(feats, y_idx))
            if fit_idx is None:
                return frozen, frozen
            part = _RowsAt(feats, fit_idx)
            chooser = self._last_layer(SoftmaxHead(random_state=seed).fit(part, y_idx[fit_idx]))
        return frozen, chooser

    def _last_layer(self, probe: SoftmaxHead) -> tuple[np.ndarray, np.ndarray]:
        """A probe's (W, b) over every class of the head (`probe.classes_` are indices)."""
        n_classes = len(self.classes_)
        w = np.zeros((probe.coef_.shape[1], n_classes), np.float32)
        # a class seen only in held-out rows starts far below the others
        b = np.full(n_classes, float(probe.intercept_.min()) - 10.0, np.float32)
        w[:, probe.classes_] = probe.coef_.T
        b[probe.classes_] = probe.intercept_
        return w, b

    def _held_out(
        self,
        trainer: Any,
        rows: RowSource,
        val_idx: np.ndarray,
        y_idx: np.ndarray,
        pool: ThreadPoolExecutor,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The log loss of each held-out row under the trainer's current weights, and
        whether it is classified right; their mean and the accuracy are recorded."""
        losses, hits = [], []
        for picked, xb in _prefetched(rows, _chunks(val_idx, _PREDICT_BATCH), pool):
            yv = y_idx[picked]
            p = _softmax(trainer.logits(xb).astype(np.float64))
            losses.append(-np.log(p[np.arange(len(yv)), yv] + 1e-12))
            hits.append(p.argmax(axis=1) == yv)
        per_row, right = np.concatenate(losses), np.concatenate(hits)
        self.validation_losses_.append(float(per_row.mean()))
        self.validation_scores_.append(int(right.sum()) / len(val_idx))
        return per_row, right

    def _start(
        self,
        stages: tuple[Stage, ...],
        n_features: int,
        pretrained: PretrainedWeights | None,
        rng: np.random.RandomState,
    ) -> tuple[list[tuple[np.ndarray, np.ndarray, bool]], tuple[int, int, int] | None]:
        """(W, b, pretrained?) per layer with weights at the start, and the cut's shape."""
        hidden = [s.name for s in stages[:-1] if s.has_weights]
        if self.init == "pretrained":
            if pretrained is None:
                raise ValueError(
                    f"FineTuneHead(init='pretrained') starts {', '.join(hidden)} from the "
                    "extractor's weights: pass fit(X, y, pretrained=read_weights(path)) or set "
                    "init='random'."
                )
            params, input_shape = pretrained_params(stages, pretrained.layers, self.cut, n_features)
            start = [(w, b, True) for w, b in params]
            self.weights_sha256_: str | None = pretrained.sha256
        else:
            start, input_shape = self._random_start(stages, n_features, rng)
            self.weights_sha256_ = None
        width = int(start[-1][0].shape[-1]) if start else n_features
        # fc8 is the linear probe's (fit replaces these zeros before training)
        start.append(
            (
                np.zeros((width, len(self.classes_)), np.float32),
                np.zeros(len(self.classes_), np.float32),
                False,
            )
        )
        return start, input_shape

    def _random_start(
        self, stages: tuple[Stage, ...], n_features: int, rng: np.random.RandomState
    ) -> tuple[list[tuple[np.ndarray, np.ndarray, bool]], tuple[int, int, int] | None]:
        generator = np.random.default_rng(rng.randint(2**31 - 1))
        input_shape = spatial_shape(self.cut, n_features) if CUTS[self.cut].spatial else None
        shape: tuple[int, ...] = input_shape or (n_features,)
        start: list[tuple[np.ndarray, np.ndarray, bool]] = []
        for stage in stages[:-1]:
            if stage.kind == "pool":
                shape = ((shape[0] - 3) // 2 + 1, (shape[1] - 3) // 2 + 1, shape[2])
                continue
            if stage.kind == "conv":
                fan_in = 9 * shape[-1] // stage.groups
                size: tuple[int, ...] = (3, 3, shape[-1] // stage.groups, stage.width)
                shape = (shape[0], shape[1], stage.width)
            else:
                fan_in = int(np.prod(shape))
                size = (fan_in, self.hidden_units)
                shape = (self.hidden_units,)
            w = generator.standard_normal(size, dtype=np.float32) * np.float32(
                np.sqrt(2.0 / fan_in)
            )
            start.append((w, np.zeros(size[-1], np.float32), False))
        return start, input_shape

    # -- predict ----------------------------------------------------------------------------

    def _cast_for_prediction(self) -> None:
        """float32 copies of float16-stored weights: NumPy has no fast float16 product."""
        if any(w.dtype != np.float32 for w in self.coefs_):
            self._coefs32: list[np.ndarray] = [w.astype(np.float32) for w in self.coefs_]
        else:
            self._coefs32 = list(self.coefs_)

    def to_state(self) -> HeadState:
        """`StatefulHead.to_state`, with ``selection_`` as the JSON list [epochs, by_loss,
        fixed, broken, p_value] (or None)."""
        state = super().to_state()
        choice = getattr(self, "selection_", None)
        values = dict(state.values)
        values["selection_"] = None if choice is None else list(astuple(choice))
        return HeadState(state.kind, state.params, state.arrays, values)

    @classmethod
    def from_state(cls, state: HeadState, source: str = "head") -> FineTuneHead:
        """`StatefulHead.from_state`, reading files saved before cuts too (their ``layers``
        parameter: "fc6,fc7,fc8" is the pool5 cut, "fc7,fc8" the fc6 cut), before the
        refit on all rows (no refit figures: the head was the choosing run's best epoch),
        and before McNemar's test (``selection_`` None: chosen by held-out loss alone)."""
        if "refit_loss_curve_" not in state.values:
            values = {"refit_loss_curve_": [], "refit_seconds_": 0.0, **state.values}
            state = HeadState(state.kind, state.params, state.arrays, values)
        if "layers" in state.params and "cut" not in state.params:
            params = dict(state.params)
            params["cut"] = "pool5" if params.pop("layers") == "fc6,fc7,fc8" else "fc6"
            values = {
                "input_shape_": None,
                "validation_losses_": [],
                "probe_seconds_": 0.0,
                **state.values,
            }
            state = HeadState(state.kind, params, state.arrays, values)
        if "selection_significance" not in state.params:  # chosen by held-out loss alone
            params = {**state.params, "selection_significance": 1.0}
            state = HeadState(state.kind, params, state.arrays, state.values)
        head = super().from_state(state, source)
        try:
            head.selection_ = _choice_from(state.values.get("selection_"), head.best_epoch_)
        except (ValueError, TypeError) as exc:
            raise HeadError(f"{source}: selection_ {exc}") from None
        return head

    def _check_state(self) -> None:
        """The layers chain from the cut to the classes (a crafted file may lie)."""
        stages = stages_above(self.cut)
        self.layers_ = tuple(self.layers_)
        expected = tuple(s.name for s in stages if s.has_weights)
        if self.layers_ != expected:
            raise ValueError(
                f"layers_ {list(self.layers_)} are not {list(expected)} (cut {self.cut})"
            )
        if not len(self.coefs_) == len(self.intercepts_) == len(self.layers_):
            raise ValueError(f"{len(self.coefs_)} weight arrays for layers {self.layers_}")
        if self.input_shape_ is not None:
            given = tuple(int(v) for v in self.input_shape_)
            if len(given) != 3 or int(np.prod(given)) != int(self.n_features_in_):
                raise ValueError(f"input_shape_ {given} is not {self.n_features_in_} values")
            self.input_shape_ = (given[0], given[1], given[2])
        elif CUTS[self.cut].spatial:
            raise ValueError(f"a '{self.cut}' head needs the input_shape_ of its maps")
        shape: tuple[int, ...] = self.input_shape_ or (int(self.n_features_in_),)
        weights = iter(zip(self.layers_, self.coefs_, self.intercepts_, strict=True))
        for stage in stages:
            if stage.kind == "pool":
                shape = ((shape[0] - 3) // 2 + 1, (shape[1] - 3) // 2 + 1, shape[2])
                continue
            layer, w, b = next(weights)
            if stage.kind == "conv":
                fits = (
                    w.ndim == 4
                    and w.shape[:2] == (3, 3)
                    and shape[-1] % w.shape[2] == 0
                    and w.shape[3] % (shape[-1] // w.shape[2]) == 0
                )
                out: tuple[int, ...] = (shape[0], shape[1], int(w.shape[-1]))
            else:
                fits = w.ndim == 2 and w.shape[0] == int(np.prod(shape))
                out = (int(w.shape[-1]),)
            if not fits or b.shape != (w.shape[-1],):
                raise ValueError(
                    f"{layer}: weights {w.shape} and biases {b.shape} do not follow a {shape} input"
                )
            if w.dtype.kind != "f" or b.dtype.kind != "f" or not np.isfinite(w).all():
                raise ValueError(f"{layer}: weights must be finite floats")
            shape = out
        if self.classes_.ndim != 1 or shape != (len(self.classes_),):
            raise ValueError(f"the last layer has {shape} outputs for {len(self.classes_)} classes")
        self._cast_for_prediction()

    def __getstate__(self) -> dict[str, Any]:
        state: dict[str, Any] = super().__getstate__()
        state = dict(state)
        state.pop("_coefs32", None)  # rebuilt on load; the file keeps only coefs_
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        state.setdefault("selection_se", 1.0)  # pickled before the refit on all rows
        state.setdefault("selection_significance", 1.0)  # pickled before McNemar's test
        if "coefs_" in state:
            state.setdefault("selection_", None)
            state.setdefault("refit_loss_curve_", [])
            state.setdefault("refit_seconds_", 0.0)
        if "layers" in state and "cut" not in state:  # a head pickled before cuts
            state["cut"] = "pool5" if state.pop("layers") == "fc6,fc7,fc8" else "fc6"
            if "coefs_" in state:
                state.setdefault("input_shape_", None)
                state.setdefault("probe_seconds_", 0.0)
                state.setdefault("validation_losses_", [])
        super().__setstate__(state)
        if "coefs_" in state:
            self._cast_for_prediction()

    def _forward(self, x: np.ndarray, stop: int | None = None) -> np.ndarray:
        """Inference (no dropout) through the first `stop` stages (all by default)."""
        stages = stages_above(self.cut)[:stop]
        used = sum(s.has_weights for s in stages)
        params = list(zip(self._coefs32[:used], self.intercepts_[:used], strict=True))
        return run_stages(x, stages, params, self.input_shape_)

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
        """The (n_samples, width) output of `layer` above the cut (after its ReLU; spatial
        maps flattened H, W, C), without dropout."""
        check_is_fitted(self)
        names = [s.name for s in stages_above(self.cut)[:-1]]
        if layer not in names:
            raise ValueError(f"The 'layer' must be one of {names}. Got {layer!r}.")
        return self._batched(X, names.index(layer) + 1)

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


def _choice_from(value: Any, best_epoch: int) -> EpochChoice | None:
    """A head file's ``selection_`` list as an `EpochChoice` (None stays None: a head
    without held-out rows, or saved before the test), checked against ``best_epoch_``."""
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 5:
        raise ValueError(f"must be [epochs, by_loss, fixed, broken, p_value]; got {value!r}")
    epochs, by_loss, fixed, broken, p_value = value
    counts = (epochs, by_loss, fixed, broken)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in counts):
        raise ValueError(f"counts must be integers; got {list(counts)!r}")
    if not isinstance(p_value, int | float) or isinstance(p_value, bool):
        raise ValueError(f"p_value must be a number; got {p_value!r}")
    choice = EpochChoice(epochs, by_loss, fixed, broken, float(p_value))
    if choice.epochs != best_epoch:
        raise ValueError(f"keeps {choice.epochs} epochs, but best_epoch_ is {best_epoch}")
    return choice


def _check_finite(x: np.ndarray) -> None:
    if not np.isfinite(x).all():
        raise ValueError("Input X contains NaN or infinity.")


def _stage_input_stats(
    sample: np.ndarray,
    stages: tuple[Stage, ...],
    params: list[tuple[np.ndarray, np.ndarray]],
    input_shape: tuple[int, int, int] | None,
) -> list[Any]:
    """The standardisation of each layer's input, measured on `sample` with the starting
    weights (NumPy, in blocks of `_ROW_BLOCK` rows to bound the convolutions' memory)."""
    from featcache.classifier._finetune_tf import input_stats

    inputs: list[list[np.ndarray]] = [[] for _ in params]
    for start in range(0, len(sample), _ROW_BLOCK):
        block = sample[start : start + _ROW_BLOCK]
        h = block if input_shape is None else block.reshape(len(block), *input_shape)
        k = 0
        for stage in stages:
            if stage.kind == "pool":
                h = max_pool(h)
                continue
            w, b = params[k]
            if stage.kind == "conv":
                inputs[k].append(h)
                h = conv2d(h, w, b, stage.padding, h.shape[-1] // w.shape[2])
            else:
                h = h.reshape(len(h), -1)
                inputs[k].append(h)
                h = h @ w + b
            if stage.relu:
                h = np.maximum(h, 0)
            k += 1
    return [
        input_stats(np.concatenate(parts), stage.kind == "conv")
        for parts, stage in zip(inputs, [s for s in stages if s.has_weights], strict=True)
    ]
