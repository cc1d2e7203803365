"""featcache._io's folder moves: `move_into` (a converter's files into place, fsynced, in
order) and `replace_folder` (a folder replaced whole, the old one kept if the move fails)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from featcache._io import move_into, replace_folder


def test_move_into_renames_every_entry_the_named_ones_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    staged, folder = tmp_path / ".tmp-x", tmp_path / "out"
    (staged / "variables").mkdir(parents=True)
    (staged / "variables" / "data").write_bytes(b"w")
    for name in ("model.xml", "model.bin", "a.txt"):
        (staged / name).write_text(name)
    folder.mkdir()
    moved: list[str] = []
    real = os.replace

    def spy(source: object, target: object) -> None:
        moved.append(Path(str(target)).name)
        real(source, target)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", spy)
    move_into(staged, folder, ("model.bin", "model.xml"))
    assert moved == ["a.txt", "variables", "model.bin", "model.xml"]
    assert (folder / "variables" / "data").read_bytes() == b"w"
    assert (folder / "model.xml").read_text() == "model.xml"
    assert list(staged.iterdir()) == []


def test_replace_folder_replaces_and_keeps_the_old_one_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    final = tmp_path / "model"
    final.mkdir()
    (final / "old").write_text("old")
    new = tmp_path / ".new"
    new.mkdir()
    (new / "new").write_text("new")
    real = os.rename

    def failing(source: object, target: object) -> None:
        if Path(str(source)) == new:
            raise OSError(errno.EIO, "Input/output error")
        real(source, target)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "rename", failing)
    with pytest.raises(OSError, match="Input/output error"):
        replace_folder(new, final)
    assert [p.name for p in final.iterdir()] == ["old"]  # the old folder back in place
    monkeypatch.setattr(os, "rename", real)
    assert replace_folder(new, final)
    assert [p.name for p in final.iterdir()] == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # nothing left aside
