"""Dataset rows' and sources' recorded paths are data from whoever made the store: a path
with NUL, control characters or '..' is never opened (doctor's contact sheets) nor put in a
suggested command; an array file's name on a FIFO is refused without blocking."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from featcache.analysis.pixels import RowPixels
from featcache.errors import UnsafePathError
from featcache.store import recorded_path, source_path

CRAFTED = [
    "/data/a\x00.png",
    "/data/\x1b[2J\x1b]0;pwned\x07.png",
    "/data/a\n.png",
    "/data/\x9bb.png",
    "/data/../../etc/shadow",
    "../x.png",
    "",
]


@pytest.mark.parametrize("path", CRAFTED)
def test_crafted_recorded_paths_are_refused_naming_them(path: str) -> None:
    with pytest.raises(UnsafePathError, match=r"dataset row path .*never opened"):
        recorded_path(path, "dataset row path")


def test_plain_recorded_paths_pass() -> None:
    for path in ("/data/cat 1.png", "train.p#17", "/d/ü/ø.jpg", "rel/a.png"):
        assert recorded_path(path, "row") == path


@pytest.mark.parametrize("path", CRAFTED[:5])
def test_a_crafted_source_is_never_put_in_a_suggested_command(path: str) -> None:
    assert source_path(f"folder {path}") is None
    assert source_path("folder /data/imgs (unlabelled)") == "/data/imgs"


def test_contact_sheets_never_open_crafted_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[object] = []
    real_open = open

    def spy(file: object, *args: object, **kwargs: object) -> object:
        opened.append(file)
        return real_open(file, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr("builtins.open", spy)
    pixels = RowPixels()
    for path in CRAFTED:
        assert pixels.rgb(path) is None
    assert opened == []


def test_an_array_row_on_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "train.p"
    os.mkfifo(fifo, 0o600)
    found: list[object] = []
    reader = threading.Thread(target=lambda: found.append(RowPixels().rgb(f"{fifo}#0")))
    reader.start()
    reader.join(10)
    if reader.is_alive():  # unblock it, then fail
        with open(fifo, "wb"):
            pass
        reader.join()
        pytest.fail("reading an array row on a FIFO blocked")
    assert found == [None]
