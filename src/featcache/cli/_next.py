"""The "next:" lines a command prints: the command a user runs after this one, spelled so it
runs as printed (`featcache.store.commands`), with what only the user knows in capitals
(``WEIGHTS``, ``IMAGE``). Pure functions of what the command just did, so tests read them."""

from __future__ import annotations

from featcache.store import DatasetInfo
from featcache.store.commands import shell_word, store_command, test_images_command

__all__ = ["after_evaluate", "after_extract", "after_train"]

_INDENT = "      "  # under "next: "


def _lines(first: str, *more: str) -> list[str]:
    return [f"next: {first}", *(_INDENT + line for line in more)]


def _has_test(info: DatasetInfo) -> bool:
    return any((split or "").lower() == "test" for split in info.splits)


def after_extract(store: str, info: DatasetInfo, weights: str) -> list[str]:
    """Train a head (labelled rows), else look at the images (unlabelled)."""
    dataset = shell_word(info.name)
    if not info.class_names:
        return _lines(
            store_command("doctor", store, "--dataset", dataset)
            + "   (duplicates and outliers; to train, put the images in one subfolder per "
            "class, or list them in a CSV of path,label, and extract again)"
        )
    lines = _lines(
        store_command("train", store, "--dataset", dataset) + "   (a softmax head, seconds)"
    )
    if not _has_test(info):
        lines.append(
            f"{_INDENT}(no test split: train holds out 20% of these rows as 'val' and "
            f"evaluate reads them with --split val; to keep test images apart: "
            f"{test_images_command(store, info.name, weights)})"
        )
    return lines


def after_train(store: str, info: DatasetInfo, head: str, held_out: bool) -> list[str]:
    """Evaluate the head on the test split (or, without one, on the held-out rows), then
    predict."""
    dataset = shell_word(info.name)
    predict = (
        store_command("predict", store, "--head", shell_word(head), "--weights WEIGHTS IMAGE...")
        + "   (new images; WEIGHTS: the file the vectors came from)"
    )
    if not _has_test(info) and not held_out:
        return _lines(test_images_command(store, info.name) + "   (nothing is held out)", predict)
    split = [] if _has_test(info) else ["--split", "val"]
    return _lines(
        store_command("evaluate", store, "--head", shell_word(head), "--dataset", dataset, *split)
        + "   (accuracy, per-class report, confusion matrix)",
        predict,
    )


def after_evaluate(store: str, head: str) -> list[str]:
    """Predict new images, or serve the head."""
    return _lines(
        store_command("predict", store, "--head", shell_word(head), "--weights WEIGHTS IMAGE..."),
        store_command("serve", store, "--head", shell_word(head), "--weights WEIGHTS")
        + "   (HTTP: POST images to /v1/predict)",
    )
