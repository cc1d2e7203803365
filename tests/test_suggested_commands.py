"""Every command the CLI suggests works as printed: each is taken from the output and run.
A word in capitals (DATASET, WEIGHTS) is the one thing the user fills in.

(Also run where they are made: `heads promote` in test_cli_naming.py, advise's next step on
too few rows in test_advise.py, doctor's next steps on unlabelled data in test_unlabelled.py,
the deprecated positional store's new form in test_cli_naming.py, and every repair a damaged
store suggests (`store verify --repair`, `store gc`, `heads delete`) in
test_suggested_repairs.py.)"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import write_images
from featcache.cli import app
from featcache.store import DatasetRow, FeatureStore
from signs import CLASSES, write_signs

pytestmark = pytest.mark.slow  # doctor and advise twice: about 15 s
runner = CliRunner()


def cli(*args: str | Path) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.output


def suggested(text: str, pattern: str) -> list[str]:
    """The words of the first `featcache ...` command in `text` matching `pattern`."""
    found = re.search(pattern, text)
    assert found is not None, text
    words = shlex.split(found.group(1))
    assert words[0] == "featcache", words
    return words[1:]


def build(root: Path) -> Path:
    """Datasets 'signs' (with a test row copying a train image: leakage) and 'clean' (the
    same without it); 120 real PNGs, random 16-d 'fc7' vectors by class."""
    signs = write_signs(root / "data", 120, test_every=5)
    copy = root / "data" / "copy-of-001.png"
    copy.write_bytes((root / "data" / CLASSES[1] / "001.png").read_bytes())
    with FeatureStore(root / "store") as store:
        store.register_extractor("d" * 64, {"profile": "caffe", "weights_note": "RANDOM"})
        store.put_batch(signs.keys, {"fc7": signs.vectors}, "d" * 64)
        store.add_dataset("clean", signs.rows, list(CLASSES))
        copied = DatasetRow(signs.keys[1], str(copy), 1, "test")
        store.add_dataset("signs", [*signs.rows, copied], CLASSES)
    return root / "store"


def test_every_suggestion_runs_as_printed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = build(tmp_path)

    code, text = cli("predict", "--store", store, "--head", "signs-softmax", tmp_path / "data")
    assert code == 1
    train = suggested(text, r"train one with '([^']+)'")
    assert "DATASET" in train  # the one placeholder: which dataset is the user's to say
    code, text = cli(*[w.replace("DATASET", "signs") for w in train])
    assert code == 0 and "head 'signs-softmax' v1" in text
    code, text = cli("predict", "--store", store, "--head", "signs-softmax", tmp_path / "data")
    assert code == 0 and text.count("(cached)") == 121

    code, text = cli("evaluate", "--store", store, "--head", "signs-softmax", "--dataset", "signs")
    assert code == 0
    doctor = suggested(text, r"\(clean accuracy: run '([^']+)'\)")
    code, text = cli(*doctor)
    assert code == 0 and "leakage test:" in text
    retrain = suggested(text, r"next: (featcache [^(]+?)\s{2,}\(")
    assert "--split-groups" in retrain
    code, text = cli(*retrain)
    assert code == 0 and "near-duplicate groups:" in text

    code, text = cli("doctor", "--store", store, "--dataset", "clean")
    assert code == 0
    advise = suggested(text, r"next: (featcache [^(]+?)\s{2,}\(")
    assert advise[0] == "advise"
    code, text = cli(*advise)
    assert code == 0
    following = suggested(text, r"next: (featcache .+)")
    assert following[0] == "train"  # advise and doctor never send back and forth
    code, text = cli(*following)
    assert code == 0 and "head 'clean-softmax' v1" in text


def with_weights(words: list[str], weights: Path) -> list[str]:
    """The suggested extract with the user's weights file (the one word only they know)."""
    at = words.index("--weights") + 1
    return [*words[:at], str(weights), *words[at + 1 :]]


def test_a_missing_layer_names_the_extract_that_adds_it(tmp_path: Path, weights_path: Path) -> None:
    """`train --layer` and `advise` on a layer not cached print `featcache extract SOURCE ...`
    with the dataset's own source; run with the user's weights, it adds the layer to the same
    rows (the real network, demo weights; a space in the folder names)."""
    root = tmp_path / "my data"
    write_images(root / "pics", 12)
    store = root / "store"
    code, text = cli("extract", root / "pics", "--store", store, "--weights", weights_path)
    assert code == 0 and "now 12 rows" in text, text

    code, text = cli("train", "--store", store, "--dataset", "pics", "--layer", "fc6")
    assert code == 1 and "'fc6' vectors" in text
    extract = suggested(text, r"extract them: (featcache extract .+)")
    assert extract[1] == str(root / "pics") and "--append" in extract
    code, text = cli(*with_weights(extract, weights_path))
    assert code == 0 and "12 extracted" in text and "now 12 rows" in text, text
    code, text = cli("train", "--store", store, "--dataset", "pics", "--layer", "fc6")
    assert code == 0 and "head 'pics-softmax' v1" in text

    code, text = cli("advise", "--store", store, "--dataset", "pics")
    assert code == 0 and "pool5 is not cached (alexnet)" in text
    measure = r"pool5 is not cached \(alexnet\); to measure: (featcache extract .+?) \("
    extract = suggested(text, measure)
    code, text = cli(*with_weights(extract, weights_path))
    assert code == 0 and "now 12 rows" in text, text
    code, text = cli("advise", "--store", store, "--dataset", "pics")
    assert code == 0 and "not cached" not in text and "pool5: cross-validated" in text
