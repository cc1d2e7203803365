"""Upload triage without HTTP: sizes, keys, header-only pixel counts, one decode, answers."""

from __future__ import annotations

import hashlib
import io

import pytest
from PIL import Image

from featcache.predictor import ImageResult
from featcache.service.answers import Answer, AnswerCache
from featcache.service.errors import ApiError
from featcache.service.uploads import answer_body, check_decodes, check_pixels, triage
from service_fakes import png


def bomb(width: int = 12000, height: int = 10000) -> bytes:
    buf = io.BytesIO()
    Image.new("1", (width, height)).save(buf, "PNG")
    return buf.getvalue()


def test_triage_sizes_and_keys() -> None:
    good = png(1)
    uploads = triage([("a.png", good), ("big.png", b"x" * 2001), ("e.png", b"")], 2000)
    assert uploads[0].pending and uploads[0].key == hashlib.sha256(good).hexdigest()
    assert uploads[1].status == 413 and uploads[1].answer is not None
    assert uploads[1].answer["error"] == "big.png: larger than 2000 bytes"
    assert uploads[2].status == 422 and uploads[2].answer["error"] == "e.png: empty file"  # type: ignore[index]


def test_pixels_come_from_headers_and_are_bounded_per_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    one, two = png(1), png(2)
    decoded: list[str] = []
    original = Image.Image.load

    def counting_load(self: Image.Image) -> object:
        decoded.append(str(self.size))
        return original(self)

    monkeypatch.setattr(Image.Image, "load", counting_load)
    uploads = triage([("a.png", one), ("b.png", two), ("junk", b"junk")], 10**9)
    check_pixels(uploads, max_pixels=1000, max_request_pixels=1000)
    assert [u.pixels for u in uploads] == [256, 256, 0]
    assert uploads[2].status == 422 and "known format" in uploads[2].answer["error"]  # type: ignore[index]
    assert "(16, 16)" not in decoded  # sizes read from the headers: no image decoded
    with pytest.raises(ApiError, match="512 pixels in all; at most 300") as caught:
        check_pixels(triage([("a.png", one), ("b.png", two)], 10**9), 1000, 300)
    assert caught.value.status == 413 and caught.value.error == "too_many_pixels"


def test_an_image_over_the_pixel_limit_is_refused_before_decoding() -> None:
    uploads = triage([("bomb.png", bomb())], 10**9)
    check_pixels(uploads, max_pixels=50_000_000, max_request_pixels=10**12)
    assert uploads[0].status == 413 and "120000000 pixels" in uploads[0].answer["error"]  # type: ignore[index]


def test_check_decodes_tells_broken_from_good() -> None:
    truncated = png(3, 64)[:200]
    uploads = triage([("t.png", truncated), ("ok.png", png(4))], 10**9)
    check_pixels(uploads, 10**6, 10**6)
    assert uploads[0].pending  # the header is fine
    check_decodes(uploads, 10**6)
    assert uploads[0].status == 422 and "not a readable image" in uploads[0].answer["error"]  # type: ignore[index]
    assert uploads[1].pending


def test_answer_body_keeps_order_and_status() -> None:
    answer = Answer.build("k" * 64, {"name": "h", "version": 1}, [{"class_id": 0}])
    uploads = triage([("a.png", png(1)), ("e.png", b"")], 10**9)
    uploads[0].answered(answer)
    status, body = answer_body(uploads)
    assert status == 200 and [r["path"] for r in body["results"]] == ["a.png", "e.png"]
    assert body["results"][0]["cached"] is True and body["results"][0]["key"] == "k" * 64
    failed = triage([("x.png", b"x" * 5), ("e.png", b"")], 3)
    status, body = answer_body(failed)
    assert status == 413 and body["error"] == "bad_image" and len(body["results"]) == 2
    extracted = triage([("n.png", png(5))], 10**9)
    extracted[0].extracted(ImageResult("n.png", "k", error="n.png: broken"))
    assert answer_body(extracted)[0] == 422


def test_answer_cache_is_lru_by_key_and_digest() -> None:
    cache = AnswerCache(2)
    a, b, c = (Answer.build(k * 64, {"name": "h", "version": 1}, []) for k in "abc")
    cache.put(a, "d1")
    cache.put(b, "d1")
    assert cache.get("a" * 64, "d1") is a  # a is now the most recent
    assert cache.get("a" * 64, "d2") is None  # another head's bytes
    cache.put(c, "d1")
    assert cache.get("b" * 64, "d1") is None and len(cache) == 2
    off = AnswerCache(0)
    off.put(a, "d1")
    assert off.get("a" * 64, "d1") is None


@pytest.mark.parametrize("fmt", ["PNG", "GIF", "BMP", "TIFF", "JPEG", "WEBP"])
def test_cut_or_damaged_headers_are_a_422_not_a_crash(fmt: str) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(buf, fmt)
    data = buf.getvalue()
    variants = [data[:n] for n in range(1, min(len(data), 80))]
    variants += [data[:8] + bytes([b ^ 0xFF]) + data[9:] for b in data[8:9]]
    uploads = triage([(f"{i}.x", v) for i, v in enumerate(variants)], 10**9)
    check_pixels(uploads, max_pixels=10**6, max_request_pixels=10**9)
    for upload in uploads:
        assert upload.pending or upload.status in (413, 422), upload
        if upload.pending:  # the header was whole (a flipped bit may change the size)
            assert upload.pixels > 0
