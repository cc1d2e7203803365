"""The one atomic write: unique temporary names, all or nothing, used everywhere."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

from featcache._io import TMP_PREFIX, atomic_write, atomic_write_bytes, temporary_name

SRC = Path(__file__).resolve().parents[1] / "src" / "featcache"


def test_whole_file_or_nothing(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    atomic_write_bytes(target, b"first")
    with pytest.raises(RuntimeError), atomic_write(target) as f:
        f.write(b"half of the second")
        raise RuntimeError("interrupted")
    assert target.read_bytes() == b"first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_the_temporary_file_can_be_checked_before_the_rename(tmp_path: Path) -> None:
    target = tmp_path / "w.npy"
    with atomic_write(target) as f:
        f.write(b"payload")
        f.flush()
        assert Path(f.name).read_bytes() == b"payload" and not target.exists()
        assert Path(f.name).name.startswith(TMP_PREFIX)
    assert target.read_bytes() == b"payload"


def test_concurrent_writers_never_share_a_temporary_name(tmp_path: Path) -> None:
    target = tmp_path / "shared.bin"
    names = {temporary_name(target) for _ in range(1000)}
    assert len(names) == 1000
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            for _ in range(20):
                atomic_write_bytes(target, bytes([i]) * 10_000)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    content = target.read_bytes()
    assert len(content) == 10_000 and len(set(content)) == 1  # one writer's whole file
    assert [p.name for p in tmp_path.iterdir()] == ["shared.bin"]


def test_no_other_module_renames_files_itself() -> None:
    """Shards, heads, exports, demo weights and downloads all go through featcache._io."""
    renames = re.compile(r"os\.replace\(|os\.rename\(|\.replace\(tmp|\.rename\(")
    offenders = [
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if path.name != "_io.py" and renames.search(path.read_text())
    ]
    assert offenders == []
    for module in ("store/shards.py", "store/heads.py", "store/export.py"):
        assert "atomic_write" in (SRC / module).read_text()
    for module in ("extractor/weights.py", "extractor/fetch.py"):
        assert "atomic_write" in (SRC / module).read_text()
