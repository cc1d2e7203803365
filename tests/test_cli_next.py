"""A new user's second hour: after each command, the next one, runnable as printed (train
after extract, evaluate after train, predict and serve after evaluate); evaluate without a
test split says how to evaluate and how to add test images; predict prints the shard
repairs the store made while looking its images up, and says how to extract what the store
lacks. Vectors are put in the store directly (no network)."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from featcache.cli import app
from featcache.cli._next import after_extract
from featcache.store import DatasetInfo, DatasetRow, FeatureStore

FP = "a" * 64


def _store(tmp_path: Path, splits: list[str | None]) -> tuple[Path, list[Path]]:
    """Two classes of flat pictures with 8 clustered vectors each; row i in splits[i % n]."""
    rng = np.random.default_rng(0)
    rows, files, vectors = [], [], []
    for i in range(40):
        label = i % 2
        path = tmp_path / "images" / f"c{label}" / f"c{label}_{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8, 3), 3 * i + label, np.uint8)).save(path)
        key = hashlib.sha256(path.read_bytes()).hexdigest()
        rows.append(DatasetRow(key, str(path), label, splits[i % len(splits)]))
        files.append(path)
        vectors.append(rng.standard_normal(8) + 4 * label)
    store = tmp_path / "s.fc"
    with FeatureStore(store) as fs:
        fs.register_extractor(FP, {"network": "alexnet", "weights_note": "RANDOM test vectors"})
        fs.put_batch([r.key for r in rows], {"fc7": np.array(vectors, np.float32)}, FP)
        fs.add_dataset("shapes", rows, ["circle", "square"])
    return store, files


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def _next(output: str) -> list[str]:
    """The suggested commands: the "next:" line and the indented ones under it."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("next: "))
    rest = [line.strip() for line in lines[start + 1 :] if line.startswith("      featcache")]
    return [
        lines[start].removeprefix("next: ").split("   (")[0],
        *(r.split("   (")[0] for r in rest),
    ]


def test_train_then_evaluate_as_printed_without_a_test_split(tmp_path: Path) -> None:
    store, _ = _store(tmp_path, [None])
    code, output = _run("train", "--store", str(store), "--dataset", "shapes")
    assert code == 0, output
    evaluate, predict = _next(output)
    assert evaluate == (
        f"featcache evaluate --store {store} --head shapes-softmax --dataset shapes --split val"
    )
    assert (
        predict
        == f"featcache predict --store {store} --head shapes-softmax --weights WEIGHTS IMAGE..."
    )
    code, output = _run(*evaluate.split()[1:])
    assert code == 0, output
    assert "on 'shapes' [val]" in output
    assert _next(output) == [
        f"featcache predict --store {store} --head shapes-softmax --weights WEIGHTS IMAGE...",
        f"featcache serve --store {store} --head shapes-softmax --weights WEIGHTS",
    ]
    # the default split is test: there is none, and the message says both ways on
    code, output = _run("evaluate", "--store", str(store), "--head", "shapes-softmax",
                        "--dataset", "shapes")  # fmt: skip
    assert code == 1
    assert "no labelled rows in split 'test' (its splits: train, val; val: held out" in output
    assert "with --split val" in output
    assert (
        f"featcache extract TEST_IMAGES --store {store} --weights WEIGHTS --dataset shapes "
        "--split test --append" in " ".join(output.split())
    )


def test_with_a_test_split_evaluate_reads_it(tmp_path: Path) -> None:
    store, _ = _store(tmp_path, ["train", "train", "train", "test"])
    code, output = _run("train", "--store", str(store), "--dataset", "shapes")
    assert code == 0, output
    evaluate = _next(output)[0]
    assert evaluate == f"featcache evaluate --store {store} --head shapes-softmax --dataset shapes"
    code, output = _run(*evaluate.split()[1:])
    assert code == 0 and "on 'shapes' [test], 10 images" in output


@pytest.mark.parametrize(
    ("classes", "splits", "expected"),
    [
        (["a", "b"], {"train": 8, "test": 2}, ["featcache train --store S --dataset d"]),
        (["a", "b"], {"": 10}, ["featcache train --store S --dataset d",
                                "featcache extract TEST_IMAGES --store S --weights w.npy "
                                "--dataset d --split test --append"]),
        ([], {"": 10}, ["featcache doctor --store S --dataset d"]),
    ],
)  # fmt: skip
def test_after_extract(classes: list[str], splits: dict[str, int], expected: list[str]) -> None:
    lines = after_extract("S", DatasetInfo("d", classes, "folder x", 10, splits), "w.npy")
    assert lines[0].removeprefix("next: ").split("   (")[0] == expected[0]
    assert len(expected) == 1 or expected[1] in lines[1]
    assert len(lines) == len(expected)


def test_predict_prints_shard_repairs_and_how_to_extract(tmp_path: Path) -> None:
    store, files = _store(tmp_path, [None])
    assert _run("train", "--store", str(store), "--dataset", "shapes")[0] == 0
    for shard in (store / "shards").rglob("*.npy"):
        shard.write_bytes(shard.read_bytes()[:-16])  # damaged: 16 bytes short
    code, output = _run("predict", "--store", str(store), "--head", "shapes-softmax", str(files[0]))
    assert code == 3
    assert "repaired" in output and "its vectors will be computed again" in output
    assert f"{files[0]}: not in the store" in output
    assert "run again with --weights WEIGHTS" in " ".join(output.split())


def test_serve_says_how_to_ask_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import featcache.service.runner

    store, _ = _store(tmp_path, [None])
    assert _run("train", "--store", str(store), "--dataset", "shapes")[0] == 0
    monkeypatch.setattr(featcache.service.runner, "run", lambda *a, **k: None)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code, output = _run("serve", "--store", str(store), "--head", "shapes-softmax",
                        "--port", str(port))  # fmt: skip
    assert code == 0, output
    url = f"http://127.0.0.1:{port}"
    assert f"try: curl -F files=@IMAGE {url}/v1/predict   (API docs: {url}/docs" in output


def test_each_unanswered_copy_is_named_by_its_own_path(tmp_path: Path) -> None:
    store, _ = _store(tmp_path, [None])
    assert _run("train", "--store", str(store), "--dataset", "shapes")[0] == 0
    first, second = tmp_path / "new" / "a.png", tmp_path / "new" / "b.png"
    first.parent.mkdir()
    Image.fromarray(np.full((8, 8, 3), 250, np.uint8)).save(first)
    second.write_bytes(first.read_bytes())  # the same bytes: one key
    code, output = _run("predict", "--store", str(store), "--head", "shapes-softmax",
                        str(first), str(second))  # fmt: skip
    assert code == 3
    assert f"Image 0: {first}\n  error: {first}: not in the store" in output
    assert f"Image 1: {second}\n  error: {second}: not in the store" in output


def test_export_chooses_the_vectors_as_train_and_doctor_do(tmp_path: Path) -> None:
    """A VGG16 dataset: export without --layer writes fc2 (it said fc7 was missing)."""
    rows = [DatasetRow(f"{i:064x}", f"/x/{i}.png", i % 2, None) for i in range(6)]
    store = tmp_path / "v.fc"
    with FeatureStore(store) as fs:
        fs.register_extractor("b" * 64, {"network": "vgg16", "weights_note": "RANDOM"})
        fs.put_batch([r.key for r in rows], {"fc2": np.ones((6, 4), np.float32)}, "b" * 64)
        fs.add_dataset("v", rows, ["a", "b"])
    out = tmp_path / "v.npz"
    code, output = _run("export", "--store", str(store), "--dataset", "v", "--out", str(out))
    assert code == 0, output
    with np.load(out) as saved:
        assert saved["features"].shape == (6, 4)
    code, output = _run("export", "--store", str(store), "--dataset", "v", "--out", str(out),
                        "--backbone", "alexnet")  # fmt: skip
    assert code == 1 and "alexnet" in output


def test_a_mistyped_store_says_how_to_make_one(tmp_path: Path) -> None:
    code, output = _run("train", "--store", str(tmp_path / "photo.fc"), "--dataset", "d")
    assert code == 1
    assert "no feature store here (no catalog.sqlite); check the path, or make one: " in output
    assert f"featcache extract IMAGES --store {tmp_path / 'photo.fc'} --weights WEIGHTS" in (
        " ".join(output.split())
    )
