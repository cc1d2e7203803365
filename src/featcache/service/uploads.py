"""Upload triage for ``POST /v1/predict``: which files are answered, refused, or to extract.

Each upload keeps its own answer and HTTP status. Limits are checked before any pixel is
decoded: bytes per file, then the pixel count read from each unseen image's header, per file
and summed over the request. An unseen image is decoded once: by the extraction, or, when
the server cannot extract, here (to tell a broken file, 422, from a good one, 409).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from featcache.data.decode import image_size
from featcache.data.source import ImageItem, bytes_key
from featcache.errors import ImageError, ImageTooLargeError
from featcache.predictor import ImageResult
from featcache.service.answers import Answer
from featcache.service.errors import ApiError

__all__ = ["Upload", "answer_body", "check_decodes", "check_pixels", "triage"]


@dataclass
class Upload:
    """One file of a request: its bytes and key, then its answer (or error) and status."""

    name: str
    data: bytes
    key: str | None = None
    answer: dict[str, Any] | None = None
    status: int = 200
    pixels: int = 0

    @property
    def pending(self) -> bool:
        return self.answer is None

    def fail(self, status: int, error: str) -> None:
        self.answer = {"path": self.name, "key": self.key, "cached": False, "error": error}
        self.status = status

    def answered(self, answer: Answer, *, cached: bool = True) -> None:
        self.answer = answer.as_dict(self.name, cached=cached)

    def extracted(self, result: ImageResult) -> None:
        result.path = self.name
        self.answer = result.as_dict()
        self.status = 422 if result.error else 200

    def item(self) -> ImageItem:
        return ImageItem(self.name, data=self.data)


def triage(files: Sequence[tuple[str, bytes]], max_upload_bytes: int) -> list[Upload]:
    """Uploads with their keys; an empty file or one over `max_upload_bytes` gets its answer.

    `files` holds at most ``max_upload_bytes + 1`` bytes of each file (enough to tell).
    """
    uploads = []
    for name, data in files:
        upload = Upload(name, data)
        if len(data) > max_upload_bytes:
            upload.fail(413, f"{name}: larger than {max_upload_bytes} bytes")
        elif not data:
            upload.fail(422, f"{name}: empty file")
        else:
            upload.key = bytes_key(data)
        uploads.append(upload)
    return uploads


def check_pixels(uploads: Sequence[Upload], max_pixels: int, max_request_pixels: int) -> None:
    """Read each pending upload's size from its header (no decoding): a file that is not an
    image gets 422, one over `max_pixels` 413; raise `ApiError` 413 when the rest add up to
    more than `max_request_pixels`."""
    total = 0
    for upload in uploads:
        if not upload.pending:
            continue
        try:
            width, height = image_size(upload.data, upload.name)
        except ImageTooLargeError as exc:
            upload.fail(413, str(exc))
            continue
        except ImageError as exc:
            upload.fail(422, str(exc))
            continue
        upload.pixels = width * height
        if upload.pixels > max_pixels:
            upload.fail(
                413,
                f"{upload.name}: {width}x{height} = {upload.pixels} pixels exceeds the limit "
                f"of {max_pixels}",
            )
            continue
        total += upload.pixels
    if total > max_request_pixels:
        raise ApiError(
            413,
            "too_many_pixels",
            f"the unseen images of this request have {total} pixels in all; at most "
            f"{max_request_pixels} per request (send fewer files per request)",
        )


def check_decodes(uploads: Sequence[Upload], max_pixels: int) -> None:
    """Decode pending uploads fully: a broken file gets 422 (used when nothing will extract)."""
    for upload in uploads:
        if upload.pending:
            try:
                upload.item().rgb(max_pixels=max_pixels)
            except ImageError as exc:
                upload.fail(422, str(exc))


def answer_body(uploads: Sequence[Upload]) -> tuple[int, dict[str, Any]]:
    """The HTTP status and body: 200 with every result if any file was answered, else the
    first file's status with ``{"error": "bad_image", "detail", "results"}``."""
    results = [u.answer for u in uploads if u.answer is not None]
    if any(u.status == 200 for u in uploads):
        return 200, {"results": results}
    first = uploads[0]
    detail = (first.answer or {}).get("error") or "bad image"
    return first.status, {"error": "bad_image", "detail": detail, "results": results}
