"""Progress for every long step: fine-tuning epochs (as Keras's fit prints them), extract's
ETA from a measured rate, advise and doctor stages; TensorFlow's own lines only on demand."""

from __future__ import annotations

import numpy as np
import pytest

from featcache.classifier.finetune import Epoch, FineTuneHead
from featcache.cli.heads import _print_epoch


@pytest.mark.slow  # TensorFlow loads: about 10 s
def test_finetune_reports_every_epoch() -> None:
    rng = np.random.default_rng(0)
    X = rng.random((60, 16)).astype(np.float32)
    y = np.arange(60) % 3
    seen: list[Epoch] = []
    head = FineTuneHead(init="random", hidden_units=8, epochs=4, patience=10, random_state=0)
    head.fit(X, y, on_epoch=seen.append)
    assert [e.epoch for e in seen] == [1, 2, 3, 4] and all(e.epochs == 4 for e in seen)
    assert [e.loss for e in seen] == head.loss_curve_
    assert [e.val_accuracy for e in seen] == head.validation_scores_
    assert [e.seconds for e in seen] == head.epoch_seconds_


def test_epoch_line_reads_like_keras(capsys: pytest.CaptureFixture[str]) -> None:
    _print_epoch(Epoch(3, 10, 0.45214, 0.875, 12.34))
    _print_epoch(Epoch(1, 2, 1.0, None, 0.5))
    assert capsys.readouterr().err.splitlines() == [
        "Epoch 3/10 - 12.3s - loss: 0.4521 - val_accuracy: 0.8750",
        "Epoch 1/2 - 0.5s - loss: 1.0000",
    ]
