"""Every command a damaged store suggests works as printed and mends what it names: the
commands are taken from the messages (``store verify``'s problems, or the error of the
command that met the damage), run as a shell would split them, and ``store verify`` then
passes. The store's folder name has a space, so an unquoted path would not run."""

from __future__ import annotations

import os
import re
import shlex
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from featcache.cli import app
from featcache.store import DatasetRow, FeatureStore
from featcache.store.commands import source_path

FP = "f" * 64
runner = CliRunner()
HOUR_AGO = time.time() - 3600


def cli(*args: str | Path, answer: str = "") -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args], input=answer)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.output


def suggestions(text: str) -> list[str]:
    """Every quoted ``'featcache ...'`` command in `text`, once each, in order."""
    return list(dict.fromkeys(re.findall(r"'(featcache [^']+)'", text)))


def build(store: Path) -> Path:
    """Two shards of 4-d 'fc7' vectors (6 rows each), dataset 'd' and head 'h' v1."""
    rng = np.random.default_rng(0)
    with FeatureStore(store) as fs:
        fs.register_extractor(FP, {"network": "alexnet", "weights_note": "RANDOM"})
        keys = [f"{i:064x}" for i in range(12)]
        for part in (keys[:6], keys[6:]):
            fs.put_batch(part, {"fc7": rng.standard_normal((6, 4)).astype(np.float32)}, FP)
        rows = [DatasetRow(k, f"{i}.png", i % 2, "train") for i, k in enumerate(keys)]
        fs.add_dataset("d", rows, ["a", "b"])
        fs.add_head("h", b"head bytes", {"kind": "softmax"})
    assert cli("store", "verify", "--store", store)[0] == 0
    return store


def shard(store: Path, index: int = 0) -> Path:
    return sorted((store / "shards").rglob("*.npy"))[index]


def old(path: Path) -> Path:
    os.utime(path, (HOUR_AGO, HOUR_AGO))
    return path


def change_bytes(store: Path) -> None:
    data = bytearray(shard(store).read_bytes())
    data[-4:] = b"\x00\x00\x80\x7f"  # the last value becomes infinity: same size, new digest
    shard(store).write_bytes(bytes(data))


def delete_shard(store: Path) -> None:
    shard(store, 1).unlink()


def forget_shard(store: Path) -> None:
    """The catalog loses a shard's registration: its vectors dangle, its file is unlisted."""
    with sqlite3.connect(store / "catalog.sqlite") as db:
        (name,) = db.execute("SELECT name FROM shards ORDER BY id LIMIT 1").fetchone()
        db.execute("DELETE FROM shards WHERE name = ?", (name,))
    old(store / "shards" / name)


def leftover_shard(store: Path) -> None:
    """A shard an interrupted run wrote but never registered (named as featcache names them)."""
    np.save(shard(store).parent / f"{'e' * 32}.npy", np.zeros((2, 4), np.float32))
    old(shard(store).parent / f"{'e' * 32}.npy")


def stale_temporary(store: Path) -> None:
    (store / "reports").mkdir()
    (store / "reports" / ".tmp-123-0123456789ab-doctor.json").write_text("{")
    old(store / "reports" / ".tmp-123-0123456789ab-doctor.json")


def interrupted_conversion(store: Path) -> None:
    folder = store / "runtimes" / FP[:16] / ".tmp-123-0123456789ab-openvino-fc7-float32"
    folder.mkdir(parents=True)
    (folder / "model.xml").write_text("<net/>")
    old(folder)


def damaged_runtime_model(store: Path) -> None:
    folder = store / "runtimes" / FP[:16] / "openvino-fc7-float32"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text("{ not json")


def changed_head(store: Path) -> None:
    (head,) = (store / "heads").rglob("*.safetensors")
    head.write_bytes(b"other bytes")


def head_outside(store: Path) -> None:
    with sqlite3.connect(store / "catalog.sqlite") as db:
        db.execute("UPDATE heads SET file = 'heads/../catalog.sqlite'")


DAMAGE: dict[str, Callable[[Path], None]] = {
    "changed shard": change_bytes,
    "deleted shard": delete_shard,
    "forgotten shard": forget_shard,
    "leftover shard": leftover_shard,
    "stale temporary": stale_temporary,
    "interrupted conversion": interrupted_conversion,
    "damaged runtime model": damaged_runtime_model,
    "changed head file": changed_head,
    "head file outside": head_outside,
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_store_verify_suggests_what_mends_the_store(tmp_path: Path, damage: str) -> None:
    store = build(tmp_path / "my store")
    DAMAGE[damage](store)
    code, text = cli("store", "verify", "--store", store)
    assert code == 3 and "problem:" in text
    commands = suggestions(text)
    assert commands, text
    for command in commands:
        words = shlex.split(command)  # as a shell splits it
        assert words[words.index("--store") + 1] == str(store)
        # heads delete asks first: the user answers yes
        code, done = cli(*words[1:], answer="y\n")
        # verify --repair may leave a problem that a later suggestion mends (exit 3)
        left = code == 3 and words[1:3] == ["store", "verify"]
        assert code == 0 or (left and set(suggestions(done)) <= set(commands)), (command, done)
    code, text = cli("store", "verify", "--store", store)
    assert code == 0 and "0 problem(s)" in text, (commands, text)


@pytest.mark.parametrize(
    ("damage", "command"),
    [
        (change_bytes, ("export", "--dataset", "d", "--out", "d.npz")),
        (delete_shard, ("export", "--dataset", "d", "--out", "d.npz")),
        (changed_head, ("evaluate", "--head", "h", "--dataset", "d")),
    ],
)
def test_a_command_that_meets_damage_names_the_repair(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    damage: Callable[[Path], None],
    command: tuple[str, ...],
) -> None:
    monkeypatch.chdir(tmp_path)
    store = build(tmp_path / "my store")
    damage(store)
    code, text = cli(*command, "--store", store)
    assert code == 1
    (repair,) = suggestions(text)
    code, done = cli(*shlex.split(repair)[1:], answer="y\n")
    assert code == 0, done
    code, text = cli("store", "verify", "--store", store)
    assert code == 0 and "0 problem(s)" in text


def test_a_file_featcache_did_not_write_is_named_but_no_command_offered(tmp_path: Path) -> None:
    store = build(tmp_path / "my store")
    np.save(shard(store).parent / "mine.npy", np.zeros((2, 4), np.float32))
    code, text = cli("store", "verify", "--store", store)
    assert code == 3 and "mine.npy: a file featcache did not write" in text
    assert suggestions(text) == []  # gc would leave it: it is the user's to move
    assert cli("store", "gc", "--store", store, "--grace", "0")[0] == 0
    assert (shard(store).parent / "mine.npy").exists()


@pytest.mark.parametrize(
    ("description", "path"),
    [
        ("folder /data/my photos", "/data/my photos"),
        ("folder /data/flat (unlabelled)", "/data/flat"),
        ("manifest /data/signs.csv", "/data/signs.csv"),
        ("arrays /data/x.npz (float32 in [0, 1], scaled by 255)", "/data/x.npz"),
        ("something else", None),
    ],
)
def test_the_source_path_is_read_from_each_readers_description(
    description: str, path: str | None
) -> None:
    assert source_path(description) == path
