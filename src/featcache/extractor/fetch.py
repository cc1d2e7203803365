"""Download ``bvlc_alexnet.npy``: stream to a temporary name, check it, then rename.

An interrupted or bad download leaves nothing at the destination.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from featcache.errors import WeightsError
from featcache.extractor.weights import Weights, read_weights

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
    url: str = DEFAULT_WEIGHTS_URL,
    *,
    timeout: float = 60.0,
    progress: ProgressCallback | None = None,
) -> Weights:
    """Download weights from `url` to `dest`, check their structure and return them.

    Raises `WeightsError` (and leaves `dest` untouched) when the download fails, is cut
    short, or the file is not a usable AlexNet weights file.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part-{os.getpid()}")
    try:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                done = 0
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
                out.flush()
                os.fsync(out.fileno())
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise WeightsError(
                f"{url}: download failed ({exc}); nothing written to {dest}"
            ) from exc
        if total is not None and done != total:
            raise WeightsError(
                f"{url}: download cut short at {done} of {total} bytes; nothing written to {dest}"
            )
        try:
            weights = read_weights(tmp)
        except WeightsError as exc:
            raise WeightsError(
                f"{url}: the download is not a usable weights file: {exc}; "
                f"nothing written to {dest}"
            ) from exc
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return Weights(dest, weights.layers, weights.sha256, weights.demo_note)
