"""Whether fine-tuning is kept at all: only when it classifies the held-out rows better than
the frozen start by McNemar's exact one-sided test (`featcache.classifier.epochs`), so
"never worse" neither lets a lower held-out loss alone fine-tune nor stops a fine-tune that
clearly helps."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from featcache.classifier.epochs import EpochChoice, mcnemar_p_value, select_epochs
from featcache.classifier.finetune import FineTuneHead
from featcache.classifier.headstate import decode_head, encode_head
from featcache.classifier.train import finetune_summary
from featcache.cli.heads import _finetune_line
from featcache.errors import HeadError

# -- the rule, no TensorFlow ---------------------------------------------------------------------


def test_mcnemar_p_value_is_the_binomial_tail_of_the_rows_that_changed() -> None:
    assert mcnemar_p_value(5, 0) == pytest.approx(1 / 32)
    assert mcnemar_p_value(2, 0) == pytest.approx(0.25)
    # P(X >= 8), X ~ Bin(10, 1/2): (45 + 10 + 1) / 1024
    assert mcnemar_p_value(8, 2) == pytest.approx(56 / 1024)
    assert mcnemar_p_value(0, 3) == pytest.approx(1.0)
    assert mcnemar_p_value(0, 0) == 1.0
    with pytest.raises(ValueError, match="row counts cannot be negative: fixed -1"):
        mcnemar_p_value(-1, 2)


def _losses(means: list[float], rows: int) -> list[np.ndarray]:
    """Per-row losses whose means fall clearly (same drop on every row) as listed."""
    base = np.linspace(0.1, 0.5, rows)
    return [base - base.mean() + m for m in means]


def test_a_lower_loss_is_kept_only_with_significantly_fewer_held_out_errors() -> None:
    rows = 40
    losses = _losses([0.40, 0.30, 0.20], rows)  # the loss rule alone: 2 epochs
    frozen = np.ones(rows, bool)
    frozen[:10] = False  # 10 held-out rows wrong at the frozen start
    fixed_8 = frozen.copy()
    fixed_8[:8] = True  # epoch 2 fixes 8 of them and breaks none: p = 1/256
    choice = select_epochs(losses, [frozen, frozen, fixed_8])
    assert (choice.epochs, choice.by_loss, choice.fixed, choice.broken) == (2, 2, 8, 0)
    assert choice.p_value == pytest.approx(1 / 256)
    # fixes 8, breaks 2: p = 56/1024 > 0.05, the frozen start is kept
    mixed = fixed_8.copy()
    mixed[20:22] = False
    kept = select_epochs(losses, [frozen, frozen, mixed])
    assert (kept.epochs, kept.by_loss, kept.fixed, kept.broken) == (0, 2, 8, 2)
    assert kept.p_value == pytest.approx(56 / 1024)
    # the same rows, a looser bar: kept
    assert select_epochs(losses, [frozen, frozen, mixed], significance=0.1).epochs == 2
    # a lower loss, the same rows right: nothing to test, the frozen start
    same = select_epochs(losses, [frozen] * 3)
    assert (same.epochs, same.by_loss, same.p_value) == (0, 2, 1.0)
    # significance 1: the loss rule alone
    assert select_epochs(losses, [frozen] * 3, significance=1.0).epochs == 2
    # the loss rule keeps the frozen start: no test (p 1), whatever the accuracy
    flat = select_epochs(_losses([0.2, 0.3], rows), [frozen, fixed_8])
    assert flat == EpochChoice(0, 0, 0, 0, 1.0)


def test_select_epochs_refuses_what_does_not_line_up() -> None:
    losses = _losses([0.4, 0.3], 6)
    right = np.ones(6, bool)
    with pytest.raises(ValueError, match="significance must be in"):
        select_epochs(losses, [right, right], significance=0.0)
    with pytest.raises(ValueError, match="1 right/wrong rows for 2 candidates"):
        select_epochs(losses, [right])
    with pytest.raises(ValueError, match=r"one right/wrong per held-out row \(6\)"):
        select_epochs(losses, [right, right[:5]])
    with pytest.raises(ValueError, match="must be 0 or by_loss 2"):
        EpochChoice(1, 2, 0, 0, 1.0)
    with pytest.raises(ValueError, match="'selection_significance' parameter of FineTuneHead"):
        FineTuneHead(selection_significance=0.0).fit(np.zeros((4, 2)), [0, 1, 0, 1])


def _summary_head(kept: int, choice: EpochChoice) -> FineTuneHead:
    head = FineTuneHead(cut="fc6")
    head.layers_ = ("fc7", "fc8")
    head.n_iter_, head.best_epoch_ = 3, kept
    head.epoch_seconds_, head.refit_seconds_ = [1.0, 1.0, 1.0], 2.5 if kept else 0.0
    head.validation_losses_ = [0.30, 0.20, 0.25, 0.27]
    head.validation_scores_ = [0.80, 0.90, 0.85, 0.85]
    head.selection_ = choice
    return head


def test_the_report_names_the_rows_fixed_and_broken_and_the_p_value() -> None:
    refused = finetune_summary(_summary_head(0, EpochChoice(0, 1, 3, 1, 0.3125)))
    assert refused["epochs_by_loss"] == 1 and refused["p_value"] == 0.3125
    assert _finetune_line(refused) == (
        "kept the frozen start (0 epochs), the frozen softmax head's solution: the 1 epoch(s) "
        "the held-out loss chose did not classify the held-out rows significantly better "
        "(fixed 3, broke 1; McNemar's p = 0.312 > 0.05) in 3 epoch(s) of fine-tuning fc7, fc8 "
        "above fc6 (frozen start: loss 0.3000, accuracy 0.8000)"
    )
    kept = finetune_summary(_summary_head(1, EpochChoice(1, 1, 6, 0, 0.015625)))
    assert _finetune_line(kept) == (
        "fine-tuning fc7, fc8 above fc6 gained +10.00 points over the frozen start on its "
        "held-out rows (accuracy 0.8000 → 0.9000, loss 0.3000 → 0.2000; fixed 6 row(s), "
        "broke 0: McNemar's p = 0.0156 <= 0.05); chose 1 of 3 epoch(s), refitted on every "
        "training row (2.5s)"
    )


# -- TensorFlow: a planted task ------------------------------------------------------------------


@dataclass(frozen=True)
class _Net:
    sha256: str = "b" * 64
    layers: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def _planted(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`n` 6-wide fc6 rows in 2 classes told apart by column 0 alone."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.uniform(0, 1, (n, 6)).astype(np.float32)
    x[:, 0] += np.where(y == 1, 1.5, 0.0).astype(np.float32)
    return x, y


def _fc7(reads_column_0: bool) -> _Net:
    """A pretrained fc7 (6 -> 8, positive biases so its units are alive) that ignores the
    cut's column 0 (its row of weights is zero: the frozen network cannot tell the classes
    apart) or reads it strongly (it can)."""
    rng = np.random.default_rng(3)
    w = rng.normal(0, 0.5, (6, 8)).astype(np.float32)
    w[0] = 2.0 if reads_column_0 else 0.0
    return _Net(layers={"fc7": (w, np.full(8, 1.0, np.float32))})


def _head(**params: object) -> FineTuneHead:
    settings: dict[str, object] = {
        "cut": "fc6",
        "epochs": 4,
        "batch_size": 16,
        "learning_rate": 3e-2,
        "pretrained_learning_rate": 3e-2,
        "validation_fraction": 0.25,
        "patience": 4,
    }
    settings.update(params)
    return FineTuneHead(**settings)  # type: ignore[arg-type]


@pytest.mark.slow
def test_fine_tuning_that_clearly_helps_is_kept_and_saved_with_its_evidence() -> None:
    """The frozen fc7 has no trace of the class: the frozen start is at chance on the held
    out rows; fine-tuning fc7 finds column 0 and fixes most of them, and is kept."""
    x, y = _planted(160)
    net = _fc7(reads_column_0=False)
    head = _head().fit(x, y, pretrained=net)
    choice = head.selection_
    assert choice is not None and head.best_epoch_ == choice.epochs == choice.by_loss >= 1
    assert head.validation_scores_[0] <= 0.7  # 40 held-out rows, 2 classes
    assert head.validation_scores_[head.best_epoch_] >= 0.9
    assert choice.fixed >= 10 and choice.fixed > 4 * choice.broken and choice.p_value < 1e-3
    assert len(head.refit_loss_curve_) == head.best_epoch_
    x_test, y_test = _planted(200, seed=1)
    frozen = _head(epochs=0).fit(x, y, pretrained=net)
    assert frozen.score(x_test, y_test) <= 0.7 and head.score(x_test, y_test) >= 0.9
    # the file keeps the evidence; a crafted one is refused, naming the value
    state = decode_head(encode_head(head.to_state()), "h.safetensors")
    loaded = FineTuneHead.from_state(state, "h.safetensors")
    assert loaded.selection_ == choice and loaded.selection_significance == 0.05
    values = {**state.values, "selection_": [0, choice.by_loss, 1, 0, 0.5]}
    crafted = type(state)(state.kind, state.params, state.arrays, values)
    with pytest.raises(HeadError, match=r"h.safetensors: selection_ keeps 0 epochs, but best"):
        FineTuneHead.from_state(crafted, "h.safetensors")


@pytest.mark.slow
def test_fine_tuning_that_only_lowers_the_loss_keeps_the_frozen_start() -> None:
    """The frozen fc7 already separates the classes: fine-tuning lowers the held-out loss
    (the loss rule alone would keep it) but gets no more rows right, so the frozen head's
    solution is kept."""
    x, y = _planted(160)
    net = _fc7(reads_column_0=True)
    head = _head().fit(x, y, pretrained=net)
    choice = head.selection_
    assert choice is not None and choice.by_loss >= 1
    assert head.validation_losses_[choice.by_loss] < head.validation_losses_[0]
    assert head.best_epoch_ == choice.epochs == 0 and choice.p_value > 0.05
    assert head.refit_loss_curve_ == []
    loss_alone = _head(selection_significance=1.0).fit(x, y, pretrained=net)
    assert loss_alone.best_epoch_ == choice.by_loss
    frozen = _head(epochs=0).fit(x, y, pretrained=net)
    for a, b in zip(
        head.coefs_ + head.intercepts_, frozen.coefs_ + frozen.intercepts_, strict=True
    ):
        np.testing.assert_array_equal(a, b)
