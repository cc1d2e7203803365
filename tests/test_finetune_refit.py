"""Never worse than the frozen head: the number of epochs is chosen on held-out rows (the
frozen start wins ties, by the one-standard-error rule on per-row losses), then the head is
refitted on every training row, so zero epochs chosen is the frozen softmax head's own
solution and k epochs chosen is a k-epoch fine-tune on every row."""

from __future__ import annotations

import numpy as np
import pytest

from featcache.classifier.cuts import pretrained_params, run_stages, stages_above
from featcache.classifier.epochs import choose_epochs
from featcache.classifier.finetune import Epoch, FineTuneHead
from featcache.classifier.heads import SoftmaxHead
from featcache.classifier.train import finetune_summary
from featcache.cli.heads import _finetune_line
from test_finetune_cuts import tiny_conv3_data, tiny_net

# -- the choice, no TensorFlow -------------------------------------------------------------------


def _lower(rng: np.random.Generator, loss: np.ndarray, by: float, spread: float) -> np.ndarray:
    """`loss` lower by `by` on average (exactly), row by row give or take `spread`."""
    noise = rng.normal(0, spread, len(loss))
    out: np.ndarray = loss - by + noise - noise.mean()
    return out


def test_a_longer_run_must_win_by_more_than_a_standard_error() -> None:
    rng = np.random.default_rng(0)
    frozen = rng.uniform(0.0, 1.0, 400)
    # 0.05 and 0.2 lower after 1 and 2 epochs, row for row; 0.21 after 3, give or take 0.5
    # (a standard error of 0.025)
    clear = [
        frozen,
        _lower(rng, frozen, 0.05, 0.01),
        _lower(rng, frozen, 0.2, 0.0),
        _lower(rng, frozen, 0.21, 0.5),
    ]
    assert choose_epochs(clear) == 2  # 3 is lower, but within one error of 2
    assert choose_epochs(clear, se=0.0) == 3  # the lowest
    # a lower mean carried by noise: within one error of the frozen start
    noisy = [frozen, _lower(rng, frozen, 0.01, 0.5)]
    assert choose_epochs(noisy) == 0
    assert choose_epochs(noisy, se=0.0) == 1
    # an exact tie and a worse run keep the frozen start
    assert choose_epochs([frozen, frozen.copy(), frozen + 0.1]) == 0


def test_too_few_held_out_rows_keep_the_frozen_start_and_bad_input_is_refused() -> None:
    assert choose_epochs([np.array([0.9]), np.array([0.1])]) == 0
    assert choose_epochs([np.array([0.9]), np.array([0.1])], se=0.0) == 1
    with pytest.raises(ValueError, match="no candidate epochs"):
        choose_epochs([])
    with pytest.raises(ValueError, match=r"one loss per held-out row \(3\)"):
        choose_epochs([np.zeros(3), np.zeros(2)])
    with pytest.raises(ValueError, match="'selection_se' parameter of FineTuneHead"):
        FineTuneHead(selection_se=-1.0).fit(np.zeros((4, 2)), [0, 1, 0, 1])


def test_the_summary_says_what_was_chosen_and_why() -> None:
    head = FineTuneHead(cut="fc6")
    head.layers_ = ("fc7", "fc8")
    head.n_iter_, head.best_epoch_ = 3, 0
    head.epoch_seconds_, head.refit_seconds_ = [1.0, 1.0, 1.0], 0.0
    head.validation_losses_ = [0.30, 0.28, 0.31, 0.33]
    head.validation_scores_ = [0.90, 0.92, 0.90, 0.89]
    summary = finetune_summary(head)
    assert summary["lowest_val_loss_epoch"] == 1 and summary["gain_points"] == 0.0
    assert _finetune_line(summary) == (
        "kept the frozen start (0 epochs), the frozen softmax head's solution: epoch 1's "
        "lower held-out loss (0.2800) was not lower by more than 1 standard error(s) in 3 "
        "epoch(s) of fine-tuning fc7, fc8 above fc6 (frozen start: loss 0.3000, accuracy "
        "0.9000)"
    )
    head.best_epoch_, head.refit_seconds_ = 1, 2.5
    assert _finetune_line(finetune_summary(head)) == (
        "fine-tuning fc7, fc8 above fc6 gained +2.00 points over the frozen start on its "
        "held-out rows (accuracy 0.9000 → 0.9200, loss 0.3000 → 0.2800); chose 1 of 3 "
        "epoch(s), refitted on every training row (2.5s)"
    )


# -- TensorFlow ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_zero_epochs_chosen_is_the_frozen_softmax_heads_solution_on_every_row() -> None:
    """Fine-tuning that does not help on held-out rows leaves exactly the head that
    `SoftmaxHead(random_state=0)` fits on the frozen fc7 of every training row (not of the
    rows left after holding some out); float32 cut: fc7 recomputed agrees to float32
    rounding, and so do the probe's weights."""
    net = tiny_net()
    x, y = tiny_conv3_data(60)
    seen: list[Epoch] = []
    wild = FineTuneHead(cut="conv3", epochs=2, learning_rate=50.0, pretrained_learning_rate=50.0)
    wild.fit(x, y, pretrained=net, on_epoch=seen.append)
    assert wild.best_epoch_ == 0 and wild.n_iter_ == 2 and wild.refit_loss_curve_ == []
    assert [e.epoch for e in seen] == [0, 1, 2] and not any(e.refit for e in seen)
    never = FineTuneHead(cut="conv3", epochs=0).fit(x, y, pretrained=net)
    assert never.validation_losses_ == [] and never.best_epoch_ == 0
    for a, b in zip(wild.coefs_ + wild.intercepts_, never.coefs_ + never.intercepts_, strict=True):
        np.testing.assert_array_equal(a, b)

    stages = stages_above("conv3")
    params, shape = pretrained_params(stages, net.layers, "conv3", x.shape[1])
    fc7 = run_stages(x, stages[:-1], params, shape)  # the frozen network's fc7, every row
    frozen = SoftmaxHead(random_state=0).fit(fc7, y)
    np.testing.assert_allclose(wild.coefs_[-1], frozen.coef_.T, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(wild.intercepts_[-1], frozen.intercept_, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(wild.predict_proba(x), frozen.predict_proba(fc7), atol=1e-5)
    for kept, given in zip(wild.coefs_[:-1], [w for w, _ in params], strict=True):
        np.testing.assert_array_equal(kept, given)


@pytest.mark.slow
def test_k_epochs_chosen_refit_every_row_as_a_k_epoch_fine_tune() -> None:
    net = tiny_net()
    x, y = tiny_conv3_data(60)
    seen: list[Epoch] = []
    # the loss rule alone (six held-out rows cannot pass McNemar's test): this is the refit's
    # test; test_finetune_selection.py has the test's own
    head = FineTuneHead(
        cut="conv3",
        epochs=3,
        batch_size=8,
        patience=3,
        learning_rate=3e-2,
        selection_significance=1.0,
    )
    head.fit(x, y, pretrained=net, on_epoch=seen.append)
    k = head.best_epoch_
    assert 1 <= k <= head.n_iter_ == 3
    assert head.validation_losses_[k] < head.validation_losses_[0]
    assert len(head.refit_loss_curve_) == k and head.refit_seconds_ > 0
    assert [(e.epoch, e.refit) for e in seen] == [(i, False) for i in range(4)] + [
        (i, True) for i in range(1, k + 1)
    ]
    assert all(e.epochs == k and e.val_loss is None for e in seen[4:])
    same = FineTuneHead(
        cut="conv3", epochs=k, batch_size=8, learning_rate=3e-2, early_stopping=False
    ).fit(x, y, pretrained=net)
    assert same.refit_loss_curve_ == [] and same.loss_curve_ == head.refit_loss_curve_
    for a, b in zip(head.coefs_ + head.intercepts_, same.coefs_ + same.intercepts_, strict=True):
        np.testing.assert_array_equal(a, b)
