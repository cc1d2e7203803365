"""The command line explains itself: help texts intact, flags named in errors, exit codes."""

from __future__ import annotations

import hashlib
import json
import re
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from conftest import REPO, write_images
from featcache import __version__
from featcache.classifier.train import train_head
from featcache.cli import _shared, app
from featcache.store import DatasetRow, FeatureStore
from test_train_evaluate import make_store

runner = CliRunner()


def cli(*args: str | Path, input: str | None = None) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args], input=input)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.output


def commands() -> list[tuple[list[str], Any]]:
    """Every command of the app (a click command) with the words that call it."""
    found: list[tuple[list[str], Any]] = []

    def walk(words: list[str], command: Any) -> None:
        found.append((words, command))
        if hasattr(command, "commands"):  # a group
            for name, sub in command.commands.items():
                walk([*words, name], sub)

    walk([], typer.main.get_command(app))
    return found


def squeeze(text: str) -> str:
    return re.sub(r"\s+", "", text)


@pytest.mark.parametrize("words", [w for w, _ in commands()], ids=lambda w: " ".join(w) or "-")
def test_help_shows_every_help_text_as_written(words: list[str]) -> None:
    command = dict((" ".join(w), c) for w, c in commands())[" ".join(words)]
    code, text = cli(*words, "--help")
    assert code == 0
    shown = squeeze(text)  # help is wrapped to the width; compare without whitespace
    for param in command.params:
        help_text = getattr(param, "help", None)
        if help_text:
            assert squeeze(help_text) in shown, (param.name, help_text)
    if command.help:
        assert squeeze(command.help.split("\n\n")[0]) in shown


def test_help_keeps_brackets() -> None:
    _, text = cli("extract", "--help")
    assert squeeze("Dataset name [default: the data's name].") in squeeze(text)
    assert squeeze("local, or ray (pip install 'featcache[ray]').") in squeeze(text)


def test_version() -> None:
    code, text = cli("--version")
    assert code == 0 and text.strip() == f"featcache {__version__}"


@pytest.fixture
def trained(tmp_path: Path) -> Path:
    store = make_store(tmp_path / "s", n=60, splits=True)
    train_head(store, "toy", name="h", params={"random_state": 0})
    store.close()
    return tmp_path / "s"


def test_errors_name_flags_not_arguments(trained: Path) -> None:
    code, text = cli("predict", "--store", trained, "--head", "h", "--top-k", "0", "x.png")
    assert code == 1 and "--top-k must be >= 1. Got 0." in text and "top_k" not in text
    code, text = cli("train", "--store", trained, "--dataset", "toy", "--val-fraction", "1.5")
    assert code == 1 and "--val-fraction must be in [0, 1). Got 1.5." in text
    code, text = cli("train", "--store", trained, "--dataset", "toy", "--kind", "tree")
    assert code == 1 and "--kind must be one of softmax, logreg, finetune. Got 'tree'." in text
    code, text = cli(
        "train", "--store", trained, "--dataset", "toy", "--kind", "logreg", "--param", "C=-1"
    )
    assert code == 1 and "The 'C' parameter of LogRegHead must be" in text
    assert "LogisticRegression" not in text and "Traceback" not in text


def test_train_kind_and_the_old_head_flag(trained: Path) -> None:
    code, text = cli("train", "--store", trained, "--dataset", "toy", "--kind", "logreg")
    assert code == 0 and "head 'toy-logreg' v1 (logreg)" in text
    code, text = cli("train", "--store", trained, "--dataset", "toy", "--head", "logreg")
    assert code == 0 and "head 'toy-logreg' v2 (logreg)" in text
    assert "--head is now --kind" in text


def test_no_held_out_rows_names_the_cause(trained: Path) -> None:
    code, text = cli("train", "--store", trained, "--dataset", "toy", "--val-fraction", "0")
    assert code == 0
    assert "no held-out rows: it has no val split and val_fraction (--val-fraction) is 0" in text


def test_unknown_head_suggests_train(tmp_path: Path) -> None:
    make_store(tmp_path / "s", n=10).close()
    code, text = cli("evaluate", "--store", tmp_path / "s", "--head", "x", "--dataset", "toy")
    assert code == 1
    assert "no head 'x' (known: none); train one with 'featcache train --store" in text


def test_heads_delete_asks_unless_yes(trained: Path) -> None:
    code, text = cli("heads", "delete", "--store", trained, "h", input="n\n")
    assert code == 1 and "delete all 1 version(s) of head 'h'" in text
    assert "nothing deleted (pass --yes to delete without asking)" in text
    code, text = cli(
        "heads", "delete", "--store", trained, "h"
    )  # no answer at all: nothing deleted
    assert code == 1 and "nothing deleted" in text
    assert FeatureStore(trained, create=False).head("h").version == 1
    code, text = cli("heads", "delete", "--store", trained, "h", input="y\n")
    assert code == 0 and "deleted 1 version(s) of head 'h'" in text
    train_head(FeatureStore(trained), "toy", name="h")
    code, text = cli("heads", "delete", "--store", trained, "h", "--yes")
    assert code == 0 and "deleted 1 version(s)" in text


def test_serve_bad_or_busy_port_is_one_line_and_exit_1(trained: Path) -> None:
    code, text = cli("serve", "--store", trained, "--head", "h", "--port", "99999")
    assert code == 1 and text.strip() == "error: --port must be in 1..65535. Got 99999."
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, text = cli("serve", "--store", trained, "--head", "h", "--port", str(port))
    assert code == 1 and "serving" not in text and len(text.strip().splitlines()) == 1
    assert f"cannot listen on 127.0.0.1:{port}" in text and "--port" in text


def test_predict_folder_without_weights_answers_what_it_can(tmp_path: Path) -> None:
    paths = write_images(tmp_path / "imgs", 4, classes=("a",))
    (tmp_path / "imgs" / "a" / "broken.png").write_bytes(b"not a png")
    keys = [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths[:3]]  # 3 cached, 1 new
    store = FeatureStore(tmp_path / "s")
    fp = "b" * 64
    store.register_extractor(fp, {"profile": "caffe", "weights_note": "RANDOM test weights"})
    store.put_batch(keys, {"fc7": np.eye(3, 8, dtype=np.float32) + 0.1}, fp)
    rows = [
        DatasetRow(k, str(p), i, "train")
        for i, (k, p) in enumerate(zip(keys, paths[:3], strict=True))
    ]
    store.add_dataset("d", rows, ["x", "y", "z"])
    train_head(store, "d", name="h", val_fraction=0.0, params={"random_state": 0})
    store.close()
    code, text = cli("predict", "--store", tmp_path / "s", "--head", "h", tmp_path / "imgs")
    assert code == 3 and "Traceback" not in text
    assert text.count("(cached)") == 3
    assert f"{paths[3]}: not in the store; give the weights (--weights) to extract it" in text
    assert "broken.png" in text and "2 of 5 image(s) could not be answered" in text
    code, text = cli(
        "predict", "--store", tmp_path / "s", "--head", "h", "--json", tmp_path / "imgs"
    )
    answers = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert len(answers) == 5 and all(a["weights_note"] == "RANDOM test weights" for a in answers)
    assert sum("predictions" in a for a in answers) == 3


def test_progress_lines_off_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    now = [100.0]
    with _shared.progress_bar("extracting", clock=lambda: now[0]) as update:
        for t, done in ((101.0, 64), (105.0, 128), (110.5, 640), (112.0, 704), (121.0, 1088)):
            now[0] = t
            update(done, 2000)
    lines = capsys.readouterr().err.splitlines()
    # at most one line per 10 s: at 110.5 and at 121.0; rate counted from the first report
    assert lines == [
        "extracting: 640/2000 images (32%), 60.6 img/s, ETA 0:00:22",
        "extracting: 1088/2000 images (54%), 51.2 img/s, ETA 0:00:18",
    ]
    now[0] = 200.0
    with _shared.progress_bar("extracting", clock=lambda: now[0]) as update:
        now[0] = 212.0  # the first report comes late (a slow start): no rate, no ETA yet
        update(64, 2000)
    said = capsys.readouterr().err
    assert said == "extracting: 64/2000 images (3%), - img/s, ETA after the next batch\n"


def test_readme_cli_reference_lists_every_option() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## CLI reference") :]
    section = section[: section.index("\n## ")]
    rows = [line for line in section.splitlines() if line.startswith("| `featcache")]
    for words, command in commands():
        if hasattr(command, "commands") and words:
            continue  # a group: its commands have their own rows
        call = " ".join(["featcache", *words]) if words else "featcache --version"
        row = next((r for r in rows if r.startswith(f"| `{call}")), None)
        assert row is not None, f"README's CLI reference has no row for `{call}`"
        flags = [o for p in command.params for o in p.opts if o.startswith("--") and o != "--help"]
        missing = [flag for flag in flags if flag not in row]
        assert not missing, f"`{call}` options missing from README's CLI reference: {missing}"


def test_progress_line_for_downloads_of_unknown_size() -> None:
    assert _shared.progress_line("downloading", 120, 0, 5.0, "MB") == (
        "downloading: 120 MB, 5.0 MB/s, ETA unknown"
    )
    assert _shared.progress_line("downloading", 120, 240, 5.0, "MB") == (
        "downloading: 120/240 MB (50%), 5.0 MB/s, ETA 0:00:24"
    )


def test_only_parameters_named_by_the_library_become_flags() -> None:
    def command(
        out_path: Path = typer.Option(..., "--out"),
        top_k: int = typer.Option(5),
        name: str = typer.Option("x"),
    ) -> None: ...

    flags = _shared.flag_names(command)
    assert flags == {"out_path": "--out", "out": "--out", "top_k": "--top-k", "name": "--name"}
    swap = _shared.name_flags
    assert swap("The 'top_k' must be >= 1. Got 0.", flags) == "--top-k must be >= 1. Got 0."
    assert swap("The 'out' file must end in .npz", flags) == "--out file must end in .npz"
    assert swap("no dataset 'name' (known: a)", flags) == "no dataset 'name' (known: a)"
    assert swap("The 'C' parameter of LogRegHead", flags) == "The 'C' parameter of LogRegHead"
