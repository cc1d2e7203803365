"""A store handed over by an attacker: every file it holds is hostile input.

Each attack must end in a `FeatcacheError` naming the file (row, field), run no code, touch
no file outside the store, lose no stored data, and neither hang nor allocate without bound.
Runtime models here are stand-ins (conftest.publish_runtime_model); the real OpenVINO
conversions are in test_openvino.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import publish_runtime_model
from featcache.errors import ConfigError, StoreError
from featcache.store import FeatureStore, LocalKey, RuntimeFiles, local_key

FP = "f" * 64
NAME = "openvino-fc7-float32"


# -- runtime models: signed with this user's local key ---------------------------------------


def test_the_local_key_is_created_once_private_and_refused_when_others_may_read_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "cfg" / "featcache" / "local.key"
    key = local_key(path)
    assert path.stat().st_mode & 0o777 == 0o600 and len(path.read_bytes()) == 32
    assert local_key(path).secret == key.secret  # the same key from then on
    assert key.secret.hex() not in repr(key) and key.id in repr(key)
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match=r"local\.key: .* may be read by others .*chmod 600"):
        local_key(path)
    os.chmod(path, 0o600)
    path.write_bytes(b"short")
    with pytest.raises(ConfigError, match=r"local\.key: a featcache key is 32 bytes; got 5"):
        local_key(path)
    path.unlink()
    path.symlink_to(tmp_path / "elsewhere.key")
    with pytest.raises(ConfigError, match=r"local\.key: cannot read .*not a symlink"):
        local_key(path)
    fifo = tmp_path / "fifo.key"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(ConfigError, match=r"fifo\.key: .* not a regular file"):
        local_key(fifo)  # refused at once, never blocks


def test_the_key_file_follows_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from featcache.store import key_file

    monkeypatch.delenv("FEATCACHE_KEY_FILE")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert key_file() == tmp_path / "xdg" / "featcache" / "local.key"
    monkeypatch.setenv("FEATCACHE_KEY_FILE", str(tmp_path / "k"))
    assert key_file() == tmp_path / "k"


def _other_key(tmp_path: Path) -> LocalKey:
    return local_key(tmp_path / "other-user.key")


def test_a_model_signed_with_another_key_or_unsigned_is_foreign(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path / "s")
    theirs = RuntimeFiles(store.runtime_models.root, _other_key(tmp_path))
    folder = publish_runtime_model(theirs, FP, kib=1)
    assert theirs.find(FP, NAME) is not None  # sound for whoever converted it
    with pytest.raises(StoreError, match=r"manifest\.json: is signed with another key .* never"):
        store.runtime_models.find(FP, NAME)
    problems = store.verify().problems
    assert any("signed with another key" in p and str(folder) in p for p in problems)

    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["mac"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match=r"manifest\.json: is not signed .* converted again"):
        store.runtime_models.find(FP, NAME)
    for mac in ({"key": store.runtime_models.key.id, "hmac_sha256": "0" * 64}, "x", None):
        (folder / "manifest.json").write_text(json.dumps({**manifest, "mac": mac}))
        with pytest.raises(StoreError, match="does not match its signature|is not signed"):
            store.runtime_models.find(FP, NAME)
    assert store.verify(repair=True).runtime_models_removed == [str(folder)]
    assert not folder.exists()
    # converted here: signed with this user's key and used
    publish_runtime_model(store.runtime_models, FP, kib=1)
    assert store.runtime_models.find(FP, NAME) is not None and store.verify().ok
