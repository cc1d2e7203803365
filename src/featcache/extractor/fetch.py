"""Download a backbone's weights file (``bvlc_alexnet.npy``, Keras's VGG16 / ResNet50
``.h5``): stream to a temporary name, check it with the backbone's reader, then rename.

An interrupted or bad download leaves nothing at the destination.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from featcache._io import atomic_write
from featcache.errors import WeightsError
from featcache.extractor.registry import DEFAULT_BACKBONE, backbone_named
from featcache.extractor.weights import Weights

__all__ = ["DEFAULT_WEIGHTS_URL", "fetch_weights"]

#: The download the Udacity AlexNet feature-extraction lab used (about 244 MB).
DEFAULT_WEIGHTS_URL = (
    "https://d17h27t6h515a5.cloudfront.net/topher/2016/October/"
    "580d880c_bvlc-alexnet/bvlc-alexnet.npy"
)
_CHUNK = 1 << 20

ProgressCallback = Callable[[int, int | None], None]  # (bytes so far, total or None)


def fetch_weights(
    dest: str | Path,
    url: str | None = None,
    *,
    timeout: float = 60.0,
    progress: ProgressCallback | None = None,
    backbone: str = DEFAULT_BACKBONE,
) -> Weights:
    """Download `backbone`'s weights from `url` (default: where they are published) to
    `dest`, check their structure and return them.

    Raises `WeightsError` (and leaves `dest` untouched) when the download fails, is cut
    short, or the file is not a usable weights file for `backbone`.
    """
    network = backbone_named(backbone)
    url = url or network.weights_url
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_write(dest) as out:
            weights = _download(url, dest, out, timeout, progress, network.read_weights)
    except OSError as exc:
        raise WeightsError(f"{dest}: cannot write the download ({exc})") from exc
    return Weights(dest, weights.layers, weights.sha256, weights.demo_note, weights.network)


def _download(
    url: str,
    dest: Path,
    out: BinaryIO,
    timeout: float,
    progress: ProgressCallback | None,
    read: Callable[[Path], Weights],
) -> Weights:
    """Stream `url` into `out` (a temporary file) and check it is a weights file."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            done = 0
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
            out.flush()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise WeightsError(f"{url}: download failed ({exc}); nothing written to {dest}") from exc
    if total is not None and done != total:
        raise WeightsError(
            f"{url}: download cut short at {done} of {total} bytes; nothing written to {dest}"
        )
    try:
        return read(Path(out.name))
    except WeightsError as exc:
        raise WeightsError(
            f"{url}: the download is not a usable weights file: {exc}; nothing written to {dest}"
        ) from exc
