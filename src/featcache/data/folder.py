"""An image folder: one subfolder per class (names sorted = ids).

If every top-level folder is a split name (``train``, ``val``, ``valid``, ``test``), each
holds class subfolders and its name becomes the rows' split. A folder whose images sit
directly in it (no class subfolders; ``photos/*.jpg`` or ``photos/train/*.jpg``) is an
unlabelled dataset: its rows have no label, which `predict`, `doctor`'s duplicates and
outliers and `export` need not; training says what is missing.
"""

from __future__ import annotations

from pathlib import Path

from featcache.data.source import IMAGE_SUFFIXES, ImageItem, ImageSource
from featcache.errors import DataError

__all__ = ["SPLIT_FOLDERS", "read_folder"]

SPLIT_FOLDERS = frozenset({"train", "val", "valid", "validation", "test"})


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _loose_images(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def _images(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def read_folder(root: str | Path) -> ImageSource:
    """Read `root`; class names are the class folders' names, ids in sorted order."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    top = _subdirs(root)
    split_layout = bool(top) and all(p.name.lower() in SPLIT_FOLDERS for p in top)
    groups = [(p.name.lower(), p) for p in top] if split_layout else [(None, root)]
    class_names = sorted({c.name for _, folder in groups for c in _subdirs(folder)})
    if not class_names:
        items = [
            ImageItem(path=str(image), split=split, file=image)
            for split, folder in groups
            for image in _loose_images(folder)
        ]
        if not items:
            raise DataError(
                f"{root}: no images; expected ROOT/image.png (unlabelled), ROOT/CLASS/image.png "
                f"or ROOT/train|test/CLASS/image.png ({', '.join(sorted(IMAGE_SUFFIXES))})"
            )
        return ImageSource(items, [], f"folder {root} (unlabelled)")
    ids = {name: i for i, name in enumerate(class_names)}
    items = [
        ImageItem(path=str(image), label=ids[cls.name], split=split, file=image)
        for split, folder in groups
        for cls in _subdirs(folder)
        for image in _images(cls)
    ]
    if not items:
        raise DataError(f"{root}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return ImageSource(items, class_names, f"folder {root}")
