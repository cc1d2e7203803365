"""Re-runs trust the store's (path, size, mtime_ns, ctime_ns, inode) -> key record: unchanged
files are not read again; a changed file is, even with its old size and mtime put back;
``rehash`` reads every file; a file modified just now is not recorded (git's racily-clean
rule)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from conftest import CountingNetwork, write_images
from featcache.data import ImageItem
from featcache.extractor import keys
from featcache.extractor.keys import RACY_SECONDS
from featcache.extractor.pipeline import ExtractConfig, extract
from featcache.extractor.weights import Weights
from featcache.store import FeatureStore


def age(paths: list[Path], seconds: float = 60.0) -> None:
    """Set the files' mtime into the past (as files not written just now; their ctime stays
    now, so tests of the record set `not_racy`)."""
    past = time.time() - seconds
    for path in paths:
        os.utime(path, (past, past))


def keys_by_path(root: Path) -> dict[str, str]:
    with FeatureStore(root / "store") as store:
        return {row.path: row.key for row in store.dataset_rows("d")}


@pytest.fixture
def not_racy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Record files written just now (ctime cannot be set into the past to age them)."""
    monkeypatch.setattr(keys, "RACY_SECONDS", 0.0)


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths whose bytes are read to hash them (`ImageItem.key`), in order."""
    seen: list[str] = []
    original = ImageItem.key

    def counting(self: ImageItem) -> str:
        seen.append(self.path)
        return original(self)

    monkeypatch.setattr(ImageItem, "key", counting)
    return seen


def run(tmp_path: Path, weights: Weights, network: type[CountingNetwork], **config: object):  # type: ignore[no-untyped-def]
    return extract(
        tmp_path / "data",
        weights,
        tmp_path / "store",
        config=ExtractConfig(batch_size=4, **config),  # type: ignore[arg-type]
        dataset="d",
        network_factory=network,
    )


def test_unchanged_files_are_not_read_again(
    tmp_path: Path,
    stub_weights: Weights,
    counting_network: type[CountingNetwork],
    reads: list[str],
    not_racy: None,
) -> None:
    paths = write_images(tmp_path / "data", 6)
    age(paths)
    first = run(tmp_path, stub_weights, counting_network)
    assert first.extracted == 6 and len(reads) == 6  # every file hashed
    reads.clear()
    second = run(tmp_path, stub_weights, counting_network)
    assert (second.extracted, second.cached) == (0, 6)
    assert reads == []  # every key from the stat record
    keys_before = keys_by_path(tmp_path)

    # a changed file (new bytes, new mtime) is read, hashed and extracted again
    paths[2].write_bytes(paths[3].read_bytes())
    age([paths[2]], 30)
    third = run(tmp_path, stub_weights, counting_network)
    assert reads == [str(paths[2])]
    assert third.duplicates == 1  # now the same bytes as paths[3]
    keys_after = keys_by_path(tmp_path)
    two, three = str(paths[2]), str(paths[3])
    assert keys_after[two] == keys_after[three] != keys_before[two]

    # rehash reads every file again, and finds the same keys
    reads.clear()
    fourth = run(tmp_path, stub_weights, counting_network, rehash=True)
    assert sorted(reads) == sorted(str(p) for p in paths)
    assert fourth.extracted == 0
    assert keys_by_path(tmp_path) == keys_after


def test_files_written_just_now_are_hashed_again(
    tmp_path: Path,
    stub_weights: Weights,
    counting_network: type[CountingNetwork],
    reads: list[str],
) -> None:
    assert RACY_SECONDS >= 1
    write_images(tmp_path / "data", 3)  # mtimes: now
    run(tmp_path, stub_weights, counting_network)
    reads.clear()
    run(tmp_path, stub_weights, counting_network)
    assert len(reads) == 3  # not recorded: could still change within the same tick


def test_a_file_rewritten_with_its_old_size_and_mtime_put_back_is_hashed_again(
    tmp_path: Path,
    stub_weights: Weights,
    counting_network: type[CountingNetwork],
    reads: list[str],
    not_racy: None,
) -> None:
    paths = write_images(tmp_path / "data", 4)
    age(paths)
    run(tmp_path, stub_weights, counting_network)
    before = keys_by_path(tmp_path)
    target = paths[1]
    st = target.stat()
    data = bytearray(paths[1].read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes
    time.sleep(0.01)  # past the kernel's timestamp tick
    target.write_bytes(bytes(data))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # as `touch -d` would
    after = target.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        st.st_size,
        st.st_mtime_ns,
        st.st_ino,
    )
    assert after.st_ctime_ns != st.st_ctime_ns
    reads.clear()
    run(tmp_path, stub_weights, counting_network)
    assert reads == [str(target)]  # the only file whose stamp changed
    assert keys_by_path(tmp_path)[str(target)] != before[str(target)]


def test_a_file_changed_just_now_is_not_recorded_even_with_an_old_mtime(
    tmp_path: Path,
    stub_weights: Weights,
    counting_network: type[CountingNetwork],
    reads: list[str],
) -> None:
    paths = write_images(tmp_path / "data", 2)
    age(paths)  # an old mtime, but the inode changed just now (ctime)
    run(tmp_path, stub_weights, counting_network)
    reads.clear()
    run(tmp_path, stub_weights, counting_network)
    assert len(reads) == 2
