"""Progress for every long step: fine-tuning epochs (as Keras's fit prints them), extract's
ETA from a measured rate, advise and doctor stages; TensorFlow's own lines only on demand."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from conftest import CountingNetwork, write_images
from featcache.classifier.finetune import Epoch, FineTuneHead
from featcache.cli.heads import _print_epoch
from featcache.extractor.pipeline import ExtractConfig, extract
from featcache.extractor.weights import Weights
from featcache.progress import auto_progress

STUB = Weights(Path("stub-alexnet.npy"), {}, "ab" * 32, "RANDOM stub weights for tests")


@pytest.mark.slow  # TensorFlow loads: about 10 s
def test_finetune_reports_every_epoch() -> None:
    rng = np.random.default_rng(0)
    X = rng.random((60, 16)).astype(np.float32)
    y = np.arange(60) % 3
    seen: list[Epoch] = []
    head = FineTuneHead(init="random", hidden_units=8, epochs=4, patience=10, random_state=0)
    head.fit(X, y, on_epoch=seen.append)
    # epoch 0 is the frozen start (pretrained layers and the linear probe); then the
    # epochs chosen, refitted on every row
    choosing, refit = seen[:5], seen[5:]
    assert [e.epoch for e in choosing] == [0, 1, 2, 3, 4] and all(e.epochs == 4 for e in choosing)
    assert seen[0].loss is None and [e.loss for e in choosing[1:]] == head.loss_curve_
    assert [e.val_accuracy for e in choosing] == head.validation_scores_
    assert [e.val_loss for e in choosing] == head.validation_losses_
    assert [e.seconds for e in choosing[1:]] == head.epoch_seconds_
    assert [e.loss for e in refit] == head.refit_loss_curve_
    assert all(e.refit and e.epochs == head.best_epoch_ for e in refit)


def test_epoch_line_reads_like_keras(capsys: pytest.CaptureFixture[str]) -> None:
    _print_epoch(Epoch(3, 10, 0.45214, 0.875, 12.34))
    _print_epoch(Epoch(1, 2, 1.0, None, 0.5))
    _print_epoch(Epoch(0, 10, None, 0.9, 3.21, val_loss=0.31, kept=True))
    assert capsys.readouterr().err.splitlines() == [
        "Epoch 3/10 - 12.3s - loss: 0.4521 - val_accuracy: 0.8750",
        "Epoch 1/2 - 0.5s - loss: 1.0000",
        "Epoch 0/10 (frozen start + linear probe) - 3.2s - val_loss: 0.3100 - "
        "val_accuracy: 0.9000 *",
    ]


def test_auto_progress_off_a_terminal_counts_the_rate_from_the_first_batch() -> None:
    now = [100.0]
    stream = io.StringIO()
    with auto_progress("extracting", stream=stream, clock=lambda: now[0]) as update:
        # the first batch lands after 40 s of start-up (TensorFlow, the graph)
        for t, done in ((140.0, 64), (151.0, 128), (162.0, 192), (173.0, 256)):
            now[0] = t
            update(done, 1000)
    assert stream.getvalue().splitlines() == [
        "extracting: 64/1000 images (6%), - img/s, ETA after the next batch",
        "extracting: 128/1000 images (13%), 5.8 img/s, ETA 0:02:30",
        "extracting: 192/1000 images (19%), 5.8 img/s, ETA 0:02:19",
        "extracting: 256/1000 images (26%), 5.8 img/s, ETA 0:02:08",
    ]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_auto_progress_on_a_terminal_is_a_tqdm_bar_opened_at_the_first_batch() -> None:
    stream = Terminal()
    with auto_progress("extracting", stream=stream) as update:
        update(64, 200)
        update(200, 200)
    shown = stream.getvalue()
    assert "extracting" in shown and "200/200" in shown and "64/200" in shown


def test_extract_shows_progress_unasked_and_none_silences_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import featcache.progress

    monkeypatch.setattr(featcache.progress, "PROGRESS_SECONDS", 0.0)
    write_images(tmp_path / "imgs", 6)
    config = ExtractConfig(batch_size=2)
    extract(tmp_path / "imgs", STUB, tmp_path / "s", config=config, network_factory=CountingNetwork)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "extracting: 2/6 images (33%), - img/s, ETA after the next batch"
    assert lines[-1].startswith("extracting: 6/6 images (100%), ")
    extract(
        tmp_path / "imgs",
        STUB,
        tmp_path / "t",
        config=config,
        network_factory=CountingNetwork,
        progress=None,
    )
    assert capsys.readouterr().err == ""


def test_advise_and_doctor_name_their_stages(tmp_path: Path) -> None:
    from featcache.analysis.advise import advise
    from featcache.analysis.doctor import doctor
    from test_advise import make_store

    store = make_store(tmp_path / "s", per_class=40, classes=3, separation={"fc7": 3.0})
    heard: list[str] = []
    advise(store, "d", layers=["fc7"], on_stage=heard.append)
    assert heard == [
        "fc7: reading the vectors, 5-fold cross-validation",
        "learning curve on fc7 (3 more fractions)",
    ]
    write_images(tmp_path / "imgs", 12)
    extract(tmp_path / "imgs", STUB, store, network_factory=CountingNetwork, progress=None)
    heard.clear()
    doctor(store, "imgs", on_stage=heard.append, out=tmp_path / "report")
    assert heard == [
        "reading the vectors",
        "pixel hashes and near-duplicates",
        "label issues (cleanlab, out-of-fold heads)",
        "outliers",
        "writing the report and contact sheets",
    ]
